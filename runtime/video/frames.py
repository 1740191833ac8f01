"""Video sources read with PyAV (FFmpeg): decoded frames with their times, and the sampled ones as RGB images.

A source is a file path, a URL FFmpeg reads (``rtsp://``, ``http(s)://``, ``udp://``, ...) or a capture
device (``/dev/video0``). :class:`VideoReader` opens it with timeouts and yields every decoded frame with its
time; :func:`sample_frames` keeps the frames due at ``fps`` and converts only those to RGB. Frames in between
are decoded (the codec needs them) but never converted.

Times are seconds from the start of the video, from each frame's presentation timestamp (pts), so
variable-frame-rate video is sampled evenly in time.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import math
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..credentials import Source
from ..errors import (
    ImageTooLargeError,
    VideoDecodeError,
    VideoOpenError,
    VideoSourceError,
    VideoTimeoutError,
)
from ..extras import require_extra
from ..images import DEFAULT_MAX_PIXELS
from .rotation import autorotate, frame_matrix

if TYPE_CHECKING:
    import av.container
    import av.video.frame
    import av.video.stream

__all__ = [
    "URL_SCHEMES", "VIDEO_SUFFIXES", "Sampling", "TimeSampler", "VideoReader",
    "expected_samples", "frame_name", "is_url", "sample_frames",
]

#: File suffixes treated as video when a folder is expanded.
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv",
    ".3gp", ".ogv", ".y4m",
})
#: Sources that are passed to FFmpeg as they are, never checked as local files.
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")

# A frame time within this of a sampling tick counts as on the tick (pts are rationals; floats are not).
_TICK_EPSILON = 1e-6
# An FFmpeg error this close to a timeout's deadline (or later) is that timeout (see _read_error).
_AT_DEADLINE = 0.95


def frame_name(source: str, time_s: float) -> str:
    """How errors name one frame of a source: ``clip.mp4@12.500s``."""
    return f"{source}@{time_s:.3f}s"


def is_url(source: str) -> bool:
    """True for a network URL FFmpeg opens itself (not a local file or device)."""
    return source.lower().startswith(URL_SCHEMES)


@dataclass(frozen=True)
class Sampling:
    """Which frames of a source are classified, and how long to wait for it.

    ``fps``: sampled frames per second of video time. ``keyframes``: decode only
    keyframes (the decoder skips the others; still at most ``fps`` of them a second).
    ``start``/``duration``: the span scanned, in seconds of video time.
    ``max_frames``: stop after that many sampled frames. ``decoder_threads``: FFmpeg's
    decoding threads, kept low so decoding does not starve the model.
    ``open_timeout_s``/``read_timeout_s``: FFmpeg gives up on a silent source after these.
    """

    fps: float = 1.0
    keyframes: bool = False
    start: float = 0.0
    duration: float | None = None
    max_frames: int | None = None
    decoder_threads: int = 1
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        checks = {
            "fps": self.fps > 0 and math.isfinite(self.fps),
            "start": self.start >= 0 and math.isfinite(self.start),
            "duration": self.duration is None or (self.duration > 0 and math.isfinite(self.duration)),
            "max_frames": self.max_frames is None or self.max_frames >= 1,
            "decoder_threads": self.decoder_threads >= 1,
            "open_timeout_s": self.open_timeout_s > 0,
            "read_timeout_s": self.read_timeout_s > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid sampling options {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    @property
    def end(self) -> float:
        return math.inf if self.duration is None else self.start + self.duration


class TimeSampler:
    """Keeps the first frame at or after each tick ``start, start + 1/fps, ...``.

    Ticks that fall between two frames are not made up: a frame is kept at most
    once, and the next tick is the first one after it, so a gap in the video
    (variable frame rate, dropped frames) never yields a burst of samples.
    """

    def __init__(self, fps: float, start: float = 0.0) -> None:
        self.step = 1.0 / fps
        self.start = start
        self.next = start

    def take(self, time_s: float) -> bool:
        if time_s + _TICK_EPSILON < self.next:
            return False
        ticks = math.floor((time_s - self.start) / self.step + _TICK_EPSILON) + 1
        self.next = self.start + max(ticks, 1) * self.step
        return True


def _check_local(path: str, source: str) -> None:
    """Refuse, before FFmpeg blocks on it, a path that is missing, a folder, empty, or a FIFO/socket.

    Character devices (``/dev/video0``) are FFmpeg's to open. ``source`` names it in errors.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise VideoOpenError(source, "no such file") from exc
    except OSError as exc:
        raise VideoOpenError(source, f"cannot read file ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise VideoOpenError(source, "is a directory, not a video file")
    if stat.S_ISCHR(info.st_mode):
        return
    if not stat.S_ISREG(info.st_mode):
        raise VideoOpenError(source, "is not a regular file (a FIFO or socket), refused")
    if info.st_size == 0:
        raise VideoDecodeError(source, "empty file (0 bytes)")


def _read_error(src: Source, exc: Exception, *, what: str, timeout_s: float, waited_s: float) -> VideoSourceError:
    """An FFmpeg error, raised ``waited_s`` into an open or a read, as ours (its text, which repeats URLs, scrubbed).

    FFmpeg reports its interrupt (our timeout) as "exit requested", or as whatever the demuxer makes of it
    (RTSP's, on a server that never answers, says "invalid data"): an error at or after the deadline is the timeout.
    """
    import av

    source, detail = src.name, src.scrub(str(getattr(exc, "strerror", None) or exc))
    if isinstance(exc, (av.error.ExitError, TimeoutError)) or waited_s >= timeout_s * _AT_DEADLINE:
        silent = "no answer from the server" if what == "open" and is_url(source) else "no data"
        return VideoTimeoutError(source, f"{silent} within the {what} timeout of {timeout_s:g} s")
    if isinstance(exc, UnicodeDecodeError):  # PyAV reads the container's metadata as UTF-8
        return VideoDecodeError(source, f"corrupt metadata (not UTF-8: {exc.reason})")
    if isinstance(exc, EOFError) and what == "open":
        return VideoDecodeError(source, "ends before any video data (an empty or cut-off container)")
    if isinstance(exc, av.error.InvalidDataError):
        return VideoDecodeError(source, f"{'not a recognised video format' if what == 'open' else 'corrupt data'} "
                                        f"({detail})")
    if isinstance(exc, av.error.FFmpegError) and what != "open":
        return VideoDecodeError(source, f"the source broke ({detail})")
    if isinstance(exc, av.error.FFmpegError) and exc.errno in (errno.EIO, errno.ENOMEM) and not is_url(source):
        return VideoDecodeError(source, f"a cut-off or corrupt container ({detail})")
    return VideoOpenError(source, f"cannot open ({detail})")


class VideoReader:
    """One opened source: :meth:`frames` decodes, :meth:`image` converts the frames you keep.

    Raises a ``VideoSourceError`` naming the source (or ``ExtraNotInstalledError`` without
    the [video] extra). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, source: str | Source, sampling: Sampling = Sampling(), *,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        require_extra("video")
        import av

        self._location = location = Source.of(source)
        self.source = source = location.name  # what errors and results show: the password masked
        self.sampling = sampling
        self.max_pixels = max_pixels
        self.position = 0.0  # end (s) of the last frame decoded: how much video has been seen
        self.decoded = 0  # frames decoded so far
        self.capped = False  # True when the read stopped at ``sampling.end`` and the video went on
        url = location.secret_url(VideoOpenError)
        if not is_url(source):
            _check_local(url, source)
        options = {"rtsp_transport": "tcp"} if source.lower().startswith(("rtsp://", "rtsps://")) else {}
        # FFmpeg does not probe capture devices: V4L2 must be named, as `ffmpeg -f v4l2 -i /dev/video0`.
        device = "v4l2" if source.startswith("/dev/video") else None
        started = time.monotonic()
        try:
            self._container: av.container.InputContainer = av.open(
                url, format=device, timeout=(sampling.open_timeout_s, sampling.read_timeout_s), options=options)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise _read_error(location, exc, what="open", timeout_s=sampling.open_timeout_s,
                              waited_s=time.monotonic() - started) from location.cause(exc)
        try:
            self.stream = self._video_stream()
        except (VideoSourceError, ImageTooLargeError):
            self._container.close()
            raise
        # pts of time 0: the stream's start time, else (live streams) the first frame's pts
        self._origin: int | None = self.stream.start_time
        self._last: float | None = None  # time of the last frame decoded
        self._keyframes: list[float] | None = None

    def _video_stream(self) -> av.video.stream.VideoStream:
        streams = self._container.streams
        if not streams.video:
            kinds = sorted({s.type for s in streams})
            held = f"only {' and '.join(kinds)}" if kinds else "no streams at all"
            raise VideoDecodeError(self.source, f"has no video stream (it holds {held})")
        stream = streams.video[0]
        ctx = stream.codec_context
        if ctx is None:
            # (PyAV >= 14 has no codec object, hence no name, for a stream without a decoder)
            raise VideoDecodeError(self.source, "no decoder for its video codec (unknown or unsupported)")
        self._check_size(ctx.width, ctx.height, self.source)
        ctx.thread_count = self.sampling.decoder_threads
        ctx.thread_type = "AUTO" if self.sampling.decoder_threads > 1 else "SLICE"
        if self.sampling.keyframes:
            ctx.skip_frame = "NONKEY"
        return stream

    def _check_size(self, width: int, height: int, name: str) -> None:
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise ImageTooLargeError(name, f"frames of {width}x{height} = {width * height:,} pixels are over "
                                           f"the limit of {self.max_pixels:,}")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def declared_duration(self) -> float | None:
        """Seconds of video the container declares (None if it does not say, as live streams)."""
        stream = self.stream
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if len(self._container.streams) == 1 and self._container.duration is not None:
            return self._container.duration / 1_000_000
        return None

    @property
    def frame_interval(self) -> float:
        """Seconds between frames at the stream's average rate (0 if unknown)."""
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(1 / rate) if rate else 0.0

    def _seconds(self, pts: int) -> float:
        assert self._origin is not None
        return float((pts - self._origin) * self.stream.time_base) if self.stream.time_base is not None else 0.0

    def _seek(self, time_s: float) -> None:
        """Seek to the keyframe at or before ``time_s`` (the decoder is flushed); a source that cannot seek
        (a live stream, a pipe) just goes on, and the frames before ``time_s`` are decoded and skipped."""
        import av

        assert self._origin is not None and self.stream.time_base is not None
        with contextlib.suppress(av.error.FFmpegError, OSError):
            self._container.seek(self._origin + int(time_s / self.stream.time_base), stream=self.stream, backward=True)

    def _keyframe_times(self) -> list[float]:
        """Times of the keyframes the container's index lists (empty without an index, as MPEG-TS or live).

        The index holds decoding timestamps, which are at or before the frames' presentation times.
        """
        if self._keyframes is None:
            entries: Any = self.stream.index_entries if self._origin is not None and not is_url(self.source) else []
            self._keyframes = sorted(self._seconds(e.timestamp) for e in entries if e.is_keyframe)
        return self._keyframes

    def skip_to(self, time_s: float) -> None:
        """Frames before ``time_s`` are not needed: seek ahead when a keyframe lies between the frames
        decoded so far and ``time_s``; otherwise decoding goes on from here (it is the cheaper path)."""
        if self._last is None:
            return
        keys = self._keyframe_times()
        i = bisect.bisect_right(keys, time_s + _TICK_EPSILON)
        if i and keys[i - 1] > self._last + self.frame_interval + _TICK_EPSILON:
            self._seek(time_s)

    def frames(self) -> Iterator[tuple[float, Any]]:
        """Every decoded frame from ``start`` to ``start + duration``, as (time in s, ``av.VideoFrame``).

        A frame without a pts (the first frames of an RTSP session) gets the previous frame's
        time plus one frame interval. Raises ``VideoSourceError`` when the source breaks or
        goes silent; at the end of a file whose data stops well before its declared
        duration, raises ``VideoDecodeError`` (truncated); ``ImageTooLargeError`` at once for a
        decoded frame over ``max_pixels`` (the declared size is checked at open, before decoding).
        """
        import av

        sampling = self.sampling
        if sampling.start > 0 and self._origin is not None:
            self._seek(sampling.start)
        last: float | None = None
        asked = time.monotonic()  # when the read now under way began (PyAV times each read alone)
        try:
            for packet in self._container.demux(self.stream):
                # Packets count towards the video seen even when the decoder skips their frames (--keyframes).
                if packet.pts is not None and self._origin is not None:
                    self.position = max(self.position, self._seconds(packet.pts + (packet.duration or 0)))
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else frame.dts
                    if pts is None:
                        time_s = 0.0 if last is None else last + self.frame_interval
                    else:
                        self._origin = pts if self._origin is None else self._origin
                        time_s = self._seconds(pts)
                    last = self._last = time_s
                    self.decoded += 1
                    self._check_size(frame.width, frame.height, frame_name(self.source, time_s))  # before converting
                    self.position = max(self.position, time_s + (
                        self._seconds(self._origin + frame.duration) if frame.duration and self._origin is not None
                        else self.frame_interval))
                    if time_s >= sampling.end:
                        self.capped = True
                        return
                    if time_s + _TICK_EPSILON >= sampling.start:
                        yield time_s, frame
                asked = time.monotonic()
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise _read_error(self._location, exc, what="read", timeout_s=sampling.read_timeout_s,
                              waited_s=time.monotonic() - asked) from self._location.cause(exc)
        self._check_complete()

    def _check_complete(self) -> None:
        """A file that ends well before its declared duration was cut short (FFmpeg just stops)."""
        if self.decoded == 0:
            raise VideoDecodeError(self.source, "contains no video frames")
        declared = self.declared_duration
        if is_url(self.source) or declared is None:
            return
        slack = max(1.0, 3 * self.frame_interval)
        if self.position < min(declared, self.sampling.end) - slack:
            raise VideoDecodeError(self.source, f"truncated: frames stop at {self.position:.3f} s of a "
                                                f"declared {declared:.3f} s")

    def image(self, time_s: float, frame: Any) -> Image.Image:
        """The frame as an upright RGB image (display matrix applied as ffmpeg does)."""
        return autorotate(frame.to_image(), frame_matrix(frame))

    def samples(self) -> Iterator[tuple[float, Image.Image]]:
        """(time in s, upright RGB image) of each sampled frame; only those are converted.

        Raises ``VideoSourceError`` after yielding every frame sampled before the damage,
        and ``ImageTooLargeError`` for a frame over ``max_pixels``.
        """
        sampler = TimeSampler(self.sampling.fps, self.sampling.start)
        count = 0
        for time_s, frame in self.frames():
            if sampler.take(time_s):
                yield time_s, self.image(time_s, frame)
                count += 1
                if self.sampling.max_frames is not None and count >= self.sampling.max_frames:
                    return
                self.skip_to(sampler.next)  # when samples are further apart than keyframes, decode only from those


def sample_frames(
    source: str | Source, sampling: Sampling = Sampling(), *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[float, Image.Image]]:
    """(time in s, upright RGB image) of each sampled frame of ``source`` (see :meth:`VideoReader.samples`)."""
    with VideoReader(source, sampling, max_pixels=max_pixels) as reader:
        yield from reader.samples()


def expected_samples(source: str | Source, sampling: Sampling = Sampling()) -> int | None:
    """How many frames :func:`sample_frames` should yield for a file (reads only its header), for a progress bar.

    None when unknown: a URL, ``--keyframes``, no declared duration, or a file that cannot be opened
    (the scan itself reports why).
    """
    if is_url(str(source)) or sampling.keyframes:
        return None
    try:
        with VideoReader(source, sampling, max_pixels=None) as reader:
            declared = reader.declared_duration
    except VideoSourceError:
        return None
    if declared is None:
        return None
    span = min(declared, sampling.end) - sampling.start
    count = max(0, math.ceil(span * sampling.fps - _TICK_EPSILON))
    return count if sampling.max_frames is None else min(count, sampling.max_frames)
