"""``POST /v1/classify/video`` against a real uvicorn server on loopback, like the image endpoints.

Expected answers come from ``deepfake_edge.video.scan`` on the same file (itself checked
against PyAV and transformers + torch in test_video.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
pytest.importorskip("av", reason="video needs the [video] extra")

from video_factory import frames_of, write_video  # noqa: E402

from deepfake_edge import Detector  # noqa: E402
from deepfake_edge.serve import ServeConfig  # noqa: E402
from deepfake_edge.video import Sampling, ScanOptions, scan  # noqa: E402
from deepfake_edge.video.decoding import prepare  # noqa: E402

from serve_helpers import FAST, poll, raw_connection, read_response, running, upload_headers  # noqa: E402


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Uploads are spooled here (the server runs in this process), so leftovers can be counted.

    The video decoders' forkserver is started first: its socket's folder (``pymp-*``) is the
    process's, made in the temporary folder of the moment and removed at exit."""
    prepare()
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("clips") / "clip.mp4", frames_of(40, 48, 64), rate=10)


def _expected(detector: Detector, clip: Path, fps: float) -> list[dict[str, object]]:
    return [item.to_dict() for item in scan(detector, str(clip), ScanOptions(Sampling(fps=fps)))]


def test_raw_and_multipart_uploads_give_the_scan(binary_bundle: Path, clip: Path, spool_dir: Path) -> None:
    detector = Detector.load(binary_bundle, "fp32")
    expected = _expected(detector, clip, 2)
    with running(detector) as (_, client):
        raw = client.post("/v1/classify/video?fps=2", content=clip.read_bytes(), headers={"content-type": "video/mp4"})
        part = client.post("/v1/classify/video", params={"fps": "2"},
                           files={"file": ("holiday.mp4", clip.read_bytes(), "video/mp4")})
    for answer, name in ((raw, "<request body>"), (part, "holiday.mp4")):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["frames"] == [{**e, "source": name} for e in expected[:-1]]
        assert body["summary"] == {**expected[-1], "source": name}
        assert body["summary"]["frames"] == 8 and body["variant"] == "fp32"
    assert list(spool_dir.iterdir()) == []


def test_refusals_use_the_image_endpoints_codes(binary_bundle: Path, clip: Path, spool_dir: Path) -> None:
    detector = Detector.load(binary_bundle, "fp32")
    with running(detector, ServeConfig(max_batch=8, max_wait_ms=2, max_body_bytes=50_000)) as (_, client):
        wrong_type = client.post("/v1/classify/video", content=clip.read_bytes(), headers={"content-type": "image/png"})
        assert wrong_type.status_code == 415 and wrong_type.json()["error"] == "unsupported_media_type"
        big = client.post("/v1/classify/video", content=b"\0" * 60_000, headers={"content-type": "video/mp4"})
        assert big.status_code == 413 and big.json()["error"] == "body_too_large"
        junk = client.post("/v1/classify/video", content=b"not a video" * 100, headers={"content-type": "video/mp4"})
        assert junk.status_code == 400 and junk.json()["type"] == "VideoDecodeError"
        assert junk.json()["message"].startswith("<request body>: not a recognised video format")
        bad_fps = client.post("/v1/classify/video?fps=0", content=clip.read_bytes(),
                              headers={"content-type": "video/mp4"})
        assert bad_fps.status_code == 400 and "fps" in bad_fps.json()["message"]
    assert list(spool_dir.iterdir()) == []


def test_frames_over_the_pixel_limit_are_413(binary_bundle: Path, clip: Path, spool_dir: Path) -> None:
    detector = Detector.load(binary_bundle, "fp32", max_pixels=1000)
    with running(detector, FAST) as (_, client):
        answer = client.post("/v1/classify/video", content=clip.read_bytes(), headers={"content-type": "video/mp4"})
    assert answer.status_code == 413 and answer.json()["error"] == "image_too_large"
    assert list(spool_dir.iterdir()) == []


def test_slow_upload_gets_408_and_leaves_no_file(binary_bundle: Path, clip: Path, spool_dir: Path) -> None:
    data = clip.read_bytes()
    config = ServeConfig(max_batch=8, max_wait_ms=2, read_timeout_s=0.5)
    with running(Detector.load(binary_bundle, "fp32"), config) as (url, _), raw_connection(url) as slow:
        head = upload_headers(len(data)).replace(b"/v1/classify ", b"/v1/classify/video ")
        head = head.replace(b"image/png", b"video/mp4")
        slow.sendall(head + data[:1000])  # ...and then nothing more
        answer = read_response(slow)
    assert answer.startswith("HTTP/1.1 408"), answer
    assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"] == "read_timeout"
    assert list(spool_dir.iterdir()) == []


def test_request_timeout_is_504_and_the_file_is_still_removed(binary_bundle: Path, spool_dir: Path,
                                                              tmp_path: Path) -> None:
    long_clip = write_video(tmp_path / "long.mp4", frames_of(600, 48, 64), rate=25)
    config = ServeConfig(max_batch=8, max_wait_ms=2, timeout_s=0.2)
    with running(Detector.load(binary_bundle, "fp32"), config) as (_, client):
        answer = client.post("/v1/classify/video?fps=25", content=long_clip.read_bytes(),
                             headers={"content-type": "video/mp4"})
        assert answer.status_code == 504 and answer.json()["error"] == "timeout"
        poll(lambda: not list(spool_dir.iterdir()))  # the scan stops at its next frame and removes the file
