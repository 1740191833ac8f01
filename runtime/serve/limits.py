"""The service's limits and the errors they produce.

Every refusal is a :class:`ServiceError` carrying its HTTP status, a stable
machine-readable ``code`` (also the ``outcome`` label of the request metric)
and a message that says what was expected. The app turns it into::

    {"error": "<code>", "message": "...", "type": "<exception class, for image errors>"}

Status codes (documented in the README):
    400 invalid_image / bad_request     not an image, corrupt, or a malformed upload
    408 read_timeout                    the body did not arrive within the read timeout
    413 body_too_large / image_too_large / too_many_images
    415 unsupported_media_type
    500 decoder_crashed / decoder_out_of_memory   a video's decoding process died or hit its limit
    503 queue_full / not_ready          with ``Retry-After``
    504 timeout / decode_timeout        the per-request deadline passed; a video's decoder went silent
"""

from __future__ import annotations

import threading

from ..errors import ImageError, ImageTooLargeError

__all__ = ["Admission", "ServiceError", "image_error"]

class ServiceError(Exception):
    """A request the service refuses, with the HTTP answer to give."""

    def __init__(
        self, status: int, code: str, message: str, *, kind: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.kind = kind
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.kind is not None:
            body["type"] = self.kind
        return body

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def image_error(exc: ImageError) -> ServiceError:
    """400 for an undecodable upload, 413 for one over the pixel limit (a decompression bomb)."""
    if isinstance(exc, ImageTooLargeError):
        return ServiceError(413, "image_too_large", str(exc), kind=type(exc).__name__)
    return ServiceError(400, "invalid_image", str(exc), kind=type(exc).__name__)


class Admission:
    """Counts images admitted and not yet answered; refuses beyond ``capacity``.

    This is the service's bounded queue: it covers decoding, waiting for a
    batch and the model call, so a flood is refused up front (503) instead of
    piling up in memory.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._in_flight = 0
        self._lock = threading.Lock()  # the metrics scrape reads it from another thread

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self, n: int = 1) -> bool:
        with self._lock:
            if self._in_flight + n > self.capacity:
                return False
            self._in_flight += n
            return True

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._in_flight -= n
