"""One ``deepfake-edge batch`` run: resolve the inputs, skip those already written, classify, write."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..credentials import Source
from ..images import DEFAULT_MAX_PIXELS
from .classify import DEFAULT_BATCH_SIZE, classify_dataset, default_actors
from .output import OutputFolder, WriteStats
from .sources import resolve_sources

__all__ = ["DEFAULT_ROWS_PER_FILE", "JobSummary", "run_job"]

DEFAULT_ROWS_PER_FILE = 10_000
_TARGET_BLOCKS = 200  # enough blocks to keep every actor busy, few enough to schedule cheaply


@dataclass(frozen=True)
class JobSummary:
    inputs: int
    skipped: int
    rows: int
    errors: int
    files: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self, out: str | os.PathLike[str]) -> str:
        skipped = f", {self.skipped} skipped as already written" if self.skipped else ""
        return (f"{self.rows} rows written to {out} ({self.errors} errors{skipped}) in {self.seconds:.1f} s, "
                f"{self.images_per_second:.2f} images/s")


def run_job(
    bundle: str | os.PathLike[str],
    sources: Sequence[str],
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    address: str | None = None,
    variant: str | None = None,
    threshold: float | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    fast_decode: bool = False,
    log: Callable[[str], None] = print,
) -> JobSummary:
    """Classify every input named by ``sources`` into Parquet part files in ``out``.

    Without ``resume``, ``out`` must hold no part files yet (``FileExistsError``):
    a second run never duplicates or silently replaces rows. With ``resume``,
    inputs whose path is already in ``out`` are skipped (an anti-join on ``path``, which holds
    each input's masked name).
    """
    import ray

    folder = OutputFolder(out)
    if not resume and not folder.is_empty():
        raise FileExistsError(f"{out}: already holds results; pass --resume to add the missing rows, "
                              "or choose an empty folder")
    paths = resolve_sources(sources)
    done = folder.written_paths() if resume else set()
    todo = [p for p in paths if Source.of(p).name not in done]  # rows hold masked names
    skipped = len(paths) - len(todo)
    if skipped:
        log(f"resuming: {skipped} of {len(paths)} inputs already written, {len(todo)} to go")
    start = time.perf_counter()
    stats = WriteStats()
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        # The input is an in-memory list of paths (no read tasks), so the actors may take every CPU.
        # More actors than batches would only load the model to idle (and Ray warns).
        actors = min(actors or default_actors(cpus_per_actor, spare_cpus=0), math.ceil(len(todo) / batch_size))
        rows = max(batch_size, math.ceil(len(todo) / _TARGET_BLOCKS / batch_size) * batch_size)
        ds = ray.data.from_arrow([pa.table({"path": todo[i:i + rows]}) for i in range(0, len(todo), rows)])
        results = classify_dataset(ds, Path(bundle), variant=variant, threshold=threshold, actors=actors,
                                   cpus_per_actor=cpus_per_actor, batch_size=batch_size, max_pixels=max_pixels,
                                   fast_decode=fast_decode)
        stats = folder.write_stream(results.iter_batches(batch_size=None, batch_format="pyarrow"),
                                    rows_per_file=rows_per_file)
    return JobSummary(inputs=len(paths), skipped=skipped, rows=stats.rows, errors=stats.errors,
                      files=stats.files, seconds=time.perf_counter() - start)
