"""Scanning a video source: per-frame results, then one summary (or an error), as typed items.

Pipeline of one source::

    decode thread: VideoReader.samples -> RGB frame -> Detector.decode (the image path, bit-exact)
        -> bounded queue ->
    caller's thread: Detector.logits -> Detector.results -> FrameResult ... VideoSummary | VideoError

Decoding and preprocessing the next frame overlap the model's work on this one; the
bounded queue keeps memory flat when the model is the slower side.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..credentials import Source
from ..detector import Detector
from ..errors import DeepfakeEdgeError, VideoDecodeError
from ..labels import decisions
from ..results import Failure
from .aggregate import Segment, aggregate, segments
from .frames import Sampling, VideoReader, frame_name

__all__ = [
    "DEFAULT_SEGMENT_THRESHOLD", "EventSink", "FrameResult", "ScanItem", "ScanOptions", "VideoError", "VideoSummary",
    "classify_frame", "scan", "summarize",
]

#: Segments need a threshold on P(positive); without one in the bundle or on the command line, this.
DEFAULT_SEGMENT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ScanOptions:
    """How a source is scanned: ``sampling`` (which frames), ``aggregate`` (``mean`` or ``confident``),
    ``min_segment`` (shortest reported segment, s), ``queue_size`` (preprocessed frames waiting for the model)."""

    sampling: Sampling = field(default_factory=Sampling)
    aggregate: str = "mean"
    min_segment: float = 0.0
    queue_size: int = 4


@dataclass(frozen=True)
class FrameResult:
    """One classified frame: ``time`` in seconds from the start, from its presentation timestamp."""

    source: str
    time: float
    label: str
    scores: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "time": round(self.time, 3), "label": self.label, "scores": self.scores}


@dataclass(frozen=True)
class VideoSummary:
    """A source's verdict: ``score`` is the aggregate P(positive label) over its ``frames`` sampled frames;
    ``duration`` the seconds of video read."""

    source: str
    frames: int
    duration: float
    label: str
    score: float
    aggregate: str
    segments: tuple[Segment, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "frames": self.frames, "duration": round(self.duration, 3),
                "label": self.label, "score": self.score, "aggregate": self.aggregate,
                "segments": [s.to_dict() for s in self.segments]}


@dataclass(frozen=True)
class VideoError:
    """A source that could not be opened or broke; frames classified before stay reported."""

    source: str
    error: DeepfakeEdgeError

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "error": type(self.error).__name__, "message": str(self.error)}


ScanItem = FrameResult | VideoSummary | VideoError
#: Where items go (stdout JSON lines, MQTT, ...): called once per item, in order.
EventSink = Callable[[ScanItem], None]


def classify_frame(detector: Detector, source: str, time_s: float, tensor: np.ndarray) -> FrameResult:
    """Run the model on one preprocessed frame (``Detector.decode``'s output).

    Raises ``ModelOutputError`` for non-finite scores.
    """
    result = detector.results([frame_name(source, time_s)], detector.logits(tensor[None]))[0]
    if isinstance(result, Failure):
        raise result.error
    return FrameResult(source, time_s, result.label, result.scores)


def summarize(
    detector: Detector, source: str, frames: Sequence[FrameResult], *, duration: float, method: str = "mean",
    min_segment: float = 0.0,
) -> VideoSummary:
    """The verdict over ``frames`` (at least one): the aggregate P(positive), the label it decides, the segments.

    The label is the bundle's decision rule applied to the mean scores with the positive
    label's replaced by the aggregate; segments use the decision threshold (0.5 when there is none).
    """
    positive = detector.bundle.require_positive_label("a video verdict")
    if not frames:
        raise ValueError(f"{source}: no frames to summarize")
    p = [f.scores[positive] for f in frames]
    score = aggregate(method, p)
    means = np.array([[np.mean([f.scores[label] for f in frames]) for label in detector.labels]])
    means[0, detector.labels.index(positive)] = score
    label = detector.labels[int(decisions(means, detector.labels, positive, detector.threshold)[0])]
    threshold = detector.threshold if detector.threshold is not None else DEFAULT_SEGMENT_THRESHOLD
    runs = segments([f.time for f in frames], p, threshold=threshold, min_length=min_segment)
    return VideoSummary(source, len(frames), duration, label, score, method, tuple(runs))


_END = object()


def _decode_worker(
    detector: Detector, location: Source, options: ScanOptions, out: queue.Queue[object], stop: threading.Event
) -> None:
    """Open, sample and preprocess ``source``; put (time, tensor), then an error or the end with the duration."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    position = 0.0
    try:
        source = location.name
        with VideoReader(location, options.sampling, max_pixels=detector.max_pixels) as reader:
            for time_s, image in reader.samples():
                if not put((time_s, detector.decode(image, name=frame_name(source, time_s)))):
                    return
                position = reader.position
            position = reader.position
    except Exception as exc:  # noqa: BLE001 -- ours become a VideoError item; anything else (a bug) is re-raised by scan()
        put(exc)
        return
    put((_END, position))


def scan(
    detector: Detector, source: str | Source, options: ScanOptions | None = None
) -> Generator[ScanItem, None, None]:
    """Classify the sampled frames of ``source``: a ``FrameResult`` per frame, then a ``VideoSummary``,
    or a ``VideoError`` (after the frames classified before the source broke). Items name the source
    by its masked name (``rtsp://admin:***@cam/live``).

    Raises ``UnsupportedBundleError`` if the bundle has no positive label, before reading anything.
    Closing the generator early stops the decode thread.
    """
    options = options or ScanOptions()
    detector.bundle.require_positive_label("a video verdict")
    aggregate(options.aggregate, [])  # an unknown method fails now, not after the whole video
    location = Source.of(source)
    source = location.name
    stop = threading.Event()
    items: queue.Queue[object] = queue.Queue(maxsize=options.queue_size)
    worker = threading.Thread(target=_decode_worker, args=(detector, location, options, items, stop),
                              name=f"deepfake-edge-decode {source}", daemon=True)
    worker.start()
    frames: list[FrameResult] = []
    try:
        while True:
            try:
                item = items.get(timeout=0.5)
            except queue.Empty:
                if worker.is_alive():
                    continue
                item = items.get_nowait() if not items.empty() else RuntimeError(f"{source}: the decode thread died")
            if isinstance(item, DeepfakeEdgeError):
                yield VideoError(source, item)
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, tuple)
            if item[0] is _END:
                yield summarize(detector, source, frames, duration=item[1], method=options.aggregate,
                                min_segment=options.min_segment) if frames else VideoError(
                    source, VideoDecodeError(source, "no frames were sampled (is --start past the end?)"))
                return
            try:
                result = classify_frame(detector, source, *item)
            except DeepfakeEdgeError as exc:  # non-finite scores: the model, not this frame, is broken
                yield VideoError(source, exc)
                return
            frames.append(result)
            yield result
    finally:
        stop.set()
        # The worker notices ``stop`` within 0.1 s of a put; a read in progress ends within the read timeout.
        worker.join(timeout=options.sampling.open_timeout_s + options.sampling.read_timeout_s + 1)

