"""Video files and streams: sampled frames through the image path, per-video verdicts.

Needs the [video] extra (PyAV). ``import deepfake_edge`` never imports this package;
PyAV itself is imported only when a source is opened.

>>> from deepfake_edge import Detector                          # doctest: +SKIP
>>> from deepfake_edge.video import scan, ScanOptions, Sampling  # doctest: +SKIP
>>> for item in scan(Detector.load("bundle/"), "clip.mp4", ScanOptions(Sampling(fps=2))):  # doctest: +SKIP
...     print(item.to_dict())

Live streams (``rtsp://``, ``/dev/video0``, ...): :func:`watch` yields frame results, status
changes, alerts and, at the end, a summary per source; set ``stop`` to end it.

>>> from deepfake_edge.video import watch, LiveOptions  # doctest: +SKIP
>>> for item in watch(Detector.load("bundle/"), ["rtsp://cam/stream"], LiveOptions(duration=60)):  # doctest: +SKIP
...     print(item.to_dict())
"""

from __future__ import annotations

from .aggregate import (
    AGGREGATES,
    Segment,
    aggregate,
    confident_score,
    mean_score,
    segments,
)
from .alerts import Alert, AlertRule, AlertTracker
from .frames import (
    VIDEO_SUFFIXES,
    Sampling,
    TimeSampler,
    VideoReader,
    frame_name,
    is_url,
    sample_frames,
)
from .live import LiveFrame, LiveReader, Reconnect, StatusChange, is_live
from .rotation import autorotate
from .scan import (
    EventSink,
    FrameResult,
    ScanItem,
    ScanOptions,
    VideoError,
    VideoSummary,
    classify_frame,
    scan,
    summarize,
)
from .watch import LiveItem, LiveOptions, LiveSummary, classify_live, watch

__all__ = [
    "AGGREGATES",
    "VIDEO_SUFFIXES",
    "Alert",
    "AlertRule",
    "AlertTracker",
    "EventSink",
    "FrameResult",
    "LiveFrame",
    "LiveItem",
    "LiveOptions",
    "LiveReader",
    "LiveSummary",
    "Reconnect",
    "Sampling",
    "ScanItem",
    "ScanOptions",
    "Segment",
    "StatusChange",
    "TimeSampler",
    "VideoError",
    "VideoReader",
    "VideoSummary",
    "aggregate",
    "autorotate",
    "classify_frame",
    "classify_live",
    "confident_score",
    "frame_name",
    "is_live",
    "is_url",
    "mean_score",
    "sample_frames",
    "scan",
    "segments",
    "summarize",
    "watch",
]
