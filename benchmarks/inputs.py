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

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepfake_edge.bundle import Bundle
from deepfake_edge.images import load_rgb
from deepfake_edge.preprocess import preprocess

__all__ = ["BenchInputs", "make_inputs"]

JPEG_SIZE = (4000, 3000)  # 12 MP, 4:3 like most phone cameras
JPEG_QUALITY = 90
# Shipped photos tried in order (package, path inside it); the first installed one is used.
SOURCE_PHOTOS: tuple[tuple[str, str], ...] = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("skimage", "data/astronaut.png"),
    ("sklearn", "datasets/images/china.jpg"),
)


@dataclass(frozen=True)
class BenchInputs:
    jpeg: Path
    pixel_values: Path  # float32 (1, 3, H, W)
    description: dict[str, Any]


def _shipped_photo() -> tuple[str, Image.Image] | None:
    for package, rel in SOURCE_PHOTOS:
        spec = importlib.util.find_spec(package)  # locate without importing the package
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if path.is_file():
            with Image.open(path) as im:
                return f"{package}/{rel}", im.convert("RGB")
    return None


def _large_photo(size: tuple[int, int], seed: int) -> tuple[str, Image.Image]:
    rng = np.random.default_rng(seed)
    width, height = size
    found = _shipped_photo()
    if found is not None:
        source, photo = found
        base = photo.resize(size, Image.Resampling.BICUBIC)
        origin = f"{source}, upscaled to {width}x{height} with noise"
    else:
        small = rng.integers(0, 256, size=(height // 100, width // 100, 3), dtype=np.uint8)
        base = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        origin = f"synthetic smooth noise, {width}x{height} (no shipped photo installed)"
    noise = rng.integers(-6, 7, size=(height, width, 3), dtype=np.int16)
    arr = np.clip(np.asarray(base, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return origin, Image.fromarray(arr)


def make_inputs(out_dir: Path, bundle: Path, *, size: tuple[int, int] = JPEG_SIZE, seed: int = 0) -> BenchInputs:
    """Write ``bench.jpg`` and ``pixel_values.npy`` into ``out_dir`` and describe them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    origin, image = _large_photo(size, seed)
    jpeg = out_dir / "bench.jpg"
    image.save(jpeg, "JPEG", quality=JPEG_QUALITY)
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
