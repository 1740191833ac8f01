"""Run every variant on the same preprocessed tensors.

Each image is decoded and preprocessed once; every variant then receives the
identical float32 batch. That makes the variant comparison exact (any
difference is the model's, never the decoder's) and saves the decoding time
of all but one variant.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..detector import Detector
from ..errors import ImageError
from ..labels import softmax
from ..progress import progress
from ..results import Failure
from .dataset import LabelledImage

__all__ = ["ScoredImages", "score_images"]


@dataclass(frozen=True)
class ScoredImages:
    """Probabilities of every variant for the images that could be read.

    ``paths[i]`` has true label id ``true[i]`` and probabilities
    ``probs[variant][i]`` (float64, in the bundle's label order). Images that
    could not be decoded are in ``failures`` instead, in dataset order.
    """

    paths: tuple[str, ...]
    true: np.ndarray
    probs: dict[str, np.ndarray]
    failures: tuple[Failure, ...]


def _batches(
    reference: Detector, images: Sequence[LabelledImage], labels: Sequence[str], batch_size: int,
    failures: list[Failure], show_progress: bool,
) -> Iterator[tuple[list[str], list[int], np.ndarray]]:
    paths: list[str] = []
    true: list[int] = []
    tensors: list[np.ndarray] = []
    for item in progress(images, total=len(images), desc="evaluating", enabled=show_progress):
        try:
            tensor = reference.decode(item.path)
        except ImageError as exc:
            failures.append(Failure(source=str(item.path), error=exc))
            continue
        paths.append(str(item.path))
        true.append(labels.index(item.label))
        tensors.append(tensor)
        if len(tensors) == batch_size:
            yield paths, true, np.stack(tensors)
            paths, true, tensors = [], [], []
    if tensors:
        yield paths, true, np.stack(tensors)


def score_images(
    detectors: Mapping[str, Detector],
    images: Sequence[LabelledImage],
    *,
    batch_size: int = 8,
    show_progress: bool = True,
) -> ScoredImages:
    """Score ``images`` with every detector (all must come from the same bundle).

    The first detector decodes and preprocesses (its pixel limit applies); a bad
    image becomes a ``Failure`` and is skipped by every variant.
    """
    if not detectors:
        raise ValueError("score_images needs at least one detector")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    reference = next(iter(detectors.values()))
    for name, detector in detectors.items():
        if detector.bundle.preprocess != reference.bundle.preprocess or detector.labels != reference.labels:
            raise ValueError(f"variant {name!r} does not share the preprocessing and labels of the others")
    labels = list(reference.labels)
    failures: list[Failure] = []
    all_paths: list[str] = []
    all_true: list[int] = []
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in detectors}
    for paths, true, pixel_values in _batches(reference, images, labels, batch_size, failures, show_progress):
        all_paths.extend(paths)
        all_true.extend(true)
        for name, detector in detectors.items():
            chunks[name].append(softmax(detector.logits(pixel_values)))
    empty = np.zeros((0, len(labels)), np.float64)
    return ScoredImages(
        paths=tuple(all_paths),
        true=np.asarray(all_true, dtype=np.int64),
        probs={name: np.concatenate(parts) if parts else empty for name, parts in chunks.items()},
        failures=tuple(failures),
    )
