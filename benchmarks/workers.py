"""The orchestrator's side of ``engine_worker``: spawn one engine process, send requests, read replies."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["EngineSpec", "WorkerError", "WorkerProcess"]

WORKER_SCRIPT = Path(__file__).with_name("engine_worker.py")


@dataclass(frozen=True)
class EngineSpec:
    """One row group of the results: an engine running one variant."""

    engine: str  # key of engines.ENGINES
    variant: str
    label: str
    model_file: str

    @property
    def key(self) -> str:
        return f"{self.engine}/{self.variant}"


class WorkerError(RuntimeError):
    """An engine process died or stopped answering; the message says why (from its log)."""


def _last_error_line(log: Path) -> str:
    """The exception line of a traceback at the end of ``log`` (or its last line)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
    except OSError:
        return f"no log at {log}"
    if not lines:
        return "exited without output"
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~", "Traceback", "During handling", "The above exception")):
            return line
    return lines[-1]


class WorkerProcess:
    """A running ``engine_worker``; its stderr goes to ``log``.

    The environment pins OpenMP/MKL thread pools to the same count as the
    engines' own thread settings, so no library quietly uses more cores.
    """

    def __init__(self, spec: EngineSpec, proc: subprocess.Popen[bytes], log: Path, log_file: IO[bytes]) -> None:
        self.spec = spec
        self.proc = proc
        self.log = log
        self._log_file = log_file
        self.ready: dict[str, Any] = {}

    @classmethod
    def start(
        cls, spec: EngineSpec, *, checkpoint: str, bundle: Path, threads: int, jpeg: Path, pixel_values: Path,
        log: Path, timeout: float,
    ) -> WorkerProcess:
        """Spawn the worker and wait for its first prediction (the cold start)."""
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TOKENIZERS_PARALLELISM="false")
        command = [
            sys.executable, str(WORKER_SCRIPT),
            "--engine", spec.engine, "--variant", spec.variant, "--checkpoint", checkpoint, "--bundle", str(bundle),
            "--threads", str(threads), "--jpeg", str(jpeg), "--pixel-values", str(pixel_values),
        ]
        log.parent.mkdir(parents=True, exist_ok=True)
        log_file = log.open("wb")
        spawn_time = time.time()
        proc = subprocess.Popen([*command, "--spawn-time", repr(spawn_time)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log_file, env=env)
        worker = cls(spec, proc, log, log_file)
        try:
            worker.ready = worker._read(timeout)
        except WorkerError:
            worker.close()
            raise
        return worker

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            raise WorkerError(f"{self.spec.key}: no answer within {timeout:.0f} s (log: {self.log})")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=30)
            raise WorkerError(f"{self.spec.key}: exited with code {code}: {_last_error_line(self.log)}")
        return json.loads(line)

    def request(self, op: str, *, runs: int, timeout: float, batch: int | None = None) -> dict[str, Any]:
        """Run ``op`` ``runs`` times in the worker; returns ``{"times_s": [...], "peak_rss_mb": ...}``."""
        assert self.proc.stdin is not None
        message: dict[str, Any] = {"op": op, "runs": runs}
        if batch is not None:
            message["batch"] = batch
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            code = self.proc.wait(timeout=30)
            raise WorkerError(f"{self.spec.key}: exited with code {code}: {_last_error_line(self.log)}") from None
        return self._read(timeout)

    def close(self, timeout: float = 30) -> None:
        """Ask the worker to exit (killing it if it does not) and release its pipes and log."""
        if self.proc.poll() is None and self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.write(b'{"op": "exit"}\n')
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass  # it is already gone; wait() below collects it
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):  # flushing to a dead worker: nothing left to deliver
                    stream.close()
        self._log_file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
