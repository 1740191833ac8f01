"""Watching live sources: the newest frame of each through the model, status changes, alerts, summaries.

Pipeline::

    one LiveReader thread per source (newest sampled frame only, reconnects)
        -> caller's thread: RGB -> Detector.decode -> classify_frame -> FrameResult
                            -> AlertTracker -> Alert start/end
    ... until every source gave up, ``stop`` is set, ``duration`` passed or ``max_frames`` were classified:
        a LiveSummary (or a VideoError) per source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace

from ..credentials import Source
from ..detector import Detector
from ..errors import DeepfakeEdgeError, VideoDecodeError
from ..evidence import DEFAULT_HOTSPOTS
from .alerts import DEFAULT_RULE, Alert, AlertRule, AlertTracker
from .evidence import AlertPeaks
from .frames import Sampling, frame_name
from .live import LiveFrame, LiveReader, Reconnect, StatusChange
from .scan import (
    DEFAULT_SEGMENT_THRESHOLD,
    FrameResult,
    VideoError,
    VideoSummary,
    classify_frame,
    summarize,
)

__all__ = ["LiveItem", "LiveOptions", "LiveSummary", "classify_live", "watch"]

# How often the loop looks at ``stop`` and the deadline while no source has news.
_POLL_S = 0.25


@dataclass(frozen=True)
class LiveOptions:
    """``sampling``: fps and FFmpeg timeouts; ``reconnect``: the backoff; ``alert``: the K/N rule;
    ``aggregate``/``min_segment``: as for files; ``duration``: wall-clock seconds to watch;
    ``max_frames``: classified frames per source before it is done."""

    sampling: Sampling = field(default_factory=Sampling)
    reconnect: Reconnect = field(default_factory=Reconnect)
    alert: tuple[int, int] = DEFAULT_RULE
    aggregate: str = "mean"
    min_segment: float = 0.0
    duration: float | None = None
    max_frames: int | None = None
    evidence: bool = False  # frames and alerts get hotspots; alerts keep their peak frame (``peak_frames``)


@dataclass(frozen=True)
class LiveSummary:
    """A live source's verdict (as for a file) and what the stream did: ``decoded`` frames,
    ``sampled`` (due at the fps), ``dropped`` (replaced by a newer one while the model was busy),
    ``reconnects`` and ``alerts``."""

    summary: VideoSummary
    decoded: int
    sampled: int
    dropped: int
    reconnects: int
    alerts: int

    @property
    def source(self) -> str:
        return self.summary.source

    def to_dict(self) -> dict[str, object]:
        return {**self.summary.to_dict(), "decoded": self.decoded, "sampled": self.sampled, "dropped": self.dropped,
                "reconnects": self.reconnects, "alerts": self.alerts}


LiveItem = FrameResult | StatusChange | Alert | LiveSummary | VideoError


@dataclass
class _Source:
    reader: LiveReader
    alerts: AlertTracker
    frames: list[FrameResult] = field(default_factory=list)
    online: bool = False
    peaks: AlertPeaks | None = None  # with evidence


def watch(
    detector: Detector, sources: Sequence[str | Source], options: LiveOptions | None = None, *,
    stop: threading.Event | None = None,
) -> Iterator[LiveItem]:
    """Classify the newest frame of each live source until it ends; see the module docstring.

    Every item names its source by the masked name (``rtsp://admin:***@cam/live``); the URL
    itself, placeholders filled, reaches only FFmpeg.

    Set ``stop`` (from a signal handler, another thread) to end every source now: each
    still gets its summary. Closing the generator early stops the reader threads.
    """
    options = options or LiveOptions()
    detector.bundle.require_rule("a live watch")
    if options.evidence:
        detector.require_evidence()
    threshold = detector.threshold if detector.threshold is not None else DEFAULT_SEGMENT_THRESHOLD
    rule = AlertRule(*options.alert, threshold=threshold)
    stop = stop or threading.Event()
    wake = threading.Event()
    active = [
        _Source(LiveReader(source, options.sampling, options.reconnect, max_pixels=detector.max_pixels,
                           notify=wake.set), AlertTracker(source.name, rule),
                peaks=AlertPeaks(rule.n, threshold) if options.evidence else None)
        for source in dict.fromkeys(map(Source.of, sources))
    ]
    deadline = None if options.duration is None else time.monotonic() + options.duration
    for item in active:
        item.reader.start()
    try:
        while active and not stop.is_set():
            remaining = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if remaining <= 0:
                break
            wake.wait(remaining)
            wake.clear()
            for item in list(active):
                outcome = yield from _step(detector, item, options)
                if outcome is not None:
                    active.remove(item)
                    # a source done at max_frames still has its reader decoding: a thread left in
                    # FFmpeg when the interpreter exits can crash the process (SIGSEGV, seen under load)
                    item.reader.stop()
                    yield from _finish(detector, item, options, outcome)
        _stop_all(active)
        for item in active:
            yield from _finish(detector, item, options, None)
    finally:
        _stop_all(active)


def _step(
    detector: Detector, item: _Source, options: LiveOptions
) -> Generator[LiveItem, None, DeepfakeEdgeError | float | bool | None]:
    """Report ``item``'s news and classify its newest frame. Returns (via StopIteration) the source's
    outcome once it is done: an error, the end of a finite source (the seconds read), or True
    when ``max_frames`` is reached; None while it goes on."""
    reader = item.reader
    outcome: DeepfakeEdgeError | float | bool | None = None
    for event in reader.events():
        if isinstance(event, StatusChange):
            item.online = event.status == "online"
            yield event
        else:
            outcome = event  # the last event of a reader: its last frame, if any, is still taken below
    frame = reader.take()
    if frame is None:
        return outcome
    try:
        result = classify_live(detector, frame, evidence=item.peaks is not None)
    except DeepfakeEdgeError as exc:  # frames over the pixel limit, non-finite scores: every frame would fail
        return exc
    item.frames.append(result)
    yield result
    if item.peaks is not None and result.prediction is not None:
        item.peaks.add(result.time, frame.image(), result.prediction)
    for alert in item.alerts.update(result.time, result.score):
        yield _with_peak(alert, item.peaks)
    if options.max_frames is not None and len(item.frames) >= options.max_frames:
        return True
    return outcome


def classify_live(detector: Detector, frame: LiveFrame, *, evidence: bool = False) -> FrameResult:
    """A live frame through the image path (RGB, ``Detector.decode``) and the model.

    Raises ``ImageTooLargeError`` over the pixel limit, ``ModelOutputError`` for non-finite scores.
    """
    name = frame_name(frame.source, frame.time)
    if not evidence:
        return classify_frame(detector, frame.source, frame.time, detector.decode(frame.image(), name=name))
    tensor, placement = detector.decode_placed(frame.image(), name=name)
    return classify_frame(detector, frame.source, frame.time, tensor, placement)


def _with_peak(alert: Alert, peaks: AlertPeaks | None) -> Alert:
    """With evidence, the alert carrying its peak frame's hotspots (and the frame, for an overlay)."""
    if peaks is None:
        return alert
    peak = peaks.find(alert.peak_time)
    if alert.event == "end":
        peaks.alert_ended()
    if peak is None:
        return alert
    return replace(alert, hotspots=tuple(peak.prediction.hotspots(DEFAULT_HOTSPOTS)), peak_frame=peak)


def _finish(
    detector: Detector, item: _Source, options: LiveOptions, outcome: DeepfakeEdgeError | float | bool | None
) -> Iterator[LiveItem]:
    reader = item.reader
    yield from (_with_peak(alert, item.peaks) for alert in item.alerts.close())
    if item.online:  # a reader that failed or ended said so already
        reason = "the source ended" if isinstance(outcome, float) else "the watch stopped"
        yield StatusChange(reader.source, "offline", reader.elapsed(), reason=reason)
    if isinstance(outcome, DeepfakeEdgeError):
        yield VideoError(reader.source, outcome)
        return
    if not item.frames:
        yield VideoError(reader.source, VideoDecodeError(reader.source, "no frame was classified before the stop"))
        return
    duration = outcome if isinstance(outcome, float) else reader.elapsed()
    summary = summarize(detector, reader.source, item.frames, duration=duration, method=options.aggregate,
                        min_segment=options.min_segment)
    yield LiveSummary(summary, reader.decoded, reader.sampled, reader.dropped, reader.reconnects, item.alerts.alerts)


def _stop_all(items: Sequence[_Source]) -> None:
    for item in items:  # all told first, so their timeouts run concurrently
        item.reader.stop(timeout=0)
    for item in items:
        item.reader.stop()

