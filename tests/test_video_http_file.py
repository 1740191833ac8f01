"""A video file served over HTTP is read like the same file on disk: every sampled frame, with the file's times.

The server is Python's own ``http.server`` on loopback, in a thread (``HttpFileServer``); the
clip is lossless (FFV1), so the frames FFmpeg decodes from the stream are the file's pixels.
The reference is the file on disk, scanned as a file (itself checked against PyAV and
transformers + torch in test_video.py), and the ticks 0, 1, ... of the sampling rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("av", reason="video tests need the [video] extra (PyAV)")

from video_factory import frames_of, write_video  # noqa: E402

from deepfake_edge import Detector  # noqa: E402
from deepfake_edge.video import FrameResult, Reconnect, Sampling, ScanOptions, StatusChange, scan  # noqa: E402
from deepfake_edge.video.watch import LiveOptions, LiveSummary, watch  # noqa: E402

from live_servers import HttpFileServer  # noqa: E402

CLI = [sys.executable, "-m", "deepfake_edge.cli"]
SECONDS = 12  # decoded in well under the 5 s of clock drift that used to re-anchor the times


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("http")
    clip = write_video(folder / "clip.mkv", frames_of(SECONDS * 10, 48, 64, seed=3), codec="ffv1", rate=10)
    server = HttpFileServer(folder)
    yield clip, server.url("clip.mkv")
    server.close()


def test_watch_reads_an_http_file_like_the_file(binary_bundle: Path, served: tuple[Path, str]) -> None:
    clip, url = served
    detector = Detector.load(binary_bundle, "fp32")
    sampling = Sampling(fps=1, open_timeout_s=10, read_timeout_s=10)
    on_disk = list(scan(detector, str(clip), ScanOptions(sampling)))
    items = list(watch(detector, [url], LiveOptions(sampling=sampling, reconnect=Reconnect(attempts=0), duration=60)))
    frames = [i for i in items if isinstance(i, FrameResult)]
    assert [f.time for f in frames] == [float(t) for t in range(SECONDS)]  # every tick, on the file's clock
    assert [(f.time, f.scores) for f in frames] == [(e.time, e.scores) for e in on_disk[:-1]]
    summary = items[-1]
    assert isinstance(summary, LiveSummary) and (summary.dropped, summary.reconnects) == (0, 0)
    disk = on_disk[-1].to_dict()
    assert {**summary.summary.to_dict(), "source": disk["source"]} == disk
    offline = [i for i in items if isinstance(i, StatusChange) and i.status == "offline"]
    assert [(o.reason, o.time) for o in offline] == [("the source ended", pytest.approx(SECONDS))]
    assert offline[0].time >= frames[-1].time  # it ends after its last frame, not at the wall clock


def test_scan_cli_prints_the_same_frames_for_the_url_and_the_file(binary_bundle: Path,
                                                                  served: tuple[Path, str]) -> None:
    clip, url = served
    runs = {}
    for source in (url, str(clip)):
        proc = subprocess.run([*CLI, "scan", str(binary_bundle), source, "--fps", "1", "--variant", "fp32",
                               "--no-progress", "--reconnect-attempts", "0", "--duration", "60"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        runs[source] = [json.loads(line) for line in proc.stdout.splitlines()]
    frames = {source: [(r["time"], r["scores"]) for r in lines if "scores" in r] for source, lines in runs.items()}
    assert len(frames[url]) == SECONDS and frames[url] == frames[str(clip)]
    summaries = {source: lines[-1] for source, lines in runs.items()}
    keys = ("frames", "duration", "label", "score", "segments")
    assert [summaries[url][k] for k in keys] == [summaries[str(clip)][k] for k in keys]
    offline = [r for r in runs[url] if r.get("status") == "offline"]
    assert [r["time"] for r in offline] == [SECONDS] and offline[0]["time"] >= frames[url][-1][0]
