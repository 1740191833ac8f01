"""Video files and streams: sampled frames through the image path, per-video verdicts.

Needs the [video] extra (PyAV). ``import deepfake_edge`` never imports this package;
PyAV itself is imported only when a source is opened.

>>> from deepfake_edge import Detector                          # doctest: +SKIP
>>> from deepfake_edge.video import scan, ScanOptions, Sampling  # doctest: +SKIP
>>> for item in scan(Detector.load("bundle/"), "clip.mp4", ScanOptions(Sampling(fps=2))):  # doctest: +SKIP
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
from .frames import (
    VIDEO_SUFFIXES,
    Sampling,
    TimeSampler,
    VideoReader,
    frame_name,
    is_url,
    sample_frames,
)
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

__all__ = [
    "AGGREGATES", "VIDEO_SUFFIXES", "EventSink", "FrameResult", "Sampling", "ScanItem", "ScanOptions", "Segment",
    "TimeSampler", "VideoError", "VideoReader", "VideoSummary", "aggregate", "autorotate", "classify_frame",
    "confident_score", "frame_name", "is_url", "mean_score", "sample_frames", "scan", "segments", "summarize",
]
