"""Progress of a benchmark run on stderr: a tqdm bar over steps when installed, plain lines otherwise.

A full run takes minutes, so the user sees which phase, round and engine is
running, and log lines (export steps, engine failures) are printed above the bar.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["StepProgress"]


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
