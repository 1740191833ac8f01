"""The inputs every engine gets: one 12 MP JPEG and the model tensor made from it.

A phone photo is about 12 MP, and decoding plus resizing one is a real share of
end-to-end latency, so the benchmark JPEG has that size. It is a real photo
shipped in a wheel, upscaled to 4000x3000 with mild sensor-like noise (an
upscaled photo alone is unnaturally smooth and decodes faster than a real one).
Without any shipped photo, a smooth-plus-noise synthetic image of the same size
is used, and the results say so.

Model-only timings feed every engine the same ``pixel_values`` array, saved as
``.npy`` next to the JPEG. It is made by deepfake-edge's preprocessing, which
reproduces transformers' ``SiglipImageProcessor`` bit for bit (tests/test_preprocess.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepfake_edge.bundle import Bundle
from deepfake_edge.export.sample_images import (
    PHOTOS,
    photo_path,
    synthetic_image,
    with_sensor_noise,
)
from deepfake_edge.images import load_rgb
from deepfake_edge.preprocess import preprocess

__all__ = ["JPEG_QUALITY", "JPEG_SIZE", "BenchInputs", "make_inputs", "phone_photo", "write_jpeg"]

JPEG_SIZE = (4000, 3000)  # 12 MP, 4:3 like most phone cameras
JPEG_QUALITY = 90
# Shipped photos tried in order (names in sample_images.PHOTOS); the first installed one is used.
SOURCE_PHOTOS: tuple[str, ...] = ("grace_hopper", "astronaut", "china")


@dataclass(frozen=True)
class BenchInputs:
    jpeg: Path
    pixel_values: Path  # float32 (1, 3, H, W)
    description: dict[str, Any]


def phone_photo(photo: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """``photo`` upscaled to ``size`` (width, height), with mild sensor-like noise."""
    return with_sensor_noise(photo.resize(size, Image.Resampling.BICUBIC), rng)


def _large_photo(size: tuple[int, int], seed: int) -> tuple[str, Image.Image]:
    rng = np.random.default_rng(seed)
    width, height = size
    for name in SOURCE_PHOTOS:
        path = photo_path(name)
        if path is not None:
            with Image.open(path) as im:
                photo = im.convert("RGB")
            package, rel = PHOTOS[name]
            return f"{package}/{rel}, upscaled to {width}x{height} with noise", phone_photo(photo, size, rng)
    origin = f"synthetic smooth noise, {width}x{height} (no shipped photo installed)"
    return origin, synthetic_image("smooth", size, rng)


def write_jpeg(path: Path, size: tuple[int, int] = JPEG_SIZE, seed: int = 0) -> str:
    """Write a photo-like JPEG of ``size`` (width, height) to ``path``; return where its content came from."""
    origin, image = _large_photo(size, seed)
    image.save(path, "JPEG", quality=JPEG_QUALITY)
    return origin


def make_inputs(out_dir: Path, bundle: Path, *, size: tuple[int, int] = JPEG_SIZE, seed: int = 0) -> BenchInputs:
    """Write ``bench.jpg`` and ``pixel_values.npy`` into ``out_dir`` and describe them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpeg = out_dir / "bench.jpg"
    origin = write_jpeg(jpeg, size, seed)
    config = Bundle.open(bundle).preprocess
    tensor = preprocess(load_rgb(jpeg, max_pixels=None), config)[None]
    pixel_path = out_dir / "pixel_values.npy"
    np.save(pixel_path, tensor.astype(np.float32))
    return BenchInputs(
        jpeg=jpeg,
        pixel_values=pixel_path,
        description={
            "jpeg": {"width": size[0], "height": size[1], "megapixels": round(size[0] * size[1] / 1e6, 1),
                     "bytes": jpeg.stat().st_size, "quality": JPEG_QUALITY, "source": origin},
            "pixel_values_shape": list(tensor.shape),
        },
    )
