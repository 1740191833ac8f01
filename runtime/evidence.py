"""Evidence maps: where in the image the model's decision comes from, exactly.

``SiglipForImageClassification`` averages the final hidden state over the patch
tokens, then applies one linear classifier::

    logits = W · mean_i(h_i) + b = mean_i(W · h_i + b) = mean_i(z_i)

so the per-patch logits ``z_i`` (the bundle's ``patch_logits`` output) decompose
the image's logits exactly and additively. Each cell's *margin* toward the
positive label averages to the image's margin: the map is the model's own
arithmetic, not a heuristic.

The margin is linear in the logits so that the cells average to the image's
margin: for two labels ``z[pos] - z[other]`` (the log-odds); for more, ``z[pos]
- mean(z[others])`` (a logsumexp would not average). Pillow and numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from .errors import UnsupportedBundleError

if TYPE_CHECKING:
    from .results import Prediction

__all__ = [
    "DEFAULT_HOTSPOTS", "EVIDENCE_OUTPUT", "Evidence", "Hotspot", "evidence_fields", "evidence_overlay", "grid_shape",
    "hotspots", "manipulation_margins", "margins", "orientation_of", "require_evidence_output", "save_overlay",
]

EVIDENCE_OUTPUT = "patch_logits"  # [batch, tokens, labels]: the classifier applied to every token

# EXIF orientation (tag 0x0112) -> the PIL transpose that makes the stored pixels upright (as viewers show them).
_ORIENTATION = 0x0112
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def margins(patch_logits: np.ndarray, labels: Sequence[str], positive_label: str) -> np.ndarray:
    """Per-token margin toward ``positive_label``: ``[..., tokens, labels] -> [..., tokens]`` (float32).

    Two labels: ``z[pos] - z[other]``; more: ``z[pos] - mean(z[others])``. Linear, so the mean over the
    tokens is the same margin of the image's logits.
    """
    if positive_label not in labels:
        raise ValueError(f"positive label {positive_label!r} is not among the labels {tuple(labels)}")
    z = np.asarray(patch_logits, dtype=np.float64)
    if z.shape[-1] != len(labels) or len(labels) < 2:
        raise ValueError(f"patch logits of shape {z.shape} do not match {len(labels)} labels (need >= 2)")
    pos = list(labels).index(positive_label)
    others = np.delete(z, pos, axis=-1).mean(axis=-1)
    return (z[..., pos] - others).astype(np.float32)


def manipulation_margins(patch_logits: np.ndarray, labels: Sequence[str], positive_label: str | None,
                         real_label: str | None) -> np.ndarray:
    """Per-token margin toward "manipulated", by the bundle's score rule: toward its positive label, or
    away from its real label (``mean(z[others]) - z[real]``, for any number of labels). Linear too."""
    if positive_label is not None:
        return margins(patch_logits, labels, positive_label)
    if real_label is None:
        raise ValueError("a score rule names a positive label or a real label")
    return -margins(patch_logits, labels, real_label)


def grid_shape(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The patch grid (rows, columns) of ``tokens`` square patches covering a ``height x width`` input."""
    patch = math.sqrt(height * width / tokens) if tokens > 0 else 0.0
    rows, cols = (round(height / patch), round(width / patch)) if patch else (0, 0)
    if rows * cols != tokens:
        raise ValueError(f"{tokens} patch tokens do not tile a {height}x{width} input")
    return rows, cols


def require_evidence_output(outputs: Sequence[str], model: str) -> None:
    """Raise when the model file has no ``patch_logits`` output (bundles exported before evidence maps)."""
    if EVIDENCE_OUTPUT not in outputs:
        raise UnsupportedBundleError(
            f"{model}: this bundle has no {EVIDENCE_OUTPUT!r} output, so it cannot give evidence maps; "
            "re-export it with this version (deepfake-edge export MODEL OUT_DIR) to add them"
        )


@dataclass(frozen=True)
class Hotspot:
    """One grid cell: its box ``(x0, y0, x1, y1)`` in the upright original image's pixels, and its margin."""

    box: tuple[float, float, float, float]
    margin: float

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box], "margin": round(self.margin, 4)}


@dataclass(frozen=True)
class Evidence:
    """A margin map and the geometry that places it on the original image.

    ``grid`` is float32 ``[grid_h, grid_w]`` in the model's (stored-pixel) layout;
    ``size`` is the stored image's ``(width, height)``, ``orientation`` its EXIF tag (1: upright).
    """

    grid: np.ndarray
    size: tuple[int, int]
    orientation: int = 1

    @classmethod
    def of(cls, prediction: Prediction) -> Evidence:
        """The evidence of a prediction made with ``evidence=True`` (ValueError otherwise)."""
        if prediction.evidence is None or prediction.image_size is None:
            raise ValueError(f"{prediction.source}: no evidence map; predict with evidence=True")
        return cls(prediction.evidence, prediction.image_size, prediction.orientation)

    def upright(self) -> np.ndarray:
        """The grid as a viewer shows the image (EXIF orientation applied), float32."""
        op = _TRANSPOSE.get(self.orientation)
        grid = np.asarray(self.grid, dtype=np.float32)
        if op is None:
            return grid
        return np.asarray(Image.fromarray(grid).transpose(op), dtype=np.float32)

    def upright_size(self) -> tuple[int, int]:
        w, h = self.size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


def hotspots(evidence: Evidence, k: int = 3) -> list[Hotspot]:
    """The ``k`` cells with the largest margin toward the positive label, largest first, as boxes in the
    upright original image's pixels (the squash-resize undone: every cell covers an equal share of the
    image)."""
    grid = evidence.upright()
    rows, cols = grid.shape
    width, height = evidence.upright_size()
    order = np.argsort(-grid, axis=None, kind="stable")[: max(0, k)]
    out = []
    for flat in order:
        r, c = divmod(int(flat), cols)
        box = (c * width / cols, r * height / rows, (c + 1) * width / cols, (r + 1) * height / rows)
        out.append(Hotspot(box=box, margin=float(grid[r, c])))
    return out


def orientation_of(image: Image.Image) -> int:
    """The EXIF orientation tag of ``image`` (1 when absent or invalid)."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: the pixels are still good
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


# -- the overlay -------------------------------------------------------------------------------
# A diverging map centred on 0: blue (toward the other label) - white - red (toward the positive label).
_NEG, _MID, _POS = np.array([33, 102, 172], np.float32), np.array([247, 247, 247], np.float32), \
    np.array([178, 24, 43], np.float32)
OVERLAY_ALPHA = 0.7
LEGEND_HEIGHT = 28


def _colours(values: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """RGB and opacity of each value on the diverging scale [-scale, scale]; white and clear at 0."""
    t = np.clip(values / scale, -1.0, 1.0)[..., None]
    rgb = np.where(t >= 0, _MID + (_POS - _MID) * t, _MID + (_NEG - _MID) * -t)
    return rgb, np.abs(t[..., 0])


def evidence_overlay(prediction: Prediction | Evidence, image: Image.Image, *, scale: float | None = None,
                     positive_label: str = "fake") -> Image.Image:
    """The map drawn over ``image``, the original as decoded (``Image.open``: stored pixels; the
    prediction's EXIF orientation is applied here, so the picture is upright like the hotspots).

    Bilinear upsampling of the cell margins to the image, a diverging colour map centred on 0 (red:
    toward ``positive_label``, blue: away from it, clear near 0), and a legend strip below stating
    the scale: ``scale`` (default: the largest |margin| of this map).
    """
    evidence = prediction if isinstance(prediction, Evidence) else Evidence.of(prediction)
    base = image.convert("RGB")
    if evidence.orientation in _TRANSPOSE:
        base = base.transpose(_TRANSPOSE[evidence.orientation])
    grid = evidence.upright()
    top = float(scale if scale is not None else np.abs(grid).max())
    top = top if top > 0 else 1.0
    upsampled = np.asarray(Image.fromarray(grid).resize(base.size, Image.Resampling.BILINEAR))
    rgb, weight = _colours(upsampled, top)
    alpha = (OVERLAY_ALPHA * weight)[..., None]
    pixels = np.asarray(base, np.float32) * (1 - alpha) + rgb * alpha
    out = Image.new("RGB", (base.width, base.height + LEGEND_HEIGHT), (255, 255, 255))
    out.paste(Image.fromarray(pixels.round().astype(np.uint8)), (0, 0))
    _legend(out, base.height, top, positive_label)
    return out


def _legend(canvas: Image.Image, y: int, scale: float, positive_label: str) -> None:
    """A colour bar from -scale to +scale with its numbers: the stated scale of the overlay."""
    width = canvas.width
    bar_w = max(width // 3, 16)
    x0 = (width - bar_w) // 2
    ramp, _ = _colours(np.linspace(-scale, scale, bar_w, dtype=np.float32), scale)
    bar = np.repeat(ramp[None].round().astype(np.uint8), 8, axis=0)
    canvas.paste(Image.fromarray(bar), (x0, y + 4))
    draw = ImageDraw.Draw(canvas)
    draw.text((max(x0 - 40, 2), y + 2), f"-{scale:.2g}", fill=(0, 0, 0))
    draw.text((x0 + bar_w + 4, y + 2), f"+{scale:.2g} {positive_label}", fill=(0, 0, 0))
    draw.text((x0, y + 14), "margin per cell (log-odds)", fill=(0, 0, 0))


# -- what the surfaces report ---------------------------------------------------------------------
DEFAULT_HOTSPOTS = 3


def evidence_fields(prediction: Prediction, k: int = DEFAULT_HOTSPOTS, *, grid: bool = False) -> dict[str, Any]:
    """The JSON the surfaces add to a result: its top-``k`` hotspots, and the upright grid (3 decimals) if asked."""
    evidence = Evidence.of(prediction)
    out: dict[str, Any] = {"hotspots": [h.to_dict() for h in hotspots(evidence, k)]}
    if grid:
        out["grid"] = np.round(evidence.upright().astype(np.float64), 3).tolist()
    return out


def unique_path(directory: Path, stem: str, suffix: str = ".evidence.png") -> Path:
    """``directory/<stem><suffix>``, numbered (``stem-2``...) if that file exists: inputs that share a name
    in different folders keep one picture each."""
    candidate, n = directory / f"{stem}{suffix}", 1
    while candidate.exists():
        n += 1
        candidate = directory / f"{stem}-{n}{suffix}"
    return candidate


def save_overlay(prediction: Prediction, image: Image.Image, directory: Path, stem: str, *,
                 positive_label: str = "fake") -> Path:
    """Write :func:`evidence_overlay` as ``directory/<stem>.evidence.png``; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = unique_path(directory, stem)
    evidence_overlay(prediction, image, positive_label=positive_label).save(path)
    return path
