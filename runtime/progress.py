"""Progress on stderr: tqdm when installed, otherwise a small line-based counter.

tqdm is not a base dependency (the runtime stays numpy + Pillow + onnxruntime),
so appliances without it still get a readable, low-noise progress line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None, desc: str, enabled: bool = True) -> Iterator[T]:
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _plain(items, total=total, desc=desc)
        return
    yield from tqdm(items, total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


def _plain(items: Iterable[T], *, total: int | None, desc: str, every: float = 2.0) -> Iterator[T]:
    start = last = time.perf_counter()
    count = 0
    for item in items:
        yield item
        count += 1
        now = time.perf_counter()
        if now - last >= every:
            last = now
            of = f"/{total}" if total else ""
            print(f"{desc}: {count}{of} ({count / (now - start):.1f} img/s)", file=sys.stderr, flush=True)
    if count:
        print(f"{desc}: {count} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
