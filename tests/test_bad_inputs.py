"""Decoding is safe: every bad input gets a documented error naming it."""

from __future__ import annotations

import io
import resource
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge import ImageDecodeError, ImageReadError, ImageTooLargeError
from deepfake_edge.images import load_rgb

from image_factory import animated_gif, png_claiming_size


def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "error", "message"),
    [
        ("empty.jpg", b"", ImageDecodeError, "empty"),
        ("text.jpg", b"hello, I am plain text\n" * 20, ImageDecodeError, "not a recognised image format"),
        ("page.html", b"<!doctype html><html><body>hi</body></html>", ImageDecodeError, "not a recognised"),
        ("doc.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", ImageDecodeError, "not a recognised"),
        ("truncated.jpg", _jpeg()[:400], ImageDecodeError, "truncated"),
        ("random.bin", np.random.default_rng(1).bytes(4096), ImageDecodeError, "not a recognised"),
        ("bomb.png", png_claiming_size(70_000, 70_000), ImageTooLargeError, r"4,?900,?000,?000 pixels"),
    ],
)
def test_bad_files_raise_documented_errors(tmp_path: Path, name: str, data: bytes, error: type, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for source in (path, data):
        if source == b"":
            continue
        with pytest.raises(error, match=message) as info:
            load_rgb(source)
        assert info.value.source == (str(path) if source is path else "<bytes #0>")


def test_bomb_is_refused_before_decoding() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError):
        load_rgb(png_claiming_size(60_000, 60_000), max_pixels=10_000_000)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 50_000, "peak RSS grew by more than 50 MB: the bomb was decoded"


def test_pixel_limit_is_configurable() -> None:
    data = _jpeg((300, 200))
    with pytest.raises(ImageTooLargeError, match="over the limit of 50,000"):
        load_rgb(data, max_pixels=50_000)
    assert load_rgb(data, max_pixels=None).size == (300, 200)


def test_animated_image_uses_first_frame() -> None:
    data, first = animated_gif()
    got = load_rgb(data)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(first.convert("RGB")))


def test_directory_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="is a directory"):
        load_rgb(tmp_path)
    with pytest.raises(ImageReadError, match="No such file"):
        load_rgb(tmp_path / "nope.png")


def test_extreme_aspect_ratio_decodes(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    Image.new("RGB", (1, 20000), (10, 20, 30)).save(path)
    assert load_rgb(path).size == (1, 20000)


def test_caller_file_object_is_left_open() -> None:
    stream = io.BytesIO(_jpeg())
    load_rgb(stream)
    assert not stream.closed


class _Pipe(io.RawIOBase):
    """A non-seekable stream (like a socket or pipe) that would never end on its own."""

    def __init__(self, head: bytes) -> None:
        self.head, self.sent = head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = (self.head[self.sent :] or b"\0" * len(buffer))[: len(buffer)]
        buffer[: len(chunk)] = chunk
        self.sent += len(chunk)
        return len(chunk)


def test_non_seekable_stream_is_read_up_to_a_cap() -> None:
    """A pipe is read whole (PIL needs to seek), but never past what an image within the pixel limit needs."""
    small = io.BufferedReader(io.BytesIO(_jpeg()))
    small.seekable = lambda: False  # type: ignore[method-assign]
    assert load_rgb(small).size == (64, 48)
    endless = _Pipe(_jpeg())
    with pytest.raises(ImageTooLargeError, match="stream is larger than"):
        load_rgb(endless, max_pixels=1_000_000)
    assert endless.sent <= 8 * 1_000_000 + 2 * (1 << 20)  # stopped at the cap, not at the end of memory
