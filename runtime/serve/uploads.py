"""Reading uploads: media type, a size-capped body under a read timeout, multipart file parts.

Nothing here decodes an image: this module only turns a request into
(source name, bytes) or a :class:`ServiceError` (400, 408, 413, 415).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..credentials import mask_url
from .config import ServeConfig
from .limits import ServiceError

__all__ = ["RAW_MEDIA_TYPES", "RAW_SOURCE", "LimitedBody", "media_type", "read_parts", "read_single", "spool_single",
           "within_read_timeout"]

T = TypeVar("T")

RAW_MEDIA_TYPES = ("image/*", "application/octet-stream")
RAW_SOURCE = "<request body>"
# Parts per multipart body we are willing to parse before counting files;
# the body-size cap bounds the work anyway.
_MAX_PARTS = 10_000
_MAX_NAME = 200  # file names are echoed back and logged: keep them short


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class LimitedBody:
    """A request body stream that is refused (413) as soon as it exceeds ``limit`` bytes.

    ``declared`` is the Content-Length (None for a chunked body); a body that
    declares too much is refused before a byte is read. A client that
    disconnects makes the source raise (Starlette's ``ClientDisconnect``).
    """

    def __init__(self, source: AsyncIterator[bytes], *, declared: int | None, limit: int) -> None:
        if declared is not None and declared > limit:
            raise ServiceError(
                413, "body_too_large", f"request body of {declared:,} bytes is over the limit of {limit:,} bytes"
            )
        self._source = source
        self.limit = limit
        self.received = 0

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._source:
            self.received += len(chunk)
            if self.received > self.limit:
                raise ServiceError(413, "body_too_large", f"request body is over the limit of {self.limit:,} bytes")
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


async def within_read_timeout(work: Awaitable[T], body: LimitedBody, timeout_s: float) -> T:
    """Await ``work`` (which consumes ``body``); 408 if the upload takes longer than ``timeout_s``.

    This bounds the whole upload, so a client trickling bytes cannot hold a
    connection's resources indefinitely.
    """
    try:
        return await asyncio.wait_for(work, timeout_s)
    except asyncio.TimeoutError as exc:  # TimeoutError itself from Python 3.11 on
        raise ServiceError(
            408, "read_timeout",
            f"the request body did not arrive within {timeout_s:g} s ({body.received:,} bytes received)",
        ) from exc


def limited_body(request: Request, config: ServeConfig) -> LimitedBody:
    declared = request.headers.get("content-length")
    try:
        length = int(declared) if declared is not None else None
    except ValueError:
        length = None  # the HTTP layer has already rejected malformed framing
    return LimitedBody(request.stream(), declared=length, limit=config.max_body_bytes)


@asynccontextmanager
async def _file_parts(request: Request, body: LimitedBody) -> AsyncIterator[list[tuple[str, UploadFile]]]:
    """The file parts of a multipart body as (file name, upload), in order; closed on exit.

    Starlette keeps each part in memory up to 1 MB and spools the rest to a temporary file.
    """
    parser = MultiPartParser(request.headers, body.chunks(), max_files=_MAX_PARTS, max_fields=_MAX_PARTS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ServiceError(400, "bad_request", f"malformed multipart/form-data body: {exc.message}") from exc
    try:
        files: list[tuple[str, UploadFile]] = []
        for index, (field, value) in enumerate(form.multi_items()):
            if isinstance(value, UploadFile):
                # a file name is shown in responses: one that is a URL with a password shows it masked
                files.append((mask_url(value.filename or f"<part {index}>")[:_MAX_NAME], value))
            elif field in ("file", "files", "image", "images", "video"):
                raise ServiceError(400, "bad_request",
                                   f"part {field!r} has no filename: send the file as a file upload")
        yield files
    finally:
        await form.close()


async def _parse_multipart(request: Request, body: LimitedBody) -> list[tuple[str, bytes]]:
    async with _file_parts(request, body) as parts:
        return [(name, await upload.read()) for name, upload in parts]


async def read_parts(request: Request, config: ServeConfig) -> list[tuple[str, bytes]]:
    """The file parts of a multipart body, as (file name, bytes), in order."""
    body = limited_body(request, config)
    return await within_read_timeout(_parse_multipart(request, body), body, config.read_timeout_s)


def _check_raw_media(media: str, raw_prefix: str, what: str) -> None:
    if not (media.startswith(raw_prefix + "/") or media == "application/octet-stream"):
        raise ServiceError(415, "unsupported_media_type",
                           f"Content-Type {media or '(none)'!r} is not accepted; send the {what} as the body "
                           f"({raw_prefix}/*, application/octet-stream) or as a multipart/form-data file part")


async def read_single(
    request: Request, config: ServeConfig, *, raw_prefix: str, what: str, hint: str = ""
) -> tuple[str, bytes]:
    """One upload: the raw body (``raw_prefix``/* or application/octet-stream) or one multipart file part."""
    media = media_type(request)
    if media == "multipart/form-data":
        parts = await read_parts(request, config)
        if len(parts) != 1:
            raise ServiceError(400, "bad_request", f"expected exactly one file part, got {len(parts)}{hint}")
        return parts[0]
    _check_raw_media(media, raw_prefix, what)
    body = limited_body(request, config)
    return RAW_SOURCE, await within_read_timeout(body.read(), body, config.read_timeout_s)


async def _spool_raw(body: LimitedBody, path: Path) -> None:
    with path.open("wb") as out:
        async for chunk in body.chunks():
            await asyncio.to_thread(out.write, chunk)


async def _spool_multipart(request: Request, body: LimitedBody, path: Path, hint: str) -> str:
    """The one file part, copied to ``path``."""
    async with _file_parts(request, body) as parts:
        if len(parts) != 1:
            raise ServiceError(400, "bad_request", f"expected exactly one file part, got {len(parts)}{hint}")
        name, upload = parts[0]
        with path.open("wb") as out:
            await asyncio.to_thread(shutil.copyfileobj, upload.file, out)
        return name


async def spool_single(
    request: Request, config: ServeConfig, *, raw_prefix: str, what: str, hint: str = ""
) -> tuple[str, Path]:
    """Like :func:`read_single`, but the upload is written to a new temporary file chunk by chunk
    instead of being held in memory. Returns (source name, path); the caller removes the file.
    On any refusal the file is removed here."""
    media = media_type(request)
    if media != "multipart/form-data":
        _check_raw_media(media, raw_prefix, what)
    fd, name = tempfile.mkstemp(prefix="deepfake-edge-upload-")
    os.close(fd)
    path = Path(name)
    try:
        body = limited_body(request, config)
        if media == "multipart/form-data":
            source = await within_read_timeout(_spool_multipart(request, body, path, hint), body, config.read_timeout_s)
        else:
            await within_read_timeout(_spool_raw(body, path), body, config.read_timeout_s)
            source = RAW_SOURCE
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return source, path
