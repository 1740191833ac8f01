"""The service's knobs, in one frozen dataclass (no FastAPI needed to build or check it)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = ["ServeConfig"]


def _default_decode_workers() -> int:
    # Decoding + resizing releases the GIL inside PIL, so a few threads overlap
    # with inference; more than the core count only adds contention.
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching parameters of one service instance.

    Attributes:
        max_batch: images per model call at most.
        max_wait_ms: how long the first image of a batch waits for company
            when the model is idle. While the model is busy, new requests pile
            up and the next batch takes them without waiting.
        max_queue: images admitted and not yet answered (being decoded, queued
            or in the model). Beyond it a request gets 503 with ``Retry-After``.
        max_body_bytes: largest accepted request body (413 above).
        max_batch_items: most images in one ``/v1/classify/batch`` request (413 above).
        timeout_s: per-request deadline from admission to answer (504 after it).
        read_timeout_s: time allowed to receive a request body (408 after it),
            so a slow client cannot hold a slot forever.
        decode_workers: threads decoding and preprocessing uploads.
        retry_after_s: the ``Retry-After`` value sent with 503 answers.
        auth_failures, auth_window_s: a client address that sends this many
            wrong API keys within the window gets 429 until the oldest leaves it.
        max_video_seconds: seconds of an uploaded video scanned at most; the rest is
            not decoded, and the answer says ``"capped": true``.
        video_memory_mb: memory the child process decoding an uploaded video may
            map beyond its own start (about 300 MB: Python, PyAV, numpy); a video
            needing more fails alone (500).
    """

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_body_bytes: int = 20 * 1024 * 1024
    max_batch_items: int = 32
    timeout_s: float = 30.0
    read_timeout_s: float = 30.0
    decode_workers: int = _default_decode_workers()
    retry_after_s: int = 1
    auth_failures: int = 10
    auth_window_s: float = 60.0
    max_video_seconds: float = 600.0
    video_memory_mb: int = 2048

    def __post_init__(self) -> None:
        positive = {
            "max_batch": self.max_batch, "max_queue": self.max_queue, "max_body_bytes": self.max_body_bytes,
            "max_batch_items": self.max_batch_items, "timeout_s": self.timeout_s,
            "read_timeout_s": self.read_timeout_s, "decode_workers": self.decode_workers,
            "retry_after_s": self.retry_after_s, "auth_failures": self.auth_failures,
            "auth_window_s": self.auth_window_s, "max_video_seconds": self.max_video_seconds,
            "video_memory_mb": self.video_memory_mb,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not math.isfinite(self.max_video_seconds):
            raise ValueError(f"max_video_seconds must be a finite number, got {self.max_video_seconds}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_batch_items > self.max_queue:
            # A batch request is admitted all at once; a larger one could never fit.
            raise ValueError(f"max_batch_items ({self.max_batch_items}) must be <= max_queue ({self.max_queue})")
