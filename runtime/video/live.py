"""Live sources (camera streams, capture devices): the newest frame only, and reconnection.

A :class:`LiveReader` runs one thread per source. It decodes every frame (the codec
needs them) and keeps only the newest frame due for sampling: when inference is
slower than the camera, older due frames are replaced and counted as ``dropped``,
so latency stays bounded instead of a backlog growing. A file served over HTTP (it
declares a duration) is read like a file instead: every sampled frame, and its end is the end.

The thread is also the watchdog. Opening and reading go through
:class:`~deepfake_edge.video.frames.VideoReader`, whose FFmpeg timeouts turn a
silent or stalled source into an error; a source that errors or ends is reopened
after an exponential backoff. It reports ``offline`` on the first failure and
``online`` on the first frame of a session, and gives up with the last error
after ``Reconnect.attempts`` failures in a row.

Times are seconds since the reader started (so they keep increasing across
reconnects): the first frame of a session is placed at the wall clock and the
following ones by their presentation timestamps; a frame without a pts (the
first frames of an RTSP session) is placed at the wall clock. A finite source
keeps its own clock (seconds from the start of the file), as a file scan does:
it decodes faster than real time, so the wall clock would squash its times.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from ..credentials import Source
from ..errors import VideoSourceError
from ..images import DEFAULT_MAX_PIXELS
from .frames import Sampling, TimeSampler, VideoReader, is_url

__all__ = ["LIVE_DEVICE_PREFIX", "LiveFrame", "LiveReader", "Reconnect", "StatusChange", "is_live"]

LIVE_DEVICE_PREFIX = "/dev/video"

# A pts-based time further than this from the wall clock means the stream's clock jumped
# (a camera's timestamp reset or wrap): the session is re-anchored to the wall clock.
_MAX_CLOCK_DRIFT_S = 5.0
# How often a reader waiting for its frame to be taken looks at ``stop``.
_POLL_S = 0.1


# A file served over HTTP declares its duration and ends; a stream (RTSP, HLS, MJPEG) that
# ends was cut off. (FFmpeg's RTSP demuxer may declare a duration too: it is not a file.)
_FINITE_SCHEMES = ("http://", "https://")


def is_live(source: str) -> bool:
    """True for a stream URL or a capture device: sources read by :class:`LiveReader`, not to their end."""
    return is_url(source) or source.startswith(LIVE_DEVICE_PREFIX)


@dataclass(frozen=True)
class Reconnect:
    """``attempts`` failed opens or reads in a row before giving up (0: never reconnect);
    the wait before attempt i is ``min(initial_s * 2 ** (i - 1), max_s)``."""

    attempts: int = 5
    initial_s: float = 1.0
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or not (0 < self.initial_s <= self.max_s) or not math.isfinite(self.max_s):
            raise ValueError(f"invalid reconnect options {self}")

    def delay(self, attempt: int) -> float:
        return min(self.initial_s * 2 ** (attempt - 1), self.max_s)


@dataclass(frozen=True)
class StatusChange:
    """A source went ``online`` (a session delivered its first frame) or ``offline`` (it failed
    or ended; ``reason`` says how, ``retry_in`` is the wait before the next attempt)."""

    source: str
    status: Literal["online", "offline"]
    time: float
    reason: str | None = None
    retry_in: float | None = None
    reconnects: int = 0

    def to_dict(self) -> dict[str, object]:
        record: dict[str, object] = {"source": self.source, "status": self.status, "time": round(self.time, 3)}
        if self.status == "offline":
            record.update(reason=self.reason, retry_in=self.retry_in)
        else:
            record["reconnects"] = self.reconnects
        return record


@dataclass(frozen=True)
class LiveFrame:
    """A sampled frame, not yet converted: :meth:`image` does that in the caller's thread."""

    source: str
    time: float
    frame: Any  # av.VideoFrame
    reader: VideoReader

    def image(self) -> Image.Image:
        return self.reader.image(self.time, self.frame)


#: What the reader reports besides frames: a status change, the final error, or the end of a
#: finite source (a file served over HTTP) as the seconds read.
LiveEvent = StatusChange | VideoSourceError | float


class LiveReader:
    """Reads ``source`` in a thread; :meth:`take` returns the newest sampled frame, :meth:`events`
    the status changes and the outcome. ``notify`` is called (from the thread) whenever either
    has something new, so one consumer can wait for several readers. ``self.source`` is the
    name to show (password masked); what is opened stays inside.
    """

    def __init__(
        self,
        source: str | Source,
        sampling: Sampling | None = None,
        reconnect: Reconnect | None = None,
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        notify: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._location = Source.of(source)
        self.source = self._location.name
        self.sampling = sampling or Sampling()
        self.reconnect = reconnect or Reconnect()
        self.max_pixels = max_pixels
        self.decoded = 0  # frames decoded
        self.sampled = 0  # frames due for sampling
        self.dropped = 0  # sampled frames replaced by a newer one before they were taken
        self.reconnects = 0  # sessions opened after the first
        self._notify = notify
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._slot: LiveFrame | None = None
        self._events: list[LiveEvent] = []
        self._origin = clock()
        self._last_time = 0.0
        self._finite = False  # set once a session found a file served over HTTP
        self._position = 0.0  # seconds of a finite source read so far
        self._thread = threading.Thread(target=self._run, name=f"deepfake-edge-live {self.source}", daemon=True)

    # -- the consumer's side ------------------------------------------------
    def start(self) -> LiveReader:
        self._origin = self._clock()
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop; wait up to ``timeout`` (default: one open plus one read timeout).
        True if it stopped (a blocking FFmpeg call ends at its timeout at the latest)."""
        self._stop.set()
        if self._thread.is_alive():
            wait = self.sampling.open_timeout_s + self.sampling.read_timeout_s + 1 if timeout is None else timeout
            self._thread.join(wait)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def elapsed(self) -> float:
        """Seconds on the source's clock: since the start for a stream, of video read for a finite source."""
        return self._position if self._finite else self._clock() - self._origin

    def take(self) -> LiveFrame | None:
        with self._taken:
            frame, self._slot = self._slot, None
            self._taken.notify_all()
        return frame

    def events(self) -> list[LiveEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    # -- the thread -----------------------------------------------------------
    def _post(self, event: LiveEvent) -> None:
        with self._lock:
            self._events.append(event)
        self._notify()

    def _put(self, frame: LiveFrame, *, wait: bool) -> None:
        """Offer ``frame``; with ``wait`` (a finite source) wait until the last one was taken instead
        of replacing it: a file is read as fast as the decoder goes, not at the camera's pace."""
        with self._taken:
            while wait and self._slot is not None and not self._stop.is_set():
                self._taken.wait(_POLL_S)
            self.dropped += self._slot is not None
            self._slot = frame
        self._notify()

    def _run(self) -> None:
        failures = 0
        online: bool | None = None  # None until the first session ends
        sampler = TimeSampler(self.sampling.fps)
        while not self._stop.is_set():
            outcome = self._session(sampler)
            if outcome is None:  # stopped
                return
            if isinstance(outcome, float):  # a finite source read to its end
                self._post(outcome)
                return
            error, delivered = outcome
            if delivered:
                online, failures = True, 0
            failures += 1
            gave_up = failures > self.reconnect.attempts
            delay = self.reconnect.delay(failures)
            if online is not False:
                self._post(StatusChange(self.source, "offline", self.elapsed(), reason=error.reason,
                                        retry_in=None if gave_up else delay))
                online = False
            if gave_up:
                attempts = self.reconnect.attempts
                tries = f" (gave up after {attempts} reconnect attempt{'s' * (attempts != 1)})" if attempts else ""
                self._post(type(error)(self.source, error.reason + tries))
                return
            if self._stop.wait(delay):
                return
            self.reconnects += 1

    def _session(self, sampler: TimeSampler) -> tuple[VideoSourceError, bool] | float | None:
        """One open-and-read. Returns None when stopped, the seconds read when a finite source
        ended, else (the error that ended the session, whether it delivered a frame)."""
        delivered = False
        try:
            reader = VideoReader(self._location, self.sampling, max_pixels=self.max_pixels)
        except VideoSourceError as exc:
            return exc, False
        anchor: float | None = None
        finite = self.source.lower().startswith(_FINITE_SCHEMES) and reader.declared_duration is not None
        self._finite = self._finite or finite
        with reader:
            try:
                for pts_time, frame in reader.frames():
                    now = self._clock()
                    if self._stop.is_set():
                        return None
                    self.decoded += 1
                    wall = now - self._origin
                    if finite:  # the file's own clock (see the module docstring)
                        time_s, self._position = pts_time, max(self._position, reader.position)
                    elif frame.pts is None:
                        time_s = wall
                    else:
                        if anchor is None or abs(anchor + pts_time - wall) > _MAX_CLOCK_DRIFT_S:
                            anchor = wall - pts_time
                        time_s = anchor + pts_time
                    time_s = self._last_time = max(time_s, self._last_time)
                    if not delivered:
                        delivered = True
                        self._post(StatusChange(self.source, "online", time_s, reconnects=self.reconnects))
                    if sampler.take(time_s):
                        self.sampled += 1
                        self._put(LiveFrame(self.source, time_s, frame, reader), wait=finite)
            except VideoSourceError as exc:
                if self._stop.is_set():
                    return None
                return exc, delivered
            if self._stop.is_set():
                return None
            if finite:
                return reader.position
        return VideoSourceError(self.source, "the stream ended"), delivered
