"""Hostile videos: against a real uvicorn server on loopback (``POST /v1/classify/video``), and in process.

A decoder crash (the child really dies by SIGSEGV), a hang, a real decompression bomb (a tiny
MKV declaring 48 Mpx frames) and a 10-hour clip each fail or shorten that one request; the
service answers the next one correctly. Expected answers come from ``scan`` on the same file.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
pytest.importorskip("av", reason="video needs the [video] extra")

from video_factory import declare_frame_size, frames_of, write_ten_hours, write_video

from deepfake_edge import Detector
from deepfake_edge.serve import ServeConfig
from deepfake_edge.video import FrameResult, Sampling, ScanOptions, VideoError, scan
from deepfake_edge.video.decoding import CHILD_NAME, FAULT_ENV, prepare

from serve_helpers import FAST, metric, poll, running

BODY = "<request body>"
SMALL = (320, 288)  # the bomb's real frame size: each side needs two bytes in the MKV header


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Uploads are spooled here, so leftovers can be counted (the forkserver's folder is made before)."""
    prepare()
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    small = write_video(folder / "small.mkv", frames_of(1, SMALL[1], SMALL[0]), codec="ffv1", rate=1)
    bomb = folder / "bomb.mkv"  # 216 KB declaring an 8000x6000 frame: under the pixel limit, 192 MB decoded
    bomb.write_bytes(declare_frame_size(small.read_bytes(), SMALL, (8000, 6000)))
    huge = folder / "huge.mkv"  # 12000x9000 = 108 Mpx: over the default pixel limit of 100 Mpx
    huge.write_bytes(declare_frame_size(small.read_bytes(), SMALL, (12000, 9000)))
    return {"clip": write_video(folder / "clip.mp4", frames_of(20, 48, 64), rate=10), "bomb": bomb, "huge": huge,
            "ten_hours": write_ten_hours(folder / "ten_hours.mp4")}


@pytest.fixture(scope="module")
def detector(binary_bundle: Path) -> Detector:
    return Detector.load(binary_bundle, "fp32")


def _post(client: httpx.Client, clip: Path, **params: str) -> httpx.Response:
    return client.post("/v1/classify/video", params=params, content=clip.read_bytes(),
                       headers={"content-type": "video/mp4"})


def _expected(detector: Detector, clip: Path, sampling: Sampling) -> dict[str, object]:
    items = [item.to_dict() for item in scan(detector, str(clip), ScanOptions(sampling))]
    return {"frames": [{**i, "source": BODY} for i in items[:-1]], "summary": {**items[-1], "source": BODY}}


def _decoders() -> list[multiprocessing.process.BaseProcess]:
    return [child for child in multiprocessing.active_children() if child.name == CHILD_NAME]


def _answers_correctly(client: httpx.Client, detector: Detector, clip: Path) -> None:
    answer = _post(client, clip)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {k: body[k] for k in ("frames", "summary")} == _expected(detector, clip, Sampling(fps=1))
    assert body["capped"] is False


@pytest.mark.parametrize("fault", ["segv", "hang"])
def test_a_crashing_or_hanging_decoder_fails_that_request_only(
    fault: str, detector: Detector, clips: dict[str, Path], spool_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = dataclasses.replace(FAST, timeout_s=3.0)
    with running(detector, config) as (_, client):
        monkeypatch.setenv(FAULT_ENV, fault)  # read by the service as it starts the decoding child
        failed = _post(client, clips["clip"])
        monkeypatch.delenv(FAULT_ENV)
        if fault == "segv":
            assert failed.status_code == 500
            assert failed.json() == {"error": "decoder_crashed", "type": "VideoDecoderCrashError",
                                     "message": f"{BODY}: the decoding process was killed by SIGSEGV (a decoder crash)"}
        else:
            assert failed.status_code == 504 and failed.json()["error"] == "timeout"
        poll(lambda: not _decoders())  # the hanging child was killed, not left behind
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        _answers_correctly(client, detector, clips["clip"])
        outcome = "decoder_crashed" if fault == "segv" else "timeout"
        assert metric(client, "deepfake_edge_requests_total", endpoint="video", outcome=outcome) == 1
    poll(lambda: not list(spool_dir.iterdir()))


def test_a_decompression_bomb_hits_the_memory_limit_alone(detector: Detector, clips: dict[str, Path],
                                                          spool_dir: Path) -> None:
    with running(detector, dataclasses.replace(FAST, video_memory_mb=256)) as (_, client):
        bomb = _post(client, clips["bomb"])
        assert bomb.status_code == 500, bomb.text
        body = bomb.json()
        assert (body["error"], body["type"]) == ("decoder_out_of_memory", "VideoDecoderMemoryError")
        assert body["message"].startswith(f"{BODY}: decoding needs more than the decoder's memory limit of 256 MB")
        _answers_correctly(client, detector, clips["clip"])  # the same limit fits an ordinary clip
    assert not list(spool_dir.iterdir())


def test_declared_frames_over_the_pixel_limit_are_refused_before_decoding(
    detector: Detector, clips: dict[str, Path], spool_dir: Path,
) -> None:
    # One 108 Mpx frame needs over 400 MB: within a limit of 256 MB, a 413 (not a 500) shows nothing was decoded.
    with running(detector, dataclasses.replace(FAST, video_memory_mb=256)) as (_, client):
        answer = _post(client, clips["huge"])
    assert answer.status_code == 413, answer.text
    assert answer.json() == {"error": "image_too_large", "type": "ImageTooLargeError", "message": (
        f"{BODY}: frames of 12000x9000 = 108,000,000 pixels are over the limit of 100,000,000")}
    assert not list(spool_dir.iterdir())
    items = list(scan(detector, str(clips["huge"])))  # the same refusal, in process
    assert len(items) == 1 and isinstance(items[0], VideoError) and "12000x9000" in str(items[0].error)


def test_a_ten_hour_clip_is_capped_and_says_so(detector: Detector, clips: dict[str, Path], spool_dir: Path) -> None:
    with running(detector, dataclasses.replace(FAST, max_video_seconds=300)) as (_, client):
        answer = _post(client, clips["ten_hours"])
        limits = client.get("/v1/info").json()["limits"]
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["capped"], body["max_video_seconds"], limits["max_video_seconds"]) == (True, 300, 300)
    assert [f["time"] for f in body["frames"]] == [0, 60, 120, 180, 240]  # one frame a minute, up to the cap
    assert {k: body[k] for k in ("frames", "summary")} == _expected(
        detector, clips["ten_hours"], Sampling(fps=1, duration=300))
    assert body["summary"]["duration"] == 300 and body["summary"]["capped"] is True
    uncapped = list(scan(detector, str(clips["ten_hours"]), ScanOptions(Sampling(fps=1, max_frames=7))))
    assert sum(isinstance(i, FrameResult) for i in uncapped) == 7  # the clip does go on past the cap
    assert not list(spool_dir.iterdir())


def test_the_video_limits_are_checked() -> None:
    for bad in ({"max_video_seconds": 0}, {"max_video_seconds": float("inf")}, {"video_memory_mb": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServeConfig(**bad)  # type: ignore[arg-type]


def test_a_stream_without_a_decoder_is_a_clear_error(detector: Detector, tmp_path: Path) -> None:
    """Found by the fuzz test: PyAV gives such a stream no codec object, and reading its name raised AttributeError."""
    clip = write_video(tmp_path / "clip.mkv", frames_of(4, 32, 32), codec="h264").read_bytes()
    unknown = tmp_path / "unknown.mkv"
    unknown.write_bytes(clip.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/QQQ"))  # a codec id FFmpeg does not know
    items = [item.to_dict() for item in scan(detector, str(unknown))]
    assert items == [{"source": str(unknown), "error": "VideoDecodeError",
                      "message": f"{unknown}: no decoder for its video codec (unknown or unsupported)"}]


def test_metadata_that_is_not_utf8_is_a_clear_error(detector: Detector, tmp_path: Path) -> None:
    """Found by the fuzz test: PyAV decodes stream metadata as UTF-8 inside av.open and raised UnicodeDecodeError."""
    import av
    import numpy as np

    path = tmp_path / "titled.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.metadata["title"] = "YYYYYYYY"
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), "rgb24")))
        container.mux(stream.encode())
    path.write_bytes(path.read_bytes().replace(b"YYYYYYYY", bytes(range(0xB0, 0xB8))))  # not UTF-8
    items = [item.to_dict() for item in scan(detector, str(path))]
    assert items == [{"source": str(path), "error": "VideoDecodeError",
                      "message": f"{path}: corrupt metadata (not UTF-8: invalid start byte)"}]


def test_a_cut_off_container_is_a_decode_error_not_an_open_error(detector: Detector, tmp_path: Path) -> None:
    """Found by the fuzz test: FFmpeg opens an MKV cut inside its header with EIO, which read as 'cannot open'."""
    clip = write_video(tmp_path / "clip.mkv", frames_of(12, 32, 32), codec="vp9", rate=6, gop=4).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip[:200])
    items = [item.to_dict() for item in scan(detector, str(cut))]
    assert items == [{"source": str(cut), "error": "VideoDecodeError",
                      "message": f"{cut}: a cut-off or corrupt container (Input/output error)"}]
