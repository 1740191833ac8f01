"""``scan --evidence DIR``: hotspots on frame lines, the peak frame of each segment drawn.

Frames are decoded independently with PyAV (video_factory.decode_independently) and classified
with ``Detector.predict_one``: the reference for the hotspots and for which frame is the peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av", reason="video scanning needs the [video] extra (PyAV)")

from video_factory import decode_independently, frames_of, write_video

from deepfake_edge import Detector
from deepfake_edge.video import FrameResult, Sampling, ScanOptions, VideoSummary, scan

from old_bundles import old_copy

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


def _threshold(detector: Detector, clip: Path) -> float:
    """A threshold between the frames' P(fake), so that the clip has segments and gaps."""
    p = [detector.predict_one(frame.to_image()).scores["fake"] for _, frame in decode_independently(clip)]
    return float(np.median(p))


def test_scan_keeps_each_segments_peak_frame(binary_bundle: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "c.mp4", frames_of(20, 40, 56), codec="h264rgb", rate=10)
    threshold = _threshold(Detector.load(binary_bundle, "fp32"), clip)
    detector = Detector.load(binary_bundle, "fp32", threshold=threshold)
    items = list(scan(detector, str(clip), ScanOptions(Sampling(fps=10), evidence=True)))
    frames, summary = items[:-1], items[-1]
    assert isinstance(summary, VideoSummary) and summary.segments
    reference = {round(t, 3): detector.predict_one(f.to_image(), evidence=True) for t, f in decode_independently(clip)}
    for frame in frames:
        assert isinstance(frame, FrameResult) and frame.hotspots is not None
        expected = reference[round(frame.time, 3)].hotspots(3)
        assert [h.to_dict() for h in frame.hotspots] == [h.to_dict() for h in expected]
    assert len(summary.peak_frames) == len(summary.segments)
    for segment, peak in zip(summary.segments, summary.peak_frames, strict=True):
        inside = [f for f in frames if segment.start <= f.time <= segment.end]
        best = max(inside, key=lambda f: f.scores["fake"])
        assert peak is not None and peak.time == best.time and peak.score == segment.max_score
    plain = list(scan(detector, str(clip), ScanOptions(Sampling(fps=10))))
    assert all(getattr(item, "hotspots", None) is None for item in plain)
    assert [i.to_dict() for i in plain[:-1]] == [{k: v for k, v in i.to_dict().items() if k != "hotspots"}
                                                 for i in frames]


def test_cli_writes_the_peak_overlays(binary_bundle: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", frames_of(20, 40, 56), codec="h264rgb", rate=10)
    threshold = _threshold(Detector.load(binary_bundle, "fp32"), clip)
    out = tmp_path / "evidence"
    proc = subprocess.run([*CLI, "scan", str(binary_bundle), str(clip), "--variant", "fp32", "--fps", "10",
                           "--threshold", str(threshold), "--evidence", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all("hotspots" in line for line in lines[:-1])
    segments = lines[-1]["segments"]
    assert segments and all(Path(s["evidence"]).parent == out for s in segments)
    for segment in segments:
        peak = next(line for line in lines[:-1] if round(line["time"], 3) == segment["peak_time"])
        assert peak["scores"]["fake"] == segment["max_score"] and segment["hotspots"] == peak["hotspots"]
        with Image.open(segment["evidence"]) as png:
            assert png.width == 56 and png.height > 40  # the frame, and the legend below it
    old = old_copy(binary_bundle, tmp_path / "old")
    refused = subprocess.run([*CLI, "scan", str(old), str(clip), "--evidence", str(out), "--no-progress"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 4 and "re-export" in refused.stderr and not refused.stdout
