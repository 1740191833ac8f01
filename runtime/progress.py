"""Progress on stderr: tqdm when installed, otherwise plain low-noise lines.

tqdm is not a base dependency (the runtime stays numpy + Pillow + onnxruntime),
so appliances without it still get readable progress. Two shapes: an iterator
over inputs (:func:`progress`) and named steps of a long run (:class:`StepProgress`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


__all__ = ["StepProgress", "progress"]


def progress(
    items: Iterable[T], *, total: int | None, desc: str, enabled: bool = True, unit: str = "img"
) -> Iterator[T]:
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _plain(items, total=total, desc=desc, unit=unit)
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


def _plain(items: Iterable[T], *, total: int | None, desc: str, unit: str, every: float = 2.0) -> Iterator[T]:
    start = last = time.perf_counter()
    count = 0
    for item in items:
        yield item
        count += 1
        now = time.perf_counter()
        if now - last >= every:
            last = now
            of = f"/{total}" if total else ""
            print(f"{desc}: {count}{of} ({count / (now - start):.1f} {unit}/s)", file=sys.stderr, flush=True)
    if count:
        print(f"{desc}: {count} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


class StepProgress:
    """``with StepProgress(total) as p: p.step("round 1/5: torch/fp32")``; ``p.log(msg)`` prints a line."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass  # plain lines instead of a bar
            else:
                self._bar = tqdm(
                    total=total, unit="step", file=sys.stderr, dynamic_ncols=True,
                    bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]",
                )

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()

    def describe(self, what: str) -> None:
        """Say what is running now, without counting a step."""
        if self._bar is not None:
            self._bar.set_description_str(what)
        elif self.enabled:
            elapsed = time.perf_counter() - self.start
            print(f"[{self.done}/{self.total} {elapsed:5.0f} s] {what}", file=sys.stderr, flush=True)

    def step(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)
