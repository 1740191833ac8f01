"""Scores and labels: a stable softmax and the label names (the decision rule is in ``decision``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BundleMismatchError
from .jsonfile import read_json_object

__all__ = ["read_labels", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, max-subtracted so large logits cannot overflow."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def read_labels(path: Path) -> tuple[str, ...]:
    """Labels in output order, from ``config.json``'s ``id2label``."""
    config = read_json_object(path, "model config")
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise BundleMismatchError(f"{path}: expected a non-empty id2label mapping")
    try:
        ids = sorted(int(k) for k in id2label)
    except ValueError as exc:
        raise BundleMismatchError(f"{path}: id2label keys must be integers, got {sorted(id2label)}") from exc
    if ids != list(range(len(ids))):
        raise BundleMismatchError(f"{path}: id2label keys must be 0..{len(ids) - 1}, got {ids}")
    labels = tuple(str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in ids)
    if len(set(labels)) != len(labels):
        raise BundleMismatchError(f"{path}: id2label has duplicate names {labels}")
    return labels

