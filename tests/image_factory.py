"""Test images in every PIL mode users meet, encoded as real files.

Each is built from a real photo (shipped in a wheel) so resampling sees natural
texture, then saved in the format that produces that mode on decode.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from deepfake_edge.export.sample_images import synthetic_image, with_sensor_noise


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def mode_samples(photo: Path) -> dict[str, bytes]:
    """name -> encoded file bytes; decoding each gives the mode in its name."""
    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    rgb = rgb.resize((157, 103), Image.Resampling.BILINEAR)  # non-square, odd
    gray = rgb.convert("L")
    alpha = Image.linear_gradient("L").resize(rgb.size)
    palette = rgb.quantize(colors=64)
    palette.info["transparency"] = 3
    samples = {
        "RGB.png": _encode(rgb, "PNG"),
        "RGB.jpg": _encode(rgb, "JPEG", quality=90),
        "L.png": _encode(gray, "PNG"),
        "LA.png": _encode(Image.merge("LA", (gray, alpha)), "PNG"),
        "P-transparency.png": _encode(palette, "PNG", transparency=3),
        "P.gif": _encode(rgb.quantize(colors=32), "GIF"),
        "RGBA.png": _encode(Image.merge("RGBA", (*rgb.split(), alpha)), "PNG"),
        "CMYK.jpg": _encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "I16.png": _encode(Image.fromarray(np.asarray(gray, dtype=np.uint16) * 3), "PNG"),
        "1.png": _encode(gray.convert("1"), "PNG"),
        "tall.png": _encode(rgb.resize((7, 300)), "PNG"),
        "tiny-1x1.png": _encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"),
    }
    return samples


def large_jpeg(width: int = 4000, height: int = 3000, seed: int = 0) -> bytes:
    """A 12 MP JPEG with photo-like smooth structure plus noise."""
    return _encode(synthetic_image("smooth", (width, height), np.random.default_rng(seed)), "JPEG", quality=85)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares ``width`` x ``height`` (a decompression bomb header)."""
    data = _encode(Image.new("L", (1, 1)), "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return data[:8] + patched + data[8 + 25 :]


def animated_gif() -> tuple[bytes, Image.Image]:
    """A 3-frame GIF and its first frame."""
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue(), frames[0]


def phone_jpeg(photo: Path, size: tuple[int, int] = (4000, 3000), mode: str = "RGB", exif: Image.Exif | None = None,
               quality: int = 90) -> bytes:
    """A real photo upscaled to phone-camera size with mild sensor noise, saved as a JPEG in ``mode``."""
    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    large = with_sensor_noise(rgb.resize(size, Image.Resampling.BICUBIC), np.random.default_rng(0))
    kwargs: dict[str, object] = {"quality": quality}
    if exif is not None:
        kwargs["exif"] = exif
    return _encode(large.convert(mode), "JPEG", **kwargs)
