"""The service behind the HTTP app: lifecycle (warm-up, readiness), admission, deadlines and the
classify paths. ``create_app`` (``app``) wires it to FastAPI routes; ``video`` uses it for uploads."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from .. import __version__
from ..detector import Detector
from ..errors import ImageError
from ..results import Failure
from ..session import ORT_ERRORS
from .batcher import BatcherClosedError, DeadlineExceededError, DynamicBatcher
from .config import ServeConfig
from .evidence import classify_with_evidence, evidence_answer, wants_evidence
from .limits import Admission, ServiceError, image_error
from .metrics import ServiceMetrics
from .uploads import RAW_MEDIA_TYPES, media_type, read_parts, read_single

__all__ = ["Service"]

log = logging.getLogger("deepfake_edge.serve")


def _model_name(detector: Detector) -> str | None:
    model = detector.bundle.manifest.source.get("model")
    if not isinstance(model, str):
        return None
    # An export from a local checkpoint records its path; clients need its name, not our filesystem.
    return os.path.basename(model.rstrip("/\\")) if os.path.isabs(model) else model


class Service:
    """State and request handling of one app instance."""

    def __init__(self, detector: Detector, config: ServeConfig) -> None:
        self.detector = detector
        self.config = config
        self.model_name = _model_name(detector)
        self.admission = Admission(config.max_queue)
        self.batcher: DynamicBatcher | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.state = "starting"  # -> ready | failed -> shutting_down
        self._warm_task: asyncio.Task[None] | None = None
        self.metrics = ServiceMetrics(
            queue_depth=lambda: self.batcher.depth if self.batcher is not None else 0,
            in_flight=lambda: self.admission.in_flight,
        )
        self.metrics.model_info.info({
            "model": self.model_name or "", "variant": detector.variant_name, "version": __version__,
            "labels": ",".join(detector.labels),
        })

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=self.config.decode_workers,
                                       thread_name_prefix="deepfake-edge-decode")
        self.batcher = DynamicBatcher(
            self.detector.logits, max_batch=self.config.max_batch, max_wait_s=self.config.max_wait_ms / 1000,
            on_batch=self.metrics.observe_batch,
        )
        # Warm up in the background: the server answers /healthz at once and
        # /readyz turns 200 when the first (slow) model calls are done.
        self._warm_task = asyncio.create_task(self._warm_up())

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._warm_up_model)
        except ORT_ERRORS as exc:
            self.state = "failed"
            log.error("warm-up failed: %s", exc, extra={"fields": {"event": "warmup_failed", "error": str(exc)}})
            return
        if self.state == "starting":
            self.state = "ready"
        log.info("ready", extra={"fields": {
            "event": "ready", "variant": self.detector.variant_name, "model": self.model_name,
            "warmup_ms": round((time.perf_counter() - started) * 1000, 1),
        }})

    def _warm_up_model(self) -> None:
        # One batch-1 run: onnxruntime plans memory on first use. Larger batches are planned by the first
        # request that forms one; warming them here too held /readyz (and the first answer) back by
        # max_batch model runs, 3.7 s of a 5 s start on the base-512 model.
        cfg = self.detector.bundle.preprocess
        self.detector.logits(np.zeros((1, 3, cfg.height, cfg.width), np.float32))

    async def stop(self) -> None:
        self.state = "shutting_down"
        if self._warm_task is not None and not self._warm_task.done():
            await self._warm_task
        # uvicorn has already let in-flight requests finish; this drains anything
        # left in the queue while the event loop keeps delivering results.
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)
        if self.pool is not None:
            await asyncio.to_thread(self.pool.shutdown, True)
        log.info("stopped", extra={"fields": {"event": "stopped"}})

    # -- helpers ---------------------------------------------------------------
    def _require_ready(self) -> None:
        if self.state != "ready" or self.batcher is None or not self.batcher.alive:
            state = "shutting_down" if self.state == "ready" else self.state
            raise ServiceError(503, "not_ready", f"the service is {state.replace('_', ' ')}",
                               retry_after=self.config.retry_after_s)

    @contextmanager
    def _admitted(self, n: int) -> Iterator[None]:
        if not self.admission.try_acquire(n):
            raise ServiceError(
                503, "queue_full",
                f"the queue is full ({self.admission.in_flight} of {self.admission.capacity} images in flight); "
                "retry later",
                retry_after=self.config.retry_after_s,
            )
        try:
            yield
        finally:
            self.admission.release(n)

    async def _within_deadline(self, work: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(work, self.config.timeout_s)
        except (asyncio.TimeoutError, TimeoutError) as exc:  # distinct types before Python 3.11
            raise ServiceError(504, "timeout",
                               f"no answer within the per-request timeout of {self.config.timeout_s:g} s") from exc

    async def _classify_image(self, data: bytes, source: str, deadline: float, evidence: bool = False
                              ) -> dict[str, Any]:
        """Decode in the pool, run in a batch (alone, with its map, when ``evidence``); raises ImageError or
        ServiceError."""
        if self.batcher is None or self.pool is None:  # set by start(); _require_ready has refused before
            raise ServiceError(503, "not_ready", f"{source}: the service is not started",
                               retry_after=self.config.retry_after_s)
        started, loop = time.perf_counter(), asyncio.get_running_loop()
        try:
            if evidence:  # the batcher fetches logits only
                run = functools.partial(classify_with_evidence, self.detector, data, source)
                result = await loop.run_in_executor(self.pool, run)
            else:
                tensor = await loop.run_in_executor(self.pool, functools.partial(self.detector.decode, data,
                                                                                 name=source))
                logits = await self.batcher.submit(tensor, deadline=deadline)
                result = self.detector.results([source], logits[None])[0]
        except ImageError as exc:
            self.metrics.images.labels(image_error(exc).code).inc()
            raise
        except BatcherClosedError as exc:
            raise ServiceError(503, "not_ready", f"{source}: the service is shutting down",
                               retry_after=self.config.retry_after_s) from exc
        except DeadlineExceededError:
            raise  # a TimeoutError: _within_deadline turns it into 504
        except ORT_ERRORS as exc:
            self.metrics.images.labels("model_error").inc()
            raise ServiceError(500, "model_error", f"{source}: the model failed ({type(exc).__name__}: {exc})") from exc
        if isinstance(result, Failure):
            self.metrics.images.labels("model_error").inc()
            raise ServiceError(500, "model_error", str(result.error))
        self.metrics.images.labels("ok").inc()
        return {
            "label": result.label,
            "scores": result.scores,
            **({"score": result.score} if result.score is not None else {}),
            "variant": self.detector.variant_name,
            "model": self.model_name,
            **({"evidence": evidence_answer(result)} if evidence else {}),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    # -- endpoints ---------------------------------------------------------------
    async def answer(self, endpoint: str, handler: Callable[[Request], Awaitable[Any]], request: Request) -> Response:
        """Run ``handler``; turn refusals into JSON errors and count every outcome."""
        started = time.perf_counter()
        outcome = "internal_error"
        try:
            payload = await handler(request)
            outcome = "ok"
            return JSONResponse(payload)
        except ServiceError as exc:
            outcome = exc.code
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())
        except ClientDisconnect:
            # Nobody is left to read an answer; the status only shows in the access log.
            outcome = "client_disconnected"
            return Response(status_code=499)
        finally:
            self.metrics.requests.labels(endpoint, outcome).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    async def classify(self, request: Request) -> dict[str, Any]:
        self._require_ready()
        evidence = wants_evidence(request, self.detector)
        source, data = await read_single(request, self.config, raw_prefix="image", what="image",
                                         hint="; use /v1/classify/batch for several images")
        with self._admitted(1):
            try:
                result: dict[str, Any] = await self._within_deadline(
                    self._classify_image(data, source, time.monotonic() + self.config.timeout_s, evidence)
                )
            except ImageError as exc:
                raise image_error(exc) from exc
            return result

    async def classify_batch(self, request: Request) -> list[dict[str, Any]]:
        self._require_ready()
        evidence = wants_evidence(request, self.detector)
        media = media_type(request)
        if media != "multipart/form-data":
            raise ServiceError(415, "unsupported_media_type",
                               f"Content-Type {media or '(none)'!r} is not accepted; send the images as "
                               "multipart/form-data file parts")
        parts = await read_parts(request, self.config)
        if not parts:
            raise ServiceError(400, "bad_request",
                               "no file parts: send each image as a multipart file part named 'files'")
        if len(parts) > self.config.max_batch_items:
            raise ServiceError(413, "too_many_images",
                               f"{len(parts)} images in one request; "
                               f"at most {self.config.max_batch_items} are accepted")
        deadline = time.monotonic() + self.config.timeout_s

        async def one(source: str, data: bytes) -> dict[str, Any]:
            # Per-image problems become that item's error; the others still get answers.
            try:
                return {"source": source, **await self._classify_image(data, source, deadline, evidence)}
            except ImageError as exc:
                return {"source": source, **image_error(exc).body()}
            except ServiceError as exc:
                return {"source": source, **exc.body()}

        with self._admitted(len(parts)):
            results: list[dict[str, Any]] = await self._within_deadline(
                asyncio.gather(*(one(source, data) for source, data in parts))
            )
            return results

    def info(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "model": self.model_name,
            "variant": self.detector.variant_name,
            "labels": list(self.detector.labels),
            "positive_label": self.detector.positive_label,
            "score": self.detector.rule.text if self.detector.rule is not None else None,
            "threshold": self.detector.threshold,
            "evidence": self.detector.has_evidence,
            "accepted_media_types": [*RAW_MEDIA_TYPES, "multipart/form-data"],
            "limits": {
                "max_body_bytes": cfg.max_body_bytes, "max_batch_items": cfg.max_batch_items,
                "max_pixels": self.detector.max_pixels or 0, "timeout_s": cfg.timeout_s,
                "read_timeout_s": cfg.read_timeout_s, "max_queue": cfg.max_queue, "max_batch": cfg.max_batch,
                "max_wait_ms": cfg.max_wait_ms, "max_video_seconds": cfg.max_video_seconds,
                "video_memory_mb": cfg.video_memory_mb,
            },
        }
