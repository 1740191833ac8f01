"""Scanning a video source: per-frame results, then one summary (or an error), as typed items.

Pipeline of one source::

    decode thread: VideoReader.samples -> RGB frame -> Detector.decode (the image path, bit-exact)
        -> bounded queue ->
    caller's thread: Detector.logits -> Detector.results -> FrameResult ... VideoSummary | VideoError

Decoding and preprocessing the next frame overlap the model's work on this one; the
bounded queue keeps memory flat when the model is the slower side. With
``ScanOptions.isolation`` the decoding runs in a child process with a memory limit
(see :mod:`.decoding`), for files nobody vouches for.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..credentials import Source
from ..detector import Detector
from ..errors import DeepfakeEdgeError, VideoDecodeError
from ..evidence import DEFAULT_HOTSPOTS, Hotspot
from ..image_decoder import Placement
from ..results import Failure, Prediction
from .aggregate import Segment, aggregate, segments
from .decoding import Isolation, ReadEnd, decoded_samples, isolated_samples
from .evidence import PeakFrame, PeakTracker
from .frames import Sampling, frame_name

__all__ = [
    "DEFAULT_SEGMENT_THRESHOLD", "EventSink", "FrameResult", "ScanItem", "ScanOptions", "VideoError", "VideoSummary",
    "classify_frame", "frame_result", "scan", "summarize",
]

#: Segments need a threshold on the manipulation score; without one in the bundle or on the command line, this.
DEFAULT_SEGMENT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ScanOptions:
    """How a source is scanned: ``sampling`` (which frames), ``aggregate`` (``mean`` or ``confident``),
    ``min_segment`` (shortest reported segment, s), ``queue_size`` (preprocessed frames waiting for the model),
    ``isolation`` (decode in a child process with a memory limit; None: in a thread of this one).
    ``evidence`` (frames get hotspots; the summary keeps each segment's peak frame with its evidence map)."""

    sampling: Sampling = field(default_factory=Sampling)
    aggregate: str = "mean"
    min_segment: float = 0.0
    queue_size: int = 4
    isolation: Isolation | None = None
    evidence: bool = False


@dataclass(frozen=True)
class FrameResult:
    """One classified frame: ``time`` in seconds from the start, from its presentation timestamp."""

    source: str
    time: float
    label: str
    scores: dict[str, float]
    score: float = float("nan")  # the manipulation score (``decision.ScoreRule``)
    hotspots: tuple[Hotspot, ...] | None = None  # only when scanned with evidence
    prediction: Prediction | None = field(default=None, repr=False, compare=False)  # with its evidence map

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source, "time": round(self.time, 3), "label": self.label,
                                  "scores": self.scores, "score": self.score}
        if self.hotspots is not None:
            out["hotspots"] = [h.to_dict() for h in self.hotspots]
        return out


@dataclass(frozen=True)
class VideoSummary:
    """A source's verdict: ``score`` is the aggregate manipulation score over its ``frames`` sampled frames;
    ``duration`` the seconds of video read; ``capped`` when the scan stopped at ``Sampling.duration``
    while the video went on (only then is it in :meth:`to_dict`)."""

    source: str
    frames: int
    duration: float
    label: str
    score: float
    aggregate: str
    segments: tuple[Segment, ...] = ()
    capped: bool = False
    # with evidence: each segment's peak frame (same order as ``segments``)
    peak_frames: tuple[PeakFrame | None, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        record = {"source": self.source, "frames": self.frames, "duration": round(self.duration, 3),
                  "label": self.label, "score": self.score, "aggregate": self.aggregate,
                  "segments": [s.to_dict() for s in self.segments]}
        return {**record, "capped": True} if self.capped else record


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


def classify_frame(detector: Detector, source: str, time_s: float, tensor: np.ndarray,
                   placement: Placement | None = None) -> FrameResult:
    """Run the model on one preprocessed frame (``Detector.decode``'s output).

    With ``placement`` (``Detector.decode_placed``'s), the frame gets its evidence map and hotspots.
    Raises ``ModelOutputError`` for non-finite scores.
    """
    name = frame_name(source, time_s)
    if placement is None:
        result = detector.results([name], detector.logits(tensor[None]))[0]
    else:
        logits, maps = detector.logits_and_evidence(tensor[None])
        result = detector.results([name], logits, maps, [placement])[0]
    if isinstance(result, Failure):
        raise result.error
    return frame_result(detector, source, time_s, result, evidence=placement is not None)


def frame_result(detector: Detector, source: str, time_s: float, result: Prediction, *,
                 evidence: bool = False) -> FrameResult:
    """A frame's ``Prediction`` as a ``FrameResult`` carrying the manipulation score (and, with ``evidence``,
    its hotspots and the prediction holding its map)."""
    score = result.score if result.score is not None else detector.bundle.require_rule("a video verdict").scores(
        np.array([[result.scores[label] for label in detector.labels]]))[0]
    if not evidence:
        return FrameResult(source, time_s, result.label, result.scores, float(score))
    return FrameResult(source, time_s, result.label, result.scores, float(score),
                       tuple(result.hotspots(DEFAULT_HOTSPOTS)), result)


def summarize(
    detector: Detector, source: str, frames: Sequence[FrameResult], *, duration: float, method: str = "mean",
    min_segment: float = 0.0,
) -> VideoSummary:
    """The verdict over ``frames`` (at least one): the aggregate manipulation score, the label it decides,
    the segments.

    The label is the bundle's decision rule applied to the mean scores with the aggregate as the
    manipulation score (for a positive label: its mean replaced by the aggregate; for a real label:
    its mean replaced by 1 - aggregate); segments use the decision threshold (0.5 when there is none).
    """
    rule = detector.bundle.require_rule("a video verdict")
    if not frames:
        raise ValueError(f"{source}: no frames to summarize")
    p = [f.score for f in frames]
    score = aggregate(method, p)
    means = np.array([[np.mean([f.scores[label] for f in frames]) for label in detector.labels]])
    anchor = rule.positive_label if rule.positive_label is not None else rule.real_label
    means[0, detector.labels.index(anchor)] = score if rule.positive_label is not None else 1.0 - score
    label = detector.labels[int(rule.decide(means, detector.threshold, np.array([score]))[0])]
    threshold = detector.threshold if detector.threshold is not None else DEFAULT_SEGMENT_THRESHOLD
    runs = segments([f.time for f in frames], p, threshold=threshold, min_length=min_segment)
    return VideoSummary(source, len(frames), duration, label, score, method, tuple(runs))


_END = object()


def _decode_worker(
    detector: Detector, location: Source, options: ScanOptions, out: queue.Queue[object], stop: threading.Event
) -> None:
    """Open, sample and preprocess ``location`` (here or in a child process); put (time, tensor), then an
    error or the end (a ``ReadEnd``)."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    decoder = detector.image_decoder
    samples: Generator[tuple[float, np.ndarray], None, ReadEnd | None] = (
        decoded_samples(decoder, location, options.sampling, keep_frames=options.evidence)
        if options.isolation is None
        else isolated_samples(decoder, location, options.sampling, options.isolation, stop))
    try:
        with contextlib.closing(samples):
            while True:
                try:
                    item = next(samples)
                except StopIteration as done:
                    end = done.value
                    break
                if not put(item):
                    return
    except Exception as exc:  # noqa: BLE001 -- ours become a VideoError item; anything else (a bug) is re-raised by scan()
        put(exc)
        return
    if end is not None:  # None: stopped
        put((_END, end))


def scan(
    detector: Detector, source: str | Source, options: ScanOptions | None = None, *,
    stop: threading.Event | None = None,
) -> Generator[ScanItem, None, None]:
    """Classify the sampled frames of ``source``: a ``FrameResult`` per frame, then a ``VideoSummary``,
    or a ``VideoError`` (after the frames classified before the source broke). Items name the source
    by its masked name (``rtsp://admin:***@cam/live``).

    Raises ``UnsupportedBundleError`` if the bundle has no manipulation-score rule, before reading anything.
    Closing the generator early stops the decode thread; so does setting ``stop`` (from another
    thread: the scan then ends without a summary, and an isolated decoder is killed at once).
    """
    options = options or ScanOptions()
    detector.bundle.require_rule("a video verdict")
    if options.evidence:
        detector.require_evidence()
        if options.isolation is not None:
            raise ValueError(f"{source}: evidence maps need the decoded frames; scan without isolation")
    threshold = detector.threshold if detector.threshold is not None else DEFAULT_SEGMENT_THRESHOLD
    peaks = PeakTracker(threshold) if options.evidence else None
    aggregate(options.aggregate, [])  # an unknown method fails now, not after the whole video
    location = Source.of(source)
    source = location.name
    stop = stop or threading.Event()
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
                if stop.is_set() and items.empty():
                    return
                item = items.get_nowait() if not items.empty() else RuntimeError(f"{source}: the decode thread died")
            if isinstance(item, DeepfakeEdgeError):
                yield VideoError(source, item)
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, tuple)
            if item[0] is _END:
                end: ReadEnd = item[1]
                if not frames:
                    yield VideoError(source, VideoDecodeError(source,
                                                              "no frames were sampled (is --start past the end?)"))
                    return
                summary = replace(summarize(detector, source, frames, duration=end.position, method=options.aggregate,
                                            min_segment=options.min_segment), capped=end.capped)
                yield summary if peaks is None else replace(summary, peak_frames=peaks.for_segments(summary.segments))
                return
            try:
                result = classify_frame(detector, source, *item[:3])
            except DeepfakeEdgeError as exc:  # non-finite scores: the model, not this frame, is broken
                yield VideoError(source, exc)
                return
            if peaks is not None and result.prediction is not None:
                peaks.add(result.time, item[3], result.prediction)
            frames.append(result)
            yield result
    finally:
        stop.set()
        # The worker notices ``stop`` within 0.1 s of a put; a read in progress ends within the read timeout.
        worker.join(timeout=options.sampling.open_timeout_s + options.sampling.read_timeout_s + 1)

