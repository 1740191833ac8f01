"""Dynamic batching: concurrent requests share one model call, run off the event loop.

Requests (already decoded to CHW tensors) are put on a queue from the asyncio
event loop; one worker thread takes the first waiting image, then keeps taking
more until it has ``max_batch`` of them or ``max_wait`` has passed since the
first one arrived, stacks them and calls the model once. Results go back to
each request's future through ``loop.call_soon_threadsafe``.

The worker thread is the only caller of the model, so a batch can never be
interleaved with another one and onnxruntime keeps all its intra-op threads.
Nothing here imports FastAPI; the batcher is plain asyncio + threading.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..session import ORT_ERRORS

__all__ = ["BatcherClosedError", "DeadlineExceededError", "DynamicBatcher"]

RunBatch = Callable[[np.ndarray], np.ndarray]
OnBatch = Callable[[int, float], None]

# What a model call may raise on bad data or exhaustion: forwarded to the waiting
# requests. Anything else is a bug: it stops the worker, which then fails every
# waiting request (see DynamicBatcher._work) instead of leaving them hanging.
_MODEL_FAILURES: tuple[type[BaseException], ...] = ORT_ERRORS + (MemoryError,)


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down (or its worker died) and takes no new work."""


class DeadlineExceededError(TimeoutError):
    """The request's deadline passed before its batch reached the model; it was skipped."""


@dataclass
class _Job:
    tensor: np.ndarray
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic()


_STOP = object()  # sentinel: everything queued before it is still processed


def _post(job: _Job, result: np.ndarray | None, error: BaseException | None) -> None:
    """Hand a result to the job's event loop (from the worker thread)."""
    with contextlib.suppress(RuntimeError):  # that event loop is closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def _settle(future: asyncio.Future[np.ndarray], result: np.ndarray | None, error: BaseException | None) -> None:
    # Runs on the event loop. A request that timed out has cancelled its future.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class DynamicBatcher:
    """Groups single-image requests into batched model calls on one worker thread.

    ``run`` maps an NCHW float32 batch to one row of logits per image (for
    example ``Detector.logits``). ``on_batch(size, seconds)`` is called after
    each model call, for metrics. The caller bounds the queue (admission
    control); the batcher itself never refuses work until ``close()``.
    """

    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: OnBatch | None = None,
        name: str = "deepfake-edge-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._run = run
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: queue.Queue[_Job | object] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # -- event-loop side ---------------------------------------------------
    @property
    def depth(self) -> int:
        """Images waiting for a model call (not counting the batch being run)."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        """False once closed or if the worker thread died."""
        return not self._closed and self._thread.is_alive()

    async def submit(self, tensor: np.ndarray, *, deadline: float) -> np.ndarray:
        """Queue one CHW tensor; return its logits row once its batch has run.

        ``deadline`` (``time.monotonic()``) lets the worker skip a request whose
        caller has already given up, so a backlog does not waste model time.
        """
        if not self.alive:
            raise BatcherClosedError("the model worker is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.put(_Job(tensor, future, loop, deadline))
        return await future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish everything already queued, and join the worker.

        Blocking: call it from a thread (``asyncio.to_thread``) when the event
        loop must keep delivering the drained results.
        """
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- worker side -----------------------------------------------------------
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus whatever arrives within the wait window; True if STOP was seen."""
        batch = [first]
        until = time.monotonic() + self._max_wait_s
        while len(batch) < self._max_batch:
            try:
                # Take what is already queued without waiting, then wait out the window.
                if self._max_wait_s:
                    item = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _execute(self, batch: list[_Job]) -> None:
        now = time.monotonic()
        live = [job for job in batch if job.deadline > now]
        for job in batch:
            if job.deadline <= now:
                _post(job, None, DeadlineExceededError("deadline passed in the queue"))
        if not live:
            return
        started = time.perf_counter()
        try:
            logits = self._run(np.stack([job.tensor for job in live]))
        except _MODEL_FAILURES as exc:
            for job in live:
                _post(job, None, exc)
            return
        finally:
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - started)
        for job, row in zip(live, logits, strict=True):
            _post(job, row, None)

    def _work(self) -> None:
        stop = False
        batch: list[_Job] = []
        try:
            while not stop:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch, stop = self._collect(item)  # type: ignore[arg-type]
                self._execute(batch)
                batch = []
        finally:
            # Normal exit after STOP leaves nothing behind. If a bug killed the
            # loop, fail the batch in hand and everything queued, so no request
            # waits forever; the exception itself still reaches
            # threading.excepthook (and the log).
            self._closed = True
            error = BatcherClosedError("the model worker stopped")
            for job in batch:
                _post(job, None, error)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Job):
                    _post(item, None, error)
