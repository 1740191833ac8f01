"""Real photos that ship inside PyPI wheels, plus deterministic synthetic images.

Export validation, quantization calibration and fidelity measurement need real
photographs, and this project may not download anything at run time. The photos
below live inside the scikit-image, scikit-learn and matplotlib wheels (all in
the ``[export]`` extra); we locate them on disk with ``importlib`` so that none
of those libraries is imported.

The photos are split into two disjoint sets, as data:

* ``FIT`` photos may be used to *fit* things (a classifier head, a calibration
  range, a sensitivity search);
* ``HELDOUT`` photos are only ever used to *measure* fidelity, so a recipe is
  never judged on the images it was tuned on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Split = Literal["fit", "heldout"]

# (package, relative path) for every shipped photo, by split.
_PHOTOS: dict[Split, tuple[tuple[str, str], ...]] = {
    "heldout": (
        ("skimage", "data/astronaut.png"),
        ("skimage", "data/chelsea.png"),
        ("skimage", "data/coffee.png"),
        ("skimage", "data/rocket.jpg"),
        ("skimage", "data/motorcycle_right.png"),
        ("skimage", "data/camera.png"),
        ("sklearn", "datasets/images/china.jpg"),
        ("sklearn", "datasets/images/flower.jpg"),
        ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ),
    "fit": (
        ("skimage", "data/motorcycle_left.png"),
        ("skimage", "data/hubble_deep_field.jpg"),
        ("skimage", "data/retina.jpg"),
        ("skimage", "data/ihc.png"),
        ("skimage", "data/brick.png"),
        ("skimage", "data/grass.png"),
        ("skimage", "data/gravel.png"),
        ("skimage", "data/moon.png"),
        ("skimage", "data/coins.png"),
        ("skimage", "data/page.png"),
    ),
}


@dataclass(frozen=True)
class NamedImage:
    """An image with a stable name, so reports can say which image moved."""

    name: str
    image: Image.Image


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def photo_paths(split: Split) -> list[Path]:
    """Paths of the shipped photos of one split that are installed here."""
    paths = []
    for package, rel in _PHOTOS[split]:
        root = _package_dir(package)
        if root is not None and (root / rel).is_file():
            paths.append(root / rel)
    return paths


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def random_crops(name: str, image: Image.Image, count: int, seed: int = 0) -> list[NamedImage]:
    """Deterministic random crops (20-90 % of each side) for larger evaluation sets."""
    rng = np.random.default_rng(seed)
    w, h = image.size
    out = []
    for i in range(count):
        cw, ch = (max(1, int(side * rng.uniform(0.2, 0.9))) for side in (w, h))
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


def synthetic_images(count: int, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[NamedImage]:
    """Deterministic non-photographic images: noise, gradients, blobs, stripes."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out: list[NamedImage] = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        elif kind == 1:
            a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
            t = (xx / w)[..., None]
            arr = ((a * (1 - t) + b * t) * 255).astype(np.uint8)
        elif kind == 2:
            arr = np.zeros((h, w, 3), np.float32)
            for _ in range(6):
                cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 80)
                blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
                arr += blob[..., None] * rng.uniform(0, 255, 3)
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            period = rng.uniform(4, 40)
            stripes = (np.sin(2 * np.pi * (xx + yy * rng.uniform(-1, 1)) / period) + 1) * 127.5
            arr = np.repeat(stripes[..., None], 3, axis=2).astype(np.uint8)
        out.append(NamedImage(f"synthetic-{seed}-{i}", Image.fromarray(arr, "RGB")))
    return out


def photos(split: Split, augment: bool = True) -> list[NamedImage]:
    """Shipped photos of ``split`` (and their crops/resizes when ``augment``)."""
    out: list[NamedImage] = []
    for path in photo_paths(split):
        image = _load_rgb(path)
        out.extend(_variants(path.stem, image) if augment else [NamedImage(path.stem, image)])
    return out


def _crops(split: Split, crops_per_photo: int, seed: int) -> list[NamedImage]:
    out: list[NamedImage] = []
    for index, path in enumerate(photo_paths(split) if crops_per_photo else []):
        out.extend(random_crops(path.stem, _load_rgb(path), crops_per_photo, seed=seed * 1000 + index))
    return out


def heldout_images(synthetic: int = 8, seed: int = 1, crops_per_photo: int = 0) -> list[NamedImage]:
    """Images for measuring fidelity: held-out photos, their variants, synthetics.

    ``crops_per_photo`` adds that many random crops of each photo (benchmarks
    use it to reach ~128 images, where one flipped label is < 1 %).
    """
    return photos("heldout") + _crops("heldout", crops_per_photo, seed) + synthetic_images(synthetic, seed=seed)


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
