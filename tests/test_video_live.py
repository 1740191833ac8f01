"""Live streams against a real RTSP server (GStreamer) on loopback: frames, reconnects, timeouts.

Every watch is bounded by ``LiveOptions.duration``, so a reader that never reports ends the
test with a wrong outcome instead of hanging it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="live-stream tests need the [video] extra (PyAV)")

from deepfake_edge import Detector
from deepfake_edge.errors import VideoOpenError, VideoSourceError, VideoTimeoutError
from deepfake_edge.video import FrameResult, Sampling, ScanOptions, VideoError, scan
from deepfake_edge.video.live import LiveReader, Reconnect, StatusChange, is_live
from deepfake_edge.video.watch import (
    LiveItem,
    LiveOptions,
    LiveSummary,
    classify_live,
    watch,
)

from live_servers import (
    HttpFileServer,
    RtspServer,
    SilentListener,
    free_port,
    make_h264,
    wait_for,
)

FPS = 10  # of the served clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_h264(tmp_path_factory.mktemp("live") / "clip.mp4", seconds=60, fps=FPS)


@pytest.fixture()
def rtsp(clip: Path) -> Iterator[RtspServer]:
    server = RtspServer(clip).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def detector(binary_bundle: Path) -> Detector:
    return Detector.load(binary_bundle, "fp32")


@pytest.fixture(scope="module")
def file_frames(clip: Path) -> list[np.ndarray]:
    """Every frame of the served clip, decoded independently (PyAV on the file, not the stream)."""
    import av

    with av.open(str(clip)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def torch_scores(binary_checkpoint: Path, file_frames: list[np.ndarray]) -> np.ndarray:
    """P(labels) of every file frame by transformers + torch: the reference for live frame results."""
    import torch
    from transformers import SiglipForImageClassification, SiglipImageProcessor

    model = SiglipForImageClassification.from_pretrained(binary_checkpoint).eval()
    processor = SiglipImageProcessor.from_pretrained(binary_checkpoint)
    with torch.no_grad():
        logits = model(**processor(images=file_frames, return_tensors="pt")).logits
    return torch.softmax(logits.double(), -1).numpy()


def options(**kwargs: object) -> LiveOptions:
    sampling = Sampling(fps=5, open_timeout_s=5, read_timeout_s=3)
    reconnect = Reconnect(attempts=5, initial_s=0.5, max_s=2)
    return LiveOptions(**{"sampling": sampling, "reconnect": reconnect, "duration": 90.0, **kwargs})  # type: ignore[arg-type]


def test_live_sources() -> None:
    live = ["rtsp://cam/1", "RTSPS://cam", "http://cam/mjpg", "udp://@:1234", "tcp://h:1", "/dev/video0"]
    assert all(map(is_live, live))
    assert not any(map(is_live, ["clip.mp4", "/data/rtsp.mp4", "videos/"]))


def test_reconnects_after_the_server_restarts(detector: Detector, rtsp: RtspServer, torch_scores: np.ndarray,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Kill the camera mid-stream, bring it back on the same port: offline, online, frames resume."""
    stop = threading.Event()
    items: list[tuple[float, LiveItem]] = []
    start = time.monotonic()
    restarted = False
    for item in watch(detector, [rtsp.url], options(), stop=stop):
        items.append((time.monotonic() - start, item))
        frames = [i for _, i in items if isinstance(i, FrameResult)]
        statuses = [i for _, i in items if isinstance(i, StatusChange)]
        if len(frames) == 4 and rtsp.proc is not None and not restarted and len(statuses) == 1:
            rtsp.kill()
        if not restarted and any(s.status == "offline" for s in statuses):
            rtsp.start()
            restarted = True
        if restarted and len(frames) >= 4 + 4 and statuses[-1].status == "online":
            stop.set()
    kinds = [i.status for _, i in items if isinstance(i, StatusChange)]
    assert kinds == ["online", "offline", "online", "offline"], kinds  # the last: the watch stopped
    offline = next(i for _, i in items if isinstance(i, StatusChange) and i.status == "offline")
    online_again = [i for _, i in items if isinstance(i, StatusChange) and i.status == "online"][1]
    assert offline.reason == "the stream ended" and online_again.reconnects >= 1
    frames = [i for _, i in items if isinstance(i, FrameResult)]
    resumed = [f for f in frames if f.time >= online_again.time]
    assert len(resumed) >= 4
    assert [f.time for f in frames] == sorted(f.time for f in frames)
    summary = items[-1][1]
    assert isinstance(summary, LiveSummary) and summary.reconnects == online_again.reconnects
    assert summary.summary.frames == len(frames)
    # every score is that of a frame of the clip, by transformers + torch
    for frame in frames:
        p = np.array([frame.scores[label] for label in detector.labels])
        assert np.abs(torch_scores - p).max(axis=1).min() < 1e-5, frame
    with capsys.disabled():  # the observed timeline, for the record (not asserted)
        timeline = [(round(t, 2), i.to_dict()) for t, i in items if isinstance(i, StatusChange)]
        print("\nreconnect timeline (s since start, line):", *timeline, sep="\n  ")


def test_frames_are_the_served_frames_and_scores_match_torch(
    detector: Detector, rtsp: RtspServer, file_frames: list[np.ndarray], torch_scores: np.ndarray
) -> None:
    """A received frame is bit-identical to the file's frame decoded independently, and its
    live result equals transformers + torch on that frame."""
    reader = LiveReader(rtsp.url, Sampling(fps=FPS, open_timeout_s=10, read_timeout_s=5)).start()
    index = {frame.tobytes(): i for i, frame in enumerate(file_frames)}
    matched: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(matched) < 8 and time.monotonic() < deadline:
            frame = reader.take()
            if frame is None:
                time.sleep(0.05)
                continue
            pixels = np.asarray(frame.image())
            assert pixels.tobytes() in index, f"frame at {frame.time} s is none of the clip's frames"
            i = index[pixels.tobytes()]
            result = classify_live(detector, frame)
            assert np.array([result.scores[label] for label in detector.labels]) == pytest.approx(
                torch_scores[i], abs=1e-5)
            matched.append(i)
    finally:
        assert reader.stop()
    assert len(matched) == 8 and matched == sorted(matched)


def test_only_the_newest_frame_is_kept(rtsp: RtspServer) -> None:
    reader = LiveReader(rtsp.url, Sampling(fps=FPS, open_timeout_s=10, read_timeout_s=5)).start()
    try:
        wait_for(lambda: reader.sampled >= 25 or not reader.running, 60, "25 sampled frames")
    finally:
        assert reader.stop()
    newest = reader.take()
    assert newest is not None and reader.take() is None
    assert reader.dropped == reader.sampled - 1  # every sampled frame but the one kept


def test_a_stall_times_out_and_reconnects(detector: Detector, rtsp: RtspServer,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """SIGSTOP the server: the connection stays open and silent; the read timeout ends the session."""
    stop = threading.Event()
    statuses: list[StatusChange] = []
    frames = 0
    opts = options(sampling=Sampling(fps=5, open_timeout_s=3, read_timeout_s=2))
    for item in watch(detector, [rtsp.url], opts, stop=stop):
        frames += isinstance(item, FrameResult)
        if isinstance(item, StatusChange):
            statuses.append(item)
            if item.status == "offline":
                rtsp.resume()
            elif len(statuses) == 3:
                stop.set()
        if frames == 3 and len(statuses) == 1:
            rtsp.pause()
    assert [s.status for s in statuses[:3]] == ["online", "offline", "online"]
    assert "timeout" in (statuses[1].reason or "")
    with capsys.disabled():  # the observed timeline, for the record (not asserted)
        print("\nstall timeline (lines):", *(s.to_dict() for s in statuses), sep="\n  ")


def test_a_silent_server_times_out(detector: Detector) -> None:
    listener = SilentListener()
    try:
        opts = options(sampling=Sampling(open_timeout_s=1.5, read_timeout_s=1.5), reconnect=Reconnect(attempts=0))
        items = list(watch(detector, [f"rtsp://127.0.0.1:{listener.port}/cam"], opts))
    finally:
        listener.close()
    assert listener.accepted, "the client never connected"
    assert [type(i) for i in items] == [StatusChange, VideoError]
    error = items[-1].error  # type: ignore[union-attr]
    assert isinstance(error, VideoTimeoutError) and "open timeout of 1.5 s" in str(error)


@pytest.mark.parametrize("server", ["silent", "refused"])
def test_a_url_scanned_as_a_file_names_a_silent_or_refused_server(detector: Detector, server: str) -> None:
    """``scan`` (the API, not the live mode) on an RTSP URL: RTSP's demuxer reports FFmpeg's timeout as
    "invalid data", which must not come out as a format problem."""
    listener = SilentListener() if server == "silent" else None
    url = f"rtsp://127.0.0.1:{listener.port if listener else free_port()}/cam"
    items: list[object] = []
    sampling = Sampling(open_timeout_s=1.5, read_timeout_s=1.5)
    # a thread bounds the test should the timeout ever stop working (a hang is then a failure)
    thread = threading.Thread(target=lambda: items.extend(scan(detector, url, ScanOptions(sampling))), daemon=True)
    try:
        thread.start()
        thread.join(60)
    finally:
        if listener:
            listener.close()
    assert not thread.is_alive(), "scan did not return"
    assert len(items) == 1 and isinstance(items[0], VideoError), items
    error = items[0].error
    if listener:
        assert listener.accepted, "the client never connected"
        assert isinstance(error, VideoTimeoutError)
        assert str(error) == f"{url}: no answer from the server within the open timeout of 1.5 s"
    else:
        assert isinstance(error, VideoOpenError) and str(error) == f"{url}: cannot open (Connection refused)"


@pytest.mark.parametrize("host", ["127.0.0.1:{free}", "192.0.2.1:554"])  # a closed port; TEST-NET-1 (no route)
def test_an_unreachable_host_errors(detector: Detector, host: str) -> None:
    url = f"rtsp://{host.format(free=free_port())}/cam"
    opts = options(sampling=Sampling(open_timeout_s=2, read_timeout_s=2),
                   reconnect=Reconnect(attempts=1, initial_s=0.1))
    items = list(watch(detector, [url], opts))
    assert [type(i) for i in items] == [StatusChange, VideoError]
    error = items[-1].error  # type: ignore[union-attr]
    assert isinstance(error, (VideoOpenError, VideoTimeoutError)), error
    assert str(error).startswith(url) and "gave up after 1 reconnect attempt" in str(error)


def test_a_stream_that_never_returns_errors_after_the_retries(detector: Detector, rtsp: RtspServer) -> None:
    items: list[LiveItem] = []
    opts = options(reconnect=Reconnect(attempts=2, initial_s=0.2, max_s=0.5))
    for item in watch(detector, [rtsp.url], opts):
        items.append(item)
        if sum(isinstance(i, FrameResult) for i in items) == 3:
            rtsp.kill()
    assert sum(isinstance(i, FrameResult) for i in items) >= 3  # classified before the stream died: still reported
    outline = [getattr(i, "status", type(i).__name__) for i in items if isinstance(i, (StatusChange, VideoError))]
    assert outline == ["online", "offline", "VideoError"]
    error = items[-1].error  # type: ignore[union-attr]
    assert isinstance(error, VideoSourceError) and "gave up after 2 reconnect attempts" in str(error)


def test_a_file_over_http_is_read_like_a_file(detector: Detector, tmp_path: Path) -> None:
    """A progressive HTTP file declares its duration: every sampled frame is classified (nothing
    dropped, no reconnect), its end ends the source, and the scores are those of scanning the file."""
    clip = make_h264(tmp_path / "short.mp4", seconds=4, fps=FPS)
    server = HttpFileServer(tmp_path)
    try:
        items = list(watch(detector, [server.url("short.mp4")], options(sampling=Sampling(fps=2))))
    finally:
        server.close()
    expected = [i for i in scan(detector, str(clip), ScanOptions(Sampling(fps=2))) if isinstance(i, FrameResult)]
    frames = [i for i in items if isinstance(i, FrameResult)]
    assert [f.scores for f in frames] == [e.scores for e in expected] and len(frames) == 8
    assert [i.to_dict()["reason"] for i in items if isinstance(i, StatusChange) and i.status == "offline"] == [
        "the source ended"]
    summary = items[-1]
    assert isinstance(summary, LiveSummary) and (summary.dropped, summary.reconnects) == (0, 0)
    assert summary.summary.duration == pytest.approx(4.0)
