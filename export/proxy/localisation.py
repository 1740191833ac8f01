"""Does the evidence map point at the fake part? Half-photo, half-synthetic composites on the proxy.

The proxy's head is fitted to call the shipped photos real and the synthetic images
fake, so a composite of one half of each has a known answer: the map's mean margin
toward ``fake`` should be higher on the synthetic half. Every held-out photo is
paired with every held-out synthetic image, at both positions (synthetic left and
right). ``python -m deepfake_edge.export.proxy.localisation BUNDLE [VARIANT...]``
prints the rate per variant as JSON.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..sample_images import NamedImage, photos, synthetic_images

# Each half is resized to this (width, height), so the composite is square like the model input
# and its halves fall on whole patch columns whenever the grid width is even.
HALF = (224, 448)
HELDOUT_SYNTHETIC_SEED = 1  # heldout_images()'s synthetic images: never seen by the head's fit
HELDOUT_SYNTHETIC = 8


@dataclass(frozen=True)
class Composite:
    name: str
    image: Image.Image
    synthetic_left: bool


def composites() -> list[Composite]:
    """Every held-out photo with every held-out synthetic image, synthetic on the left and on the right."""
    real = photos("heldout", augment=False)
    fake = synthetic_images(HELDOUT_SYNTHETIC, seed=HELDOUT_SYNTHETIC_SEED)
    out = []
    for photo in real:
        for synthetic in fake:
            for synthetic_left in (True, False):
                out.append(Composite(f"{synthetic.name}|{photo.name}" if synthetic_left
                                     else f"{photo.name}|{synthetic.name}", _join(photo, synthetic, synthetic_left),
                                     synthetic_left))
    return out


def _join(photo: NamedImage, synthetic: NamedImage, synthetic_left: bool) -> Image.Image:
    """Left half of one image, right half of the other (each squashed to ``HALF``)."""
    left, right = (synthetic, photo) if synthetic_left else (photo, synthetic)
    canvas = Image.new("RGB", (2 * HALF[0], HALF[1]))
    canvas.paste(left.image.convert("RGB").resize(HALF, Image.Resampling.BICUBIC), (0, 0))
    canvas.paste(right.image.convert("RGB").resize(HALF, Image.Resampling.BICUBIC), (HALF[0], 0))
    return canvas


def half_margins(grid: np.ndarray, synthetic_left: bool) -> tuple[float, float]:
    """(synthetic half, photo half) mean margins of an upright map; a middle column of an odd grid is left out."""
    cols = grid.shape[1]
    left, right = grid[:, : cols // 2].mean(), grid[:, (cols + 1) // 2 :].mean()
    return (float(left), float(right)) if synthetic_left else (float(right), float(left))


def localisation_rate(bundle: Path, variant: str | None = None) -> dict[str, object]:
    """The share of composites whose synthetic half leans more toward ``fake`` than the photo half."""
    from deepfake_edge import Detector, Prediction

    detector = Detector.load(bundle, variant)
    items = composites()
    results = detector.predict([c.image for c in items], evidence=True)
    gaps = []
    for item, result in zip(items, results, strict=True):
        if not isinstance(result, Prediction) or result.evidence is None:
            raise ValueError(f"{item.name}: no evidence map ({result})")
        synthetic, photo = half_margins(result.evidence, item.synthetic_left)
        gaps.append(synthetic - photo)
    hits = np.array(gaps) > 0
    worst = int(np.argmin(gaps))
    return {"variant": detector.variant_name, "composites": len(items), "localised": int(hits.sum()),
            "rate": float(hits.mean()), "median_gap": float(np.median(gaps)), "worst": items[worst].name,
            "worst_gap": float(gaps[worst])}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    for variant in argv[1:] or [None]:
        print(json.dumps(localisation_rate(Path(argv[0]), variant)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
