"""Real photos that ship inside PyPI wheels, plus deterministic synthetic images.

Export validation, quantization calibration and fidelity measurement need real
photographs, and this project may not download anything at run time. The photos
below live inside the scikit-image, scikit-learn and matplotlib wheels (all in
the ``[export]`` extra); we locate them on disk with ``importlib`` so that none
of those libraries is imported.

The photos are split into two disjoint sets, as data (:data:`SPLITS`):

* ``fit`` photos may be used to *fit* things (a classifier head, a calibration
  range, a sensitivity search);
* ``heldout`` photos are only ever used to *measure* fidelity, so a recipe is
  never judged on the images it was tuned on.

This module needs only numpy and Pillow: benchmarks and tests use it without
the ``[export]`` extra's heavy libraries.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image

Split = Literal["fit", "heldout"]

# Photos shipped inside wheels: name (the file's stem) -> (package, path inside the package).
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "camera": ("skimage", "data/camera.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "retina": ("skimage", "data/retina.jpg"),
    "ihc": ("skimage", "data/ihc.png"),
    "brick": ("skimage", "data/brick.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "moon": ("skimage", "data/moon.png"),
    "coins": ("skimage", "data/coins.png"),
    "page": ("skimage", "data/page.png"),
}
SPLITS: dict[Split, tuple[str, ...]] = {
    "heldout": ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_right", "camera", "china", "flower",
                "grace_hopper"),
    "fit": ("motorcycle_left", "hubble_deep_field", "retina", "ihc", "brick", "grass", "gravel", "moon", "coins",
            "page"),
}
SyntheticKind = Literal["noise", "gradient", "blobs", "stripes", "smooth"]
SYNTHETIC_KINDS: tuple[str, ...] = get_args(SyntheticKind)


@dataclass(frozen=True)
class NamedImage:
    """An image with a stable name, so reports can say which image moved."""

    name: str
    image: Image.Image


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (None if it is not installed).

    ``find_spec`` locates a top-level package without executing its
    ``__init__``, which for the photo packages would import heavy libraries.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def photo_path(name: str) -> Path | None:
    """Where the shipped photo ``name`` (a key of :data:`PHOTOS`) is installed, or None."""
    package, rel = PHOTOS[name]
    root = package_dir(package)
    return root / rel if root is not None and (root / rel).is_file() else None


def photo_paths(split: Split) -> list[Path]:
    """Paths of the shipped photos of one split that are installed here."""
    return [path for path in map(photo_path, SPLITS[split]) if path is not None]


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


CropRange = tuple[float, float]
DEFAULT_CROP_RANGE: CropRange = (0.2, 0.9)


def random_crops(name: str, image: Image.Image, count: int, seed: int = 0,
                 crop_range: CropRange = DEFAULT_CROP_RANGE) -> list[NamedImage]:
    """Deterministic random crops (``crop_range`` of each side, 20-90 % by default) for larger evaluation sets."""
    rng = np.random.default_rng(seed)
    w, h = image.size
    out = []
    for i in range(count):
        cw, ch = (max(1, int(side * rng.uniform(*crop_range))) for side in (w, h))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append(NamedImage(f"{name}#crop{i}", image.crop((x, y, x + cw, y + ch))))
    return out


def _variants(name: str, image: Image.Image) -> Iterator[NamedImage]:
    """The photo, a centre crop, a corner crop and a non-square downscale.

    Crops and resizes change the content the model sees at 1 patch = 16 px, so
    they widen the set without needing more source photos.
    """
    w, h = image.size
    yield NamedImage(name, image)
    yield NamedImage(f"{name}#center", image.crop((w // 5, h // 5, w - w // 5, h - h // 5)))
    yield NamedImage(f"{name}#corner", image.crop((0, 0, max(1, w // 2), max(1, h // 2))))
    yield NamedImage(f"{name}#squash", image.resize((max(1, w // 2), max(1, h // 3)), Image.Resampling.BILINEAR))


def synthetic_image(kind: SyntheticKind, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One deterministic non-photographic RGB image (``size`` is width, height).

    ``noise``, ``gradient``, ``blobs`` and ``stripes`` are flat test patterns;
    ``smooth`` is photo-like (coarse colour structure plus sensor noise), so a
    JPEG of it decodes about as slowly as a camera photo of the same size.
    """
    w, h = size
    if kind == "noise":
        return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")
    if kind == "smooth":
        coarse = rng.integers(0, 256, size=(max(1, h // 100), max(1, w // 100), 3), dtype=np.uint8)
        return with_sensor_noise(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "gradient":
        a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        t = (xx / w)[..., None]
        arr = ((a * (1 - t) + b * t) * 255).astype(np.uint8)
    elif kind == "blobs":
        acc = np.zeros((h, w, 3), np.float32)
        for _ in range(6):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 80)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            acc += blob[..., None] * rng.uniform(0, 255, 3)
        arr = np.clip(acc, 0, 255).astype(np.uint8)
    elif kind == "stripes":
        period = rng.uniform(4, 40)
        stripes = (np.sin(2 * np.pi * (xx + yy * rng.uniform(-1, 1)) / period) + 1) * 127.5
        arr = np.repeat(stripes[..., None], 3, axis=2).astype(np.uint8)
    else:
        raise ValueError(f"unknown synthetic image kind {kind!r}; choose from {SYNTHETIC_KINDS}")
    return Image.fromarray(arr, "RGB")


def with_sensor_noise(image: Image.Image, rng: np.random.Generator, amplitude: int = 6) -> Image.Image:
    """``image`` plus uniform integer noise in [-amplitude, amplitude] per channel (an upscale alone is too smooth)."""
    noise = rng.integers(-amplitude, amplitude + 1, size=(image.height, image.width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def synthetic_images(count: int, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[NamedImage]:
    """Deterministic non-photographic images, cycling through noise, gradients, blobs and stripes."""
    rng = np.random.default_rng(seed)
    kinds: tuple[SyntheticKind, ...] = ("noise", "gradient", "blobs", "stripes")
    return [NamedImage(f"synthetic-{seed}-{i}", synthetic_image(kinds[i % 4], size, rng)) for i in range(count)]


def photos(split: Split, augment: bool = True) -> list[NamedImage]:
    """Shipped photos of ``split`` (and their crops/resizes when ``augment``)."""
    out: list[NamedImage] = []
    for path in photo_paths(split):
        image = _load_rgb(path)
        out.extend(_variants(path.stem, image) if augment else [NamedImage(path.stem, image)])
    return out


def _crops(split: Split, crops_per_photo: int, seed: int, crop_range: CropRange = DEFAULT_CROP_RANGE
           ) -> list[NamedImage]:
    out: list[NamedImage] = []
    for index, path in enumerate(photo_paths(split) if crops_per_photo else []):
        out.extend(random_crops(path.stem, _load_rgb(path), crops_per_photo, seed=seed * 1000 + index,
                                crop_range=crop_range))
    return out


def heldout_images(synthetic: int = 8, seed: int = 1, crops_per_photo: int = 0,
                   crop_range: CropRange = DEFAULT_CROP_RANGE) -> list[NamedImage]:
    """Images for measuring fidelity: held-out photos, their variants, synthetics.

    ``crops_per_photo`` adds that many random crops of each photo (``crop_range`` of each side).
    """
    return (photos("heldout") + _crops("heldout", crops_per_photo, seed, crop_range)
            + synthetic_images(synthetic, seed=seed))


# The export's fidelity gate: 9 photos x 4 views + 12 crops each + 64 synthetic images = 208, so that
# p99 |dP| ignores the worst two images rather than turning on the single worst one.
GATE_CROPS_PER_PHOTO = 12
GATE_SYNTHETIC = 64


def gate_images(seed: int = 1) -> list[NamedImage]:
    """The held-out images the export judges every quantized variant on (208 with every photo wheel installed)."""
    return heldout_images(synthetic=GATE_SYNTHETIC, seed=seed, crops_per_photo=GATE_CROPS_PER_PHOTO)


def calibration_images(synthetic: int = 4, seed: int = 2, crops_per_photo: int = 0) -> list[NamedImage]:
    """Images that recipes may tune on (disjoint from :func:`heldout_images`)."""
    return photos("fit") + _crops("fit", crops_per_photo, seed) + synthetic_images(synthetic, seed=seed)


def load_directory(directory: Path, limit: int | None = None) -> list[NamedImage]:
    """Every decodable image under ``directory`` (sorted, recursive), as RGB."""
    out: list[NamedImage] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        try:
            out.append(NamedImage(str(path.relative_to(directory)), _load_rgb(path)))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # calibration sets are user folders; skip non-images
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise FileNotFoundError(f"no decodable images under {directory}")
    return out
