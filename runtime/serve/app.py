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

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..apikeys import ApiKeys
from ..detector import Detector
from .accesslog import AccessLogMiddleware
from .auth import FailureLimiter, bearer_dependency
from .config import ServeConfig
from .evidence import EVIDENCE_QUERY
from .limits import ServiceError
from .metrics import CONTENT_TYPE_LATEST
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
from .service import Service
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
    service = Service(detector, config or ServeConfig())
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

    @app.post("/v1/classify/video", responses={**VIDEO_RESPONSES, **auth_refusals}, summary="Classify a video clip",
              tags=["classify"], dependencies=guard)
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
