"""How far a variant's probabilities move from the fp32 model's, image by image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepfake_edge.labels import softmax
from deepfake_edge.session import create_session


def run_per_image(model: Path, pixel_values: np.ndarray, *, backend: str = "onnxruntime",
                  backend_options: dict[str, str] | None = None) -> np.ndarray:
    """Logits, one image per call: how the runtime serves dynamic-quantized variants."""
    session = create_session(model, backend=backend, backend_options=backend_options)
    return np.concatenate([session.run(["logits"], {"pixel_values": pixel_values[i : i + 1]})[0]
                           for i in range(len(pixel_values))])


def compare(
    reference_logits: np.ndarray,
    candidate_logits: np.ndarray,
    names: list[str],
    labels: tuple[str, ...],
    positive: str | None,
) -> dict[str, Any]:
    """Label agreement and |Δp| of the positive label (all labels if it is not among them)."""
    ref, cand = softmax(reference_logits), softmax(candidate_logits)
    columns = [labels.index(positive)] if positive in labels else list(range(len(labels)))
    delta = np.abs(ref[:, columns] - cand[:, columns]).max(axis=1)
    worst = int(delta.argmax())
    # |dP| depends on how confident an image is: near 0 or 1 the softmax is
    # flat and hides logit error. For two classes, P = sigmoid(z0 - z1), so an
    # image sitting on the decision boundary would move by 0.25 * |d(z0 - z1)|;
    # "boundary" figures report that worst case, independent of the images'
    # confidence (for more classes, 0.25 * range of the logit deltas).
    shift = candidate_logits.astype(np.float64) - reference_logits.astype(np.float64)
    boundary = 0.25 * (shift.max(axis=1) - shift.min(axis=1))
    return {
        "images": len(names),
        "measured_on": "fp32 ONNX of the same checkpoint, one image per run",
        "positive_label": positive if positive in labels else None,
        "label_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()),
        "max_abs_dp": float(delta.max()),
        "mean_abs_dp": float(delta.mean()),
        "max_abs_logit_diff": float(np.abs(reference_logits - candidate_logits).max()),
        "boundary_max_abs_dp": float(boundary.max()),
        "boundary_mean_abs_dp": float(boundary.mean()),
        "worst_image": names[worst],
    }
