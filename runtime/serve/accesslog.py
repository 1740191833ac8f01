"""Structured access logs: one JSON object per request, on the ``deepfake_edge.access`` logger.

The middleware is plain ASGI (it wraps ``send`` to see the status), so it logs
every request, including the ones FastAPI answers itself (404, 405). The
formatter turns any record into one JSON line; ``configure_json_logging``
installs it for the service's and uvicorn's loggers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["ACCESS_LOGGER", "AccessLogMiddleware", "JsonLinesFormatter", "configure_json_logging"]

ACCESS_LOGGER = "deepfake_edge.access"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AccessLogMiddleware:
    """Logs method, path, status, duration, body sizes and client of each HTTP request."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": None, "bytes_in": 0, "bytes_out": 0, "disconnected": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes_in"] += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                seen["disconnected"] = True
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            client = scope.get("client")
            self.logger.info(
                "%s %s %s", scope["method"], scope["path"], seen["status"],
                extra={"fields": {
                    "event": "access",
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": seen["status"],  # None: the app raised before answering
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "bytes_in": seen["bytes_in"],
                    "bytes_out": seen["bytes_out"],
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    "client_disconnected": seen["disconnected"],
                    "user_agent": _header(scope, b"user-agent"),
                }},
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class JsonLinesFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields}`` on one line.

    Structured data goes in ``extra={"fields": {...}}``; exceptions are added
    as a ``"exception"`` string so a traceback never breaks the one-line format.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_json_logging(level: int = logging.INFO, stream: Any = None) -> None:
    """Send the service's, uvicorn's and python-multipart's logs to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLinesFormatter())
    for name in ("deepfake_edge", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # python-multipart warns about each malformed upload (already answered with
    # 400); keep those lines JSON too, and never more verbose than warnings.
    for name in ("python_multipart", "multipart"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(max(level, logging.WARNING))
        logger.propagate = False
