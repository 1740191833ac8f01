"""What the runtime returns for each input, and the error that carries a whole batch's results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import DeepfakeEdgeError
from .evidence import Evidence, Hotspot, hotspots

__all__ = ["BatchError", "Failure", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """A classified input.

    ``source`` names any input (a path, ``<bytes #3>``, a video frame); the JSON
    form keeps the key ``path`` that ``deepfake-edge predict`` has always printed.
    ``scores`` maps every label to its probability (they sum to 1); ``label`` is
    the decision (argmax, or the bundle's/caller's threshold on the manipulation score).
    ``score`` is the manipulation score (``decision.ScoreRule``), None for a bundle without a rule.
    ``evidence`` (only with ``predict(..., evidence=True)``): float32 ``[grid_h, grid_w]`` margins
    toward the positive label per patch, whose mean is the image's margin (see ``evidence``);
    ``image_size`` and ``orientation`` (stored ``(width, height)``, EXIF tag) place it on the image.
    """

    source: str
    label: str
    scores: dict[str, float] = field(repr=True)
    score: float | None = None
    evidence: np.ndarray | None = field(default=None, repr=False, compare=False)
    image_size: tuple[int, int] | None = field(default=None, repr=False, compare=False)
    orientation: int = field(default=1, repr=False, compare=False)

    def hotspots(self, k: int = 3) -> list[Hotspot]:
        """The ``k`` cells leaning most toward the positive label, as boxes in the upright original image."""
        return hotspots(Evidence.of(self), k)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"path": self.source, "label": self.label, "scores": self.scores}
        if self.score is not None:
            data["score"] = self.score
        return data


@dataclass(frozen=True)
class Failure:
    """An input that could not be classified, and why."""

    source: str
    error: DeepfakeEdgeError

    def to_dict(self) -> dict[str, object]:
        return {"path": self.source, "error": type(self.error).__name__, "message": str(self.error)}


class BatchError(DeepfakeEdgeError):
    """Some inputs of a ``predict`` call failed.

    Nothing is lost: ``results`` holds one entry per input, in order, each a
    ``Prediction`` or a ``Failure``.
    """

    def __init__(self, results: Sequence[Prediction | Failure]) -> None:
        self.results = list(results)
        self.failures = [r for r in self.results if isinstance(r, Failure)]
        first = self.failures[0].error if self.failures else None
        super().__init__(f"{len(self.failures)} of {len(self.results)} inputs failed; first: {first}")
