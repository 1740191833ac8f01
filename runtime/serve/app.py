"""The FastAPI application: ``create_app(detector, config)``.

Request path of one image::

    event loop: check media type -> stream the body (size cap, read timeout)
             -> admission (bounded queue, else 503)
    decode pool (threads): Detector.decode -> CHW tensor
    model thread (DynamicBatcher): stack with concurrent requests -> one model call
    event loop: Detector.results (softmax + decision) -> JSON

The event loop never decodes or runs the model, so ``/healthz`` keeps
answering while the model is busy or the queue is full.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..apikeys import ApiKeys
from ..detector import Detector
from ..errors import ImageError
from ..results import Failure
from ..session import ORT_ERRORS
from .accesslog import AccessLogMiddleware
from .auth import FailureLimiter, bearer_dependency
from .batcher import BatcherClosedError, DeadlineExceededError, DynamicBatcher
from .config import ServeConfig
from .evidence import EVIDENCE_QUERY, classify_with_evidence, evidence_answer, wants_evidence
from .limits import Admission, ServiceError, image_error
from .metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from .schemas import (
    AUTH_RESPONSES,
    BATCH_BODY,
    ERROR_RESPONSES,
    SINGLE_BODY,
    BatchItem,
    Classification,
    Health,
    ServiceInfo,
)
from .uploads import RAW_MEDIA_TYPES, media_type, read_parts, read_single
from .video import VIDEO_RESPONSES
from .video import classify_video as classify_video_upload

__all__ = ["create_app"]

log = logging.getLogger("deepfake_edge.serve")

STATIC_DIR = Path(__file__).with_name("static")
# The page loads nothing from elsewhere; the CSP makes the browser enforce it.
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _model_name(detector: Detector) -> str | None:
    model = detector.bundle.manifest.source.get("model")
    if not isinstance(model, str):
        return None
    # An export from a local checkpoint records its path; clients need its name, not our filesystem.
    return os.path.basename(model.rstrip("/\\")) if os.path.isabs(model) else model


class _Service:
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
        """Decode in the pool, run in a batch; raises ImageError or ServiceError."""
        if self.batcher is None or self.pool is None:  # set by start(); _require_ready has refused before
            raise ServiceError(503, "not_ready", f"{source}: the service is not started",
                               retry_after=self.config.retry_after_s)
        started = time.perf_counter()
        if evidence:
            return await self._classify_with_evidence(self.pool, data, source, started)
        try:
            decode = functools.partial(self.detector.decode, data, name=source)
            tensor = await asyncio.get_running_loop().run_in_executor(self.pool, decode)
        except ImageError as exc:
            self.metrics.images.labels(image_error(exc).code).inc()
            raise
        try:
            logits = await self.batcher.submit(tensor, deadline=deadline)
        except BatcherClosedError as exc:
            raise ServiceError(503, "not_ready", f"{source}: the service is shutting down",
                               retry_after=self.config.retry_after_s) from exc
        except DeadlineExceededError:
            raise  # a TimeoutError: _within_deadline turns it into 504
        except ORT_ERRORS as exc:
            self.metrics.images.labels("model_error").inc()
            raise ServiceError(500, "model_error", f"{source}: the model failed ({type(exc).__name__}: {exc})") from exc
        result = self.detector.results([source], logits[None])[0]
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
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def _classify_with_evidence(self, pool: ThreadPoolExecutor, data: bytes, source: str,
                                      started: float) -> dict[str, Any]:
        run = functools.partial(classify_with_evidence, self.detector, data, source)
        try:
            result = await asyncio.get_running_loop().run_in_executor(pool, run)
        except ImageError as exc:
            self.metrics.images.labels(image_error(exc).code).inc()
            raise
        except ORT_ERRORS as exc:
            self.metrics.images.labels("model_error").inc()
            raise ServiceError(500, "model_error", f"{source}: the model failed ({type(exc).__name__}: {exc})") from exc
        if isinstance(result, Failure):
            self.metrics.images.labels("model_error").inc()
            raise ServiceError(500, "model_error", str(result.error))
        self.metrics.images.labels("ok").inc()
        return {"label": result.label, "scores": result.scores, "variant": self.detector.variant_name,
                "model": self.model_name, "evidence": evidence_answer(result),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

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


def create_app(detector: Detector, config: ServeConfig | None = None, *, api_keys: ApiKeys | None) -> FastAPI:
    """A FastAPI app serving ``detector``; the model worker starts with the app's lifespan.

    ``api_keys`` (required, so turning authentication off is a visible choice):
    every endpoint that classifies or reports state then needs one of them as
    ``Authorization: Bearer <key>``; ``None`` serves without authentication.
    ``/healthz``, ``/readyz``, the page ``/`` and the API docs stay open.

    Each app has its own metrics registry, queue and worker threads, so several
    can live in one process (as in the tests). Run it with
    :func:`deepfake_edge.serve.server.serve` or any ASGI server.
    """
    service = _Service(detector, config or ServeConfig())
    guard = [] if api_keys is None else [Depends(bearer_dependency(
        api_keys, FailureLimiter(service.config.auth_failures, service.config.auth_window_s), service.metrics,
    ))]
    auth_refusals = AUTH_RESPONSES if guard else {}
    refusals = {**ERROR_RESPONSES, **auth_refusals}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    # Appliances have no internet: /docs and /redoc load their assets from this server.
    app = FastAPIOffline(
        title="deepfake-edge",
        version=__version__,
        description=(
            "Classify images as fake or real with a deepfake-edge bundle on CPU. "
            "Concurrent requests are batched into shared model calls. "
            "Errors are JSON: `{\"error\": code, \"message\": ...}`. "
            "Unless the service runs with `--no-auth`, the endpoints marked with a lock need an API key "
            "as `Authorization: Bearer <key>` (*Authorize* above)."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(AccessLogMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    @app.exception_handler(ServiceError)  # raised by the key check, before an endpoint runs
    async def refused(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.post("/v1/classify", response_model=Classification, responses=refusals,
              openapi_extra={**SINGLE_BODY, **EVIDENCE_QUERY}, summary="Classify one image", tags=["classify"],
              dependencies=guard)
    async def classify(request: Request) -> Response:
        """Send the image as the raw body (`Content-Type: image/...`) or as one multipart file part."""
        return await service.answer("classify", service.classify, request)

    @app.post("/v1/classify/batch", response_model=list[BatchItem], responses=refusals,
              openapi_extra={**BATCH_BODY, **EVIDENCE_QUERY}, summary="Classify several images", tags=["classify"],
              dependencies=guard)
    async def classify_batch(request: Request) -> Response:
        """One multipart request with several file parts; the answer lists one item per part, in order.

        A bad image gets an item with `error`, `type` and `message`; the others are still classified.
        """
        return await service.answer("batch", service.classify_batch, request)

    @app.post("/v1/classify/video", responses=VIDEO_RESPONSES, summary="Classify a video clip", tags=["classify"],
              dependencies=guard)
    async def classify_video(request: Request) -> Response:
        """Send the clip as the raw body (`Content-Type: video/...`) or as one multipart file part. Query:
        `fps` (sampled frames per second of video, default 1), `aggregate` (`mean` or `confident`).
        The answer has the clip's `summary` and its `frames`, as `deepfake-edge scan` prints them, and
        `capped` (true when only its first `max_video_seconds` were scanned). The clip is decoded in a
        child process with a memory limit: a crash or a bomb is a 500 for this request only."""
        return await service.answer("video", functools.partial(classify_video_upload, service), request)

    @app.get("/v1/info", response_model=ServiceInfo, summary="Model, labels and limits", tags=["service"],
             responses=auth_refusals, dependencies=guard)
    async def info() -> dict[str, Any]:
        return service.info()

    @app.get("/healthz", response_model=Health, summary="Liveness", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}},
             summary="Readiness: model loaded and warmed up", tags=["service"])
    async def readyz() -> JSONResponse:
        ready = service.state == "ready" and service.batcher is not None and service.batcher.alive
        return JSONResponse({"status": service.state if not ready else "ready"}, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", tags=["service"],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **auth_refusals}, dependencies=guard)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": _PAGE_CSP})

    return app
