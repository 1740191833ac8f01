"""Video files for the tests, written with PyAV's encoders (its wheels carry libx264, libvpx and ffv1)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="video tests need the [video] extra (PyAV)")

# codec -> (pix_fmt, container suffix, encoder options)
CODECS = {
    "h264": ("libx264", "yuv420p", ".mp4", {"preset": "ultrafast"}),
    "vp9": ("libvpx-vp9", "yuv420p", ".webm", {"deadline": "realtime", "cpu-used": "8"}),
    "ffv1": ("ffv1", "bgr0", ".mkv", {}),  # lossless: decoded pixels equal the arrays written
    # lossless, keeps the display matrix
    "h264rgb": ("libx264rgb", "rgb24", ".mp4", {"qp": "0", "preset": "ultrafast"}),
}


def frames_of(count: int, height: int = 48, width: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Distinct RGB frames: smooth gradients plus noise, so every frame scores differently."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(count):
        base = np.stack([(xx * 4 + i * 17) % 256, (yy * 5 + i * 29) % 256, (xx + yy + i * 43) % 256], axis=-1)
        out.append(np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8))
    return out


def write_video(
    path: Path, frames: Sequence[np.ndarray], *, codec: str = "h264", rate: int = 10,
    pts: Sequence[int] | None = None, time_base: Fraction | None = None, rotation: tuple[int, bool, bool] | None = None,
    gop: int | None = None, movflags: str | None = None,
) -> Path:
    """Encode ``frames`` (HWC uint8 RGB). ``pts`` in ``time_base`` units (default: one per frame at ``rate``);
    ``rotation`` = (counter-clockwise degrees, hflip, vflip) as display-matrix side data."""
    encoder, pix_fmt, _, options = CODECS[codec]
    options = dict(options)
    if gop is not None:
        options.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
    container_options = {"movflags": movflags} if movflags else {}
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(encoder, rate=rate, options=options)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1], vflip=rotation[2])
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, "rgb24")
            frame.pts = pts[i] if pts is not None else i
            if time_base is not None:
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio(path: Path, seconds: float = 1.0) -> Path:
    """An audio-only file (AAC in MP4)."""
    rate = 16000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = np.zeros((1, int(rate * seconds)), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_empty_container(path: Path) -> Path:
    """An MP4 with a video stream declared and no frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        container.start_encoding()
    return path


def decode_independently(path: Path) -> list[tuple[float, object]]:
    """(time from pts, av.VideoFrame) of every frame, with PyAV's defaults: the reference decode."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        return [(float((f.pts - start) * stream.time_base), f) for f in container.decode(stream)]


def declare_frame_size(mkv: bytes, size: tuple[int, int], declared: tuple[int, int]) -> bytes:
    """An MKV whose header declares ``declared`` (width, height) for frames encoded at ``size``: the
    PixelWidth (0xB0) and PixelHeight (0xBA) elements, 2-byte values (so each side is 256..65535)."""
    patched = mkv
    for element, old, new in ((b"\xb0\x82", size[0], declared[0]), (b"\xba\x82", size[1], declared[1])):
        before = element + old.to_bytes(2, "big")
        assert patched.count(before) == 1, f"expected one {before!r} element in the MKV header"
        patched = patched.replace(before, element + new.to_bytes(2, "big"))
    return patched


def write_ten_hours(path: Path) -> Path:
    """A 10-hour H.264 clip of 16x16 frames, one a minute (600 frames, about 90 KB)."""
    return write_video(path, frames_of(600, 16, 16), rate=1, pts=[60 * i for i in range(600)],
                       time_base=Fraction(1, 1))
