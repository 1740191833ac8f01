"""``POST /v1/classify/video``: an uploaded clip, spooled to a temporary file, scanned as ``deepfake-edge scan`` does.

Same limits as image uploads (body size, media type ``video/*``, read timeout, per-request
timeout, admission), and more, since a video is hostile input that FFmpeg decodes:

- a clip declaring frames over the pixel limit is refused before decoding (413);
- at most ``max_video_seconds`` of it are scanned (the answer says ``"capped": true``);
- it is decoded in a child process with ``video_memory_mb`` of address space (see
  ``video.decoding``), so a decoder crash (500 ``decoder_crashed``), a bomb (500
  ``decoder_out_of_memory``) or a hang (504) fails this request alone.

The temporary file is removed when the scan thread ends, whatever happened: a refusal, a
timeout (the decoding child is killed at once), or an answer.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request

from ..errors import (
    DeepfakeEdgeError,
    ExtraNotInstalledError,
    ImageTooLargeError,
    ModelOutputError,
    VideoDecoderCrashError,
    VideoDecoderMemoryError,
    VideoTimeoutError,
)
from ..extras import require_extra
from .limits import ServiceError
from .schemas import ERROR_RESPONSES, ErrorBody
from .uploads import spool_single

if TYPE_CHECKING:
    from ..video import ScanItem, ScanOptions
    from .service import Service

__all__ = ["VIDEO_RESPONSES", "classify_video"]

MAX_FPS = 30.0

# How a clip that cannot be scanned is answered: (error class, status, code), first match; else 400 invalid_video.
_FAILURES: tuple[tuple[type[DeepfakeEdgeError], int, str], ...] = (
    (ImageTooLargeError, 413, "image_too_large"),
    (VideoDecoderCrashError, 500, "decoder_crashed"),
    (VideoDecoderMemoryError, 500, "decoder_out_of_memory"),
    (ModelOutputError, 500, "model_error"),
    (VideoTimeoutError, 504, "decode_timeout"),
)
VIDEO_RESPONSES = {**ERROR_RESPONSES, 500: {"model": ErrorBody, "description": (
    "The clip's decoding process crashed (decoder_crashed) or went over its memory limit "
    "(decoder_out_of_memory); the service goes on.")}}


def _options(request: Request, service: Service) -> ScanOptions:
    from ..video import AGGREGATES, Sampling, ScanOptions
    from ..video.decoding import Isolation

    query = request.query_params
    try:
        fps = float(query.get("fps", "1"))
    except ValueError:
        fps = math.nan
    if not 0 < fps <= MAX_FPS:
        raise ServiceError(400, "bad_request", f"fps must be a number in (0, {MAX_FPS:g}], got {query.get('fps')!r}")
    method = query.get("aggregate", "mean")
    if method not in AGGREGATES:
        raise ServiceError(400, "bad_request", f"aggregate must be one of {sorted(AGGREGATES)}, got {method!r}")
    config = service.config
    # The request deadline bounds the child too: it is killed when the request gives up.
    isolation = Isolation(memory_mb=config.video_memory_mb, stall_s=config.timeout_s)
    return ScanOptions(Sampling(fps=fps, duration=config.max_video_seconds), aggregate=method, isolation=isolation)


def _scan_file(service: Service, path: Path, options: ScanOptions, cancel: threading.Event) -> list[ScanItem]:
    from ..video import scan
    from ..video.decoding import prepare

    try:
        prepare()  # once per process: starts the forkserver the decoding children come from
        items = scan(service.detector, str(path), options, stop=cancel)
        collected: list[ScanItem] = []
        try:
            for item in items:
                if cancel.is_set():
                    break
                collected.append(item)
        finally:
            items.close()
        return collected
    finally:
        path.unlink(missing_ok=True)


def _failure(error: DeepfakeEdgeError, named: str, source: str) -> ServiceError:
    status, code = next(((status, code) for kind, status, code in _FAILURES if isinstance(error, kind)),
                        (400, "invalid_video"))
    return ServiceError(status, code, str(error).replace(named, source), kind=type(error).__name__)


async def classify_video(service: Service, request: Request) -> dict[str, Any]:
    """Summary and frames of one uploaded clip; a clip that cannot be read is a 400 (see ``_FAILURES``)."""
    from ..video import FrameResult, VideoError, VideoSummary

    service._require_ready()
    try:
        require_extra("video")
    except ExtraNotInstalledError as exc:
        raise ServiceError(501, "not_installed", str(exc)) from exc
    options = _options(request, service)
    source, path = await spool_single(request, service.config, raw_prefix="video", what="video clip")
    cancel = threading.Event()
    with service._admitted(1):
        work = asyncio.ensure_future(asyncio.to_thread(_scan_file, service, path, options, cancel))
        try:
            items = await service._within_deadline(asyncio.shield(work))
        finally:
            cancel.set()  # on a timeout the scan stops now: the decoding child is killed, the file removed
    frames = [{**item.to_dict(), "source": source} for item in items if isinstance(item, FrameResult)]
    last = items[-1] if items else None
    if isinstance(last, VideoError):
        raise _failure(last.error, str(path), source)
    assert isinstance(last, VideoSummary)
    return {"summary": {**last.to_dict(), "source": source}, "frames": frames,
            "variant": service.detector.variant_name, "model": service.model_name,
            "capped": last.capped, "max_video_seconds": service.config.max_video_seconds}
