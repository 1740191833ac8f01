"""``POST /v1/classify/video``: an uploaded clip, spooled to a temporary file, scanned as ``deepfake-edge scan`` does.

Same limits as image uploads (body size, media type ``video/*``, read timeout, per-request
timeout, admission). The temporary file is removed when the scan thread ends, whatever
happened: a refusal, a timeout (the scan stops at the next frame), or an answer.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request

from ..errors import ExtraNotInstalledError, ImageTooLargeError
from ..extras import require_extra
from .limits import ServiceError
from .uploads import spool_single

if TYPE_CHECKING:
    from ..video import ScanItem, ScanOptions
    from .app import _Service

__all__ = ["classify_video"]

MAX_FPS = 30.0


def _options(request: Request) -> ScanOptions:
    from ..video import AGGREGATES, Sampling, ScanOptions

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
    return ScanOptions(Sampling(fps=fps), aggregate=method)


def _scan_file(service: _Service, path: Path, options: ScanOptions, cancel: threading.Event) -> list[ScanItem]:
    from ..video import scan

    try:
        items = scan(service.detector, str(path), options)
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


async def classify_video(service: _Service, request: Request) -> dict[str, Any]:
    """Summary and frames of one uploaded clip; a clip that cannot be read is a 400 (413 over the pixel limit)."""
    from ..video import FrameResult, VideoError, VideoSummary

    service._require_ready()
    try:
        require_extra("video")
    except ExtraNotInstalledError as exc:
        raise ServiceError(501, "not_installed", str(exc)) from exc
    options = _options(request)
    source, path = await spool_single(request, service.config, raw_prefix="video", what="video clip")
    cancel = threading.Event()
    with service._admitted(1):
        work = asyncio.ensure_future(asyncio.to_thread(_scan_file, service, path, options, cancel))
        try:
            items = await service._within_deadline(asyncio.shield(work))
        finally:
            cancel.set()  # on a timeout the scan stops at its next frame and removes the file
    named = str(path)
    frames = [{**item.to_dict(), "source": source} for item in items if isinstance(item, FrameResult)]
    last = items[-1] if items else None
    if isinstance(last, VideoError):
        message = str(last.error).replace(named, source)
        too_large = isinstance(last.error, ImageTooLargeError)
        status, code = (413, "image_too_large") if too_large else (400, "invalid_video")
        raise ServiceError(status, code, message, kind=type(last.error).__name__)
    assert isinstance(last, VideoSummary)
    return {"summary": {**last.to_dict(), "source": source}, "frames": frames,
            "variant": service.detector.variant_name, "model": service.model_name}
