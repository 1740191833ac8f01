"""Prove the fp32 ONNX model and our numpy preprocessing match the torch reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfake_edge.images import to_rgb
from deepfake_edge.preprocess import PreprocessConfig, preprocess

from .checkpoint import Checkpoint
from .errors import ValidationError
from .fidelity import run_per_image
from .sample_images import NamedImage

DEFAULT_ATOL = 1e-4


def reference_pixel_values(checkpoint: Checkpoint, images: list[NamedImage]) -> np.ndarray:
    """What the model card's code feeds the model: the transformers processor's output."""
    rgb = [to_rgb(item.image) for item in images]
    return np.asarray(checkpoint.processor(images=rgb, return_tensors="np")["pixel_values"], dtype=np.float32)


def torch_logits(checkpoint: Checkpoint, pixel_values: np.ndarray, batch_size: int = 4) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixel_values), batch_size):
            out.append(checkpoint.model(pixel_values=torch.from_numpy(pixel_values[i : i + batch_size])).logits.numpy())
    return np.concatenate(out)


def validate_export(
    checkpoint: Checkpoint,
    onnx_path: Path,
    preprocessor_config: Path,
    images: list[NamedImage],
    *,
    atol: float = DEFAULT_ATOL,
    batch_size: int = 4,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Check preprocessing (must be bit-exact) and fp32 logits (within ``atol``).

    Returns the record for the manifest, the reference pixel values and the
    fp32 ONNX logits (one image per run). The fidelity step reuses both, so
    every variant sees the very same tensors and fp32 runs only once.
    """
    reference = reference_pixel_values(checkpoint, images)
    config = PreprocessConfig.from_file(preprocessor_config)
    ours = np.stack([preprocess(to_rgb(item.image), config) for item in images])
    pre_diff = float(np.abs(ours - reference).max())
    if pre_diff != 0.0:
        worst = images[int(np.abs(ours - reference).reshape(len(images), -1).max(axis=1).argmax())].name
        raise ValidationError(
            f"numpy preprocessing differs from transformers' SiglipImageProcessor by {pre_diff:g} "
            f"(worst image: {worst}); the runtime would not see what the model card's code sees"
        )
    onnx = run_per_image(onnx_path, reference)
    expected = torch_logits(checkpoint, reference, batch_size)
    per_image = np.abs(onnx - expected).max(axis=1)
    worst_index = int(per_image.argmax())
    record = {
        "images": len(images),
        "atol": atol,
        "preprocess_max_abs_diff": pre_diff,
        "fp32_vs_torch_max_abs_logit_diff": float(per_image.max()),
        "fp32_vs_torch_worst_image": images[worst_index].name,
    }
    if per_image.max() > atol:
        bad = [f"{images[i].name}: {per_image[i]:.3g}" for i in np.argsort(-per_image)[:5] if per_image[i] > atol]
        raise ValidationError(
            f"fp32 ONNX logits differ from torch by up to {per_image.max():.3g} (> atol {atol:g}) on "
            f"{int((per_image > atol).sum())} of {len(images)} images: " + "; ".join(bad)
        )
    return record, reference, onnx
