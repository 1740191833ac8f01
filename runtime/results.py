"""What ``Detector.predict`` returns for each input."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DeepfakeEdgeError

__all__ = ["Failure", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """A classified input.

    ``scores`` maps every label to its probability (they sum to 1); ``label`` is
    the decision (argmax, or the bundle's/caller's threshold on the positive label).
    """

    source: str
    label: str
    scores: dict[str, float] = field(repr=True)

    def to_dict(self) -> dict[str, object]:
        return {"path": self.source, "label": self.label, "scores": self.scores}


@dataclass(frozen=True)
class Failure:
    """An input that could not be classified, and why."""

    source: str
    error: DeepfakeEdgeError

    def to_dict(self) -> dict[str, object]:
        return {"path": self.source, "error": type(self.error).__name__, "message": str(self.error)}
