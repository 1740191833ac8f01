"""The ``--out`` Parquet folder: atomic part files, and the paths already written (for ``--resume``).

The driver writes every part file: results are a few hundred bytes per image,
and a local ``--out`` then works on any cluster. A part is written under a
hidden name (``.tmp-*``, which Parquet readers skip) and renamed into place,
so a killed run leaves only whole files, each listing its paths exactly once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["OutputFolder", "WriteStats"]

PART_GLOB = "part-*.parquet"
TMP_PREFIX = ".tmp-"


@dataclass
class WriteStats:
    rows: int = 0
    errors: int = 0
    files: int = 0


class OutputFolder:
    """A local folder of ``part-*.parquet`` files sharing one schema."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def parts(self) -> list[Path]:
        return sorted(self.root.glob(PART_GLOB))

    def is_empty(self) -> bool:
        return not self.parts()

    def written_paths(self) -> set[str]:
        """Every ``path`` in the finished part files (leftover temp files of a killed run are removed)."""
        for leftover in self.root.glob(TMP_PREFIX + "*"):
            leftover.unlink(missing_ok=True)
        done: set[str] = set()
        for part in self.parts():
            done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        return done

    def read(self) -> pa.Table:
        """Every finished row, as one table (for tests and small outputs)."""
        tables = [pq.read_table(part) for part in self.parts()]
        return pa.concat_tables(tables) if tables else pa.table({})

    def write_stream(
        self,
        batches: Iterable[pa.Table],
        *,
        rows_per_file: int,
        seconds_per_file: float = 60.0,
        on_file: Callable[[WriteStats], None] | None = None,
    ) -> WriteStats:
        """Write ``batches`` as part files of about ``rows_per_file`` rows, at least one every ``seconds_per_file``.

        Flushing on time too bounds what a killed run has to redo.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        stats = WriteStats()
        pending: list[pa.Table] = []
        last = time.monotonic()
        for batch in batches:
            pending.append(batch)
            if sum(t.num_rows for t in pending) >= rows_per_file or time.monotonic() - last >= seconds_per_file:
                self._flush(pending, stats)
                last = time.monotonic()
                if on_file:
                    on_file(stats)
        if pending:
            self._flush(pending, stats)
        return stats

    def _flush(self, pending: list[pa.Table], stats: WriteStats) -> None:
        table = pa.concat_tables(pending)
        pending.clear()
        name = f"part-{uuid.uuid4().hex}.parquet"
        staging = self.root / f"{TMP_PREFIX}{name}"
        pq.write_table(table, staging)
        staging.replace(self.root / name)  # atomic on one filesystem: readers see a whole file or none
        stats.rows += table.num_rows
        stats.errors += table.num_rows - table.column("error").null_count
        stats.files += 1
