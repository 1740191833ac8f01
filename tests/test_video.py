"""Video scanning: sampled frames through the image path, against PyAV decoding the same frames independently
and transformers + torch classifying them; sampling by pts; rotation; bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SiglipForImageClassification, SiglipImageProcessor
from video_factory import (
    decode_independently,
    frames_of,
    write_audio,
    write_empty_container,
    write_video,
)

from deepfake_edge import Detector
from deepfake_edge.errors import ImageTooLargeError, UnsupportedBundleError, VideoDecodeError, VideoOpenError
from deepfake_edge.video import (
    FrameResult,
    Sampling,
    ScanOptions,
    VideoError,
    VideoReader,
    VideoSummary,
    autorotate,
    sample_frames,
    scan,
    watch,
)
from deepfake_edge.video.rotation import display_matrix

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


def _ticks_reference(times: list[float], fps: float, start: float = 0.0) -> list[float]:
    """For each tick start + k/fps, the first frame time at or after it; each frame once."""
    chosen: list[float] = []
    k = 0
    while start + k / fps <= max(times) + 1e-9:
        tick = start + k / fps
        later = [t for t in times if t >= tick - 1e-6]
        if later and (not chosen or later[0] > chosen[-1]):
            chosen.append(later[0])
        k += 1
    return chosen


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_frames_match_pyav_transformers_and_torch(any_bundle: tuple[str, Path, Path], codec: str,
                                                  tmp_path: Path) -> None:
    _, checkpoint, bundle = any_bundle
    clip = write_video(tmp_path / f"clip.{codec}.mkv", frames_of(40, 72, 96), codec=codec, rate=10)
    detector = Detector.load(bundle, "fp32")
    processor = SiglipImageProcessor.from_pretrained(checkpoint)
    model = SiglipForImageClassification.from_pretrained(checkpoint).eval()
    reference = dict(decode_independently(clip))

    sampled = list(sample_frames(str(clip), Sampling(fps=3)))
    assert [t for t, _ in sampled] == pytest.approx(_ticks_reference(sorted(reference), 3))
    for time_s, image in sampled:
        ours = detector.decode(image)
        expected = processor(images=reference[time_s].to_image(), return_tensors="np")["pixel_values"][0]
        assert ours.dtype == np.float32 and np.array_equal(ours, expected), time_s  # bit-exact

    results = list(scan(detector, str(clip), ScanOptions(Sampling(fps=3))))
    frames = [r for r in results if isinstance(r, FrameResult)]
    assert isinstance(results[-1], VideoSummary) and results[-1].frames == len(frames) == len(sampled)
    inputs = processor(images=[reference[r.time].to_image() for r in frames], return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**inputs).logits.double(), -1).numpy()
    labels = list(detector.labels)
    ours = np.array([[r.scores[label] for label in labels] for r in frames])
    diff = float(np.abs(ours - probs).max())
    print(f"largest frame-score difference vs torch ({codec}, {labels}): {diff:.2e}")
    assert diff < 1e-5
    assert [r.label for r in frames] == [labels[i] for i in probs.argmax(-1)]


@pytest.mark.parametrize("codec", ["ffv1", "h264rgb"])
def test_lossless_frames_are_the_pixels_written(codec: str, tmp_path: Path) -> None:
    written = frames_of(12, 30, 50, seed=3)
    clip = write_video(tmp_path / f"lossless{'.mkv' if codec == 'ffv1' else '.mp4'}", written, codec=codec, rate=4)
    sampled = list(sample_frames(str(clip), Sampling(fps=2)))
    assert [t for t, _ in sampled] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    for (time_s, image), index in zip(sampled, range(0, 12, 2), strict=True):
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), written[index]), time_s


def _shown(stored: np.ndarray, degrees: int, hflip: bool = False, vflip: bool = False) -> np.ndarray:
    """How a display matrix shows a stored frame, from its definition (rotate counter-clockwise, then mirror),
    not from the table of ffmpeg's filters that the runtime follows."""
    shown = np.rot90(stored, k=degrees // 90)
    shown = np.fliplr(shown) if hflip else shown
    return np.flipud(shown) if vflip else shown


@pytest.mark.parametrize("degrees", [90, 180, 270, -90])
def test_rotation_metadata_is_applied(degrees: int, tmp_path: Path) -> None:
    stored = frames_of(3, 24, 40, seed=5)
    clip = write_video(tmp_path / "phone.mp4", stored, codec="h264rgb", rate=5, rotation=(degrees, False, False))
    _, image = next(iter(sample_frames(str(clip))))
    assert np.array_equal(np.asarray(image), _shown(stored[0], degrees))


MIRRORS = [(0, True, False), (0, False, True), (90, True, False), (90, False, True), (180, True, False),
           (270, True, False), (270, False, True), (45, False, False)]


@pytest.mark.parametrize("case", MIRRORS, ids=[f"{d}{'h' * h}{'v' * v}" for d, h, v in MIRRORS])
def test_autorotate_follows_the_display_matrix(case: tuple[int, bool, bool]) -> None:
    """Mirrored matrices, built as FFmpeg's av_display_matrix_flip does, through the runtime's table of ffmpeg's
    filters (files carrying them are read as their rotation part: PyAV's side-data access is unsafe)."""
    degrees, hflip, vflip = case
    stored = frames_of(1, 24, 40, seed=7)[0]
    flip = (-1 if hflip else 1, -1 if vflip else 1, 1)
    matrix = tuple(v * flip[i % 3] for i, v in enumerate(display_matrix(degrees)))
    shown = np.asarray(autorotate(Image.fromarray(stored), matrix))
    if degrees % 90:
        assert shown.shape == stored.shape  # ffmpeg's rotate filter keeps the size
    else:
        assert np.array_equal(shown, _shown(stored, degrees, hflip, vflip))


def test_variable_frame_rate_is_sampled_by_time(tmp_path: Path) -> None:
    # a phone-like clip: bursts and gaps, in a millisecond time base
    pts = [0, 30, 60, 400, 410, 420, 1500, 1510, 2900, 2950, 3000, 3050, 4800]
    clip = write_video(tmp_path / "vfr.mkv", frames_of(len(pts)), codec="ffv1", pts=pts, time_base=Fraction(1, 1000))
    times = [t for t, _ in decode_independently(clip)]
    assert times == pytest.approx([p / 1000 for p in pts])
    for fps in (1.0, 2.0, 0.5):
        got = [t for t, _ in sample_frames(str(clip), Sampling(fps=fps))]
        assert got == pytest.approx(_ticks_reference(times, fps)), fps


def test_frames_without_pts_get_times_from_the_frame_rate(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "raw.h264", frames_of(30), rate=25)  # an elementary stream carries no timestamps
    reference = decode_independently_without_pts(clip)
    assert all(f.pts is None for f in reference)
    got = [t for t, _ in sample_frames(str(clip), Sampling(fps=5))]
    assert got == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def decode_independently_without_pts(path: Path) -> list[object]:
    import av

    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_keyframes_mode_decodes_only_keyframes(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "gop.mp4", frames_of(50), rate=10, gop=10)
    keys = [t for t, f in decode_independently(clip) if f.key_frame]
    assert keys == pytest.approx([0, 1, 2, 3, 4])
    with VideoReader(str(clip), Sampling(keyframes=True, fps=100)) as reader:
        got = [t for t, _ in reader.samples()]
        assert reader.decoded == len(keys)  # the decoder skipped every other frame
        assert reader.position == pytest.approx(5.0)  # the packets were still read to the end
    assert got == pytest.approx(keys)
    assert [t for t, _ in sample_frames(str(clip), Sampling(keyframes=True, fps=0.5))] == pytest.approx([0, 2, 4])


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_sparse_samples_seek_to_keyframes_and_match_linear_decoding(codec: str, tmp_path: Path) -> None:
    path = tmp_path / f"gop.{codec}.mkv" if codec == "vp9" else tmp_path / "gop.mp4"
    clip = write_video(path, frames_of(100, 40, 56), codec=codec, rate=10, gop=10)
    reference = dict(decode_independently(clip))
    with VideoReader(str(clip), Sampling(fps=0.4)) as reader:
        sampled = list(reader.samples())
        decoded = reader.decoded
    assert [t for t, _ in sampled] == pytest.approx([0, 2.5, 5, 7.5])
    for time_s, image in sampled:
        assert np.array_equal(np.asarray(image), np.asarray(reference[time_s].to_image())), time_s
    if codec == "h264":  # the MP4 index lists the keyframes: 1 + 6 + 1 + 6 frames instead of 76
        assert decoded <= 4 * 6 + 2, decoded


def test_only_sampled_frames_are_converted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_video(tmp_path / "c.mp4", frames_of(40), rate=10)
    converted: list[float] = []
    original = VideoReader.image

    def counting(self: VideoReader, time_s: float, frame: object) -> object:
        converted.append(time_s)
        return original(self, time_s, frame)

    monkeypatch.setattr(VideoReader, "image", counting)
    with VideoReader(str(clip), Sampling(fps=1)) as reader:
        assert len(list(reader.samples())) == 4
        assert reader.decoded == 40
    assert converted == pytest.approx([0, 1, 2, 3])


def test_start_duration_and_max_frames(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "long.mp4", frames_of(100), rate=10, gop=25)

    def times(**sampling: float) -> list[float]:
        return [t for t, _ in sample_frames(str(clip), Sampling(**sampling))]  # type: ignore[arg-type]

    assert times(start=3.05) == pytest.approx([3.1, 4.1, 5.1, 6.1, 7.1, 8.1, 9.1])
    assert times(start=2, duration=3) == pytest.approx([2, 3, 4])
    assert times(fps=2, max_frames=3) == pytest.approx([0, 0.5, 1])
    assert times(start=50) == []


def test_frames_over_max_pixels_are_refused_like_images(binary_bundle: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "big.mp4", frames_of(5, 48, 64), rate=5)
    items = list(scan(Detector.load(binary_bundle, max_pixels=48 * 64 - 1), str(clip)))
    assert len(items) == 1 and isinstance(items[0], VideoError)
    assert isinstance(items[0].error, ImageTooLargeError) and "over the limit of 3,071" in str(items[0].error)


def test_summary_aggregates_the_frames(binary_bundle: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "c.mp4", frames_of(60, 40, 40), rate=10)
    detector = Detector.load(binary_bundle, "fp32", threshold=0.5)
    for method in ("mean", "confident"):
        items = list(scan(detector, str(clip), ScanOptions(Sampling(fps=2), aggregate=method)))
        frames, summary = items[:-1], items[-1]
        assert isinstance(summary, VideoSummary) and all(isinstance(f, FrameResult) for f in frames)
        p = [f.scores["fake"] for f in frames]
        assert summary.frames == 12 and summary.duration == pytest.approx(6.0) and summary.aggregate == method
        if method == "mean":
            assert summary.score == pytest.approx(np.mean(p))
        assert summary.label == ("fake" if summary.score >= 0.5 else "real")
        flagged = sum(s >= 0.5 for s in p)
        assert sum(s.frames for s in summary.segments) == flagged
        assert json.loads(json.dumps(summary.to_dict()))["segments"] == [s.to_dict() for s in summary.segments]


def test_closing_a_scan_early_stops_its_decode_thread(binary_bundle: Path, tmp_path: Path) -> None:
    import threading

    clip = write_video(tmp_path / "c.mp4", frames_of(200, 32, 32), rate=25)
    items = scan(Detector.load(binary_bundle), str(clip), ScanOptions(Sampling(fps=25), queue_size=1))
    assert isinstance(next(items), FrameResult)
    items.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("deepfake-edge-decode")]


# -- bad input: a clear error, frames before the damage kept ---------------------------------


def test_truncated_files_keep_the_frames_before_the_damage(binary_bundle: Path, tmp_path: Path) -> None:
    detector = Detector.load(binary_bundle)
    for name, movflags in (("cut.mp4", "faststart"), ("cut.mkv", None)):
        whole = write_video(tmp_path / f"whole-{name}", frames_of(100, 64, 64), rate=10, gop=10, movflags=movflags)
        data = whole.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 2])
        items = list(scan(detector, str(cut), ScanOptions(Sampling(fps=1))))
        frames, last = items[:-1], items[-1]
        assert frames and all(isinstance(f, FrameResult) for f in frames), name
        assert [f.time for f in frames] == pytest.approx(list(range(len(frames))))
        assert isinstance(last, VideoError) and isinstance(last.error, VideoDecodeError), (name, last)
        assert str(last.error).startswith(str(cut))


@pytest.mark.parametrize("case", ["text", "audio", "zero-frame", "empty", "missing", "folder", "fifo"])
def test_bad_sources_give_one_clear_error(case: str, binary_bundle: Path, tmp_path: Path) -> None:
    import os

    path = tmp_path / f"bad-{case}.mp4"
    expected: type[Exception] = VideoDecodeError
    if case == "text":
        path.write_text("not a video\n" * 100)
    elif case == "audio":
        write_audio(path)
    elif case == "zero-frame":
        write_empty_container(path)
    elif case == "empty":
        path.touch()
    elif case == "missing":
        expected = VideoOpenError
    elif case == "folder":
        path.mkdir()
        expected = VideoOpenError
    elif case == "fifo":
        os.mkfifo(path)  # opening it for reading would block without a writer
        expected = VideoOpenError
    items = list(scan(Detector.load(binary_bundle), str(path)))
    assert len(items) == 1 and isinstance(items[0], VideoError), items
    assert type(items[0].error) is expected and str(items[0].error).startswith(str(path))
    body = items[0].to_dict()
    assert body["error"] == expected.__name__ and body["source"] == str(path)


@pytest.mark.parametrize("positive", [None, "deepfake"])
def test_a_bundle_without_a_usable_positive_label_is_refused_before_reading(
    positive: str | None, binary_bundle: Path, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(binary_bundle, tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["decision"] = {"positive_label": positive, "threshold": None}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    detector = Detector.load(bundle)
    missing = str(tmp_path / "never-opened.mp4")
    for name, run in {"scan": lambda: next(scan(detector, missing)),
                      "watch": lambda: next(watch(detector, ["rtsp://127.0.0.1:9/never-opened"]))}.items():
        with pytest.raises(UnsupportedBundleError, match="positive label") as info:
            run()
        assert str(info.value).startswith(f"{bundle}: a "), name
        assert repr(positive) in str(info.value), name


def test_cli_folder_mixing_videos_and_junk(binary_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    write_video(folder / "a.mp4", frames_of(20), rate=10)
    write_video(folder / "sub" / "b.webm", frames_of(15), codec="vp9", rate=10)
    (folder / "junk.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8)
    (folder / "notes.txt").write_text("skipped: not a video suffix")
    (folder / "photo.jpg").write_bytes(b"skipped as well")
    proc = subprocess.run([*CLI, "scan", str(binary_bundle), str(folder), "--fps", "2"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "1 of 3 sources failed" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    by_kind: dict[str, list[dict[str, object]]] = {"frame": [], "summary": [], "error": []}
    for line in lines:
        kind = "error" if "error" in line else "summary" if "aggregate" in line else "frame"
        by_kind[kind].append(line)
    assert [s["source"] for s in by_kind["summary"]] == [str(folder / "a.mp4"), str(folder / "sub" / "b.webm")]
    assert [(s["frames"], s["duration"]) for s in by_kind["summary"]] == [(4, 2.0), (3, 1.5)]
    assert set(by_kind["summary"][0]) == {"source", "frames", "duration", "label", "score", "aggregate", "segments"}
    assert set(by_kind["frame"][0]) == {"source", "time", "label", "scores", "score"}
    assert [e["source"] for e in by_kind["error"]] == [str(folder / "junk.mkv")]
    assert set(by_kind["error"][0]) == {"source", "error", "message"}
    assert len(by_kind["frame"]) == 7


def test_cli_unreachable_url_and_usage_errors(binary_bundle: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "ok.mp4", frames_of(10), rate=10)
    # files are scanned first, then the streams are watched
    proc = subprocess.run([*CLI, "scan", str(binary_bundle), "rtsp://127.0.0.1:9/cam", str(clip), "--timeout", "5",
                           "--reconnect-attempts", "0"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1] == {"source": "rtsp://127.0.0.1:9/cam", "error": "VideoOpenError",
                         "message": "rtsp://127.0.0.1:9/cam: cannot open (Connection refused)"}
    assert lines[-2]["source"] == "rtsp://127.0.0.1:9/cam" and lines[-2]["status"] == "offline"
    assert lines[-3]["source"] == str(clip) and lines[-3]["frames"] == 1
    bad = subprocess.run([*CLI, "scan", str(binary_bundle), str(clip), "--fps", "0"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "--fps" in bad.stderr
