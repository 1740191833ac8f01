"""Evidence maps for video: the peak frame of each segment, kept while scanning with ``evidence=True``.

Only the best frame (highest P(positive)) of the current run of frames at or over the
threshold is held, plus the best of each finished run: memory stays a few frames, however
long the video. At the end, each reported segment gets the peak frame of its run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from ..results import Prediction
from .aggregate import Segment

__all__ = ["PeakFrame", "PeakTracker"]


@dataclass(frozen=True)
class PeakFrame:
    """The frame with the highest P(positive) of a segment: its image and its prediction (with evidence)."""

    time: float
    score: float
    image: Image.Image
    prediction: Prediction


def manipulation_score(prediction: Prediction) -> float:
    """The frame's manipulation score (scans and watches require a bundle with a score rule)."""
    if prediction.score is None:
        raise ValueError(f"{prediction.source}: the prediction has no manipulation score")
    return prediction.score


class PeakTracker:
    """Follows the runs of frames at or over ``threshold`` and keeps each run's peak frame."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._current: PeakFrame | None = None
        self._peaks: list[PeakFrame] = []

    def add(self, time: float, image: Image.Image, prediction: Prediction) -> None:
        score = manipulation_score(prediction)
        if score < self.threshold:  # the run (if any) ends here, as in ``aggregate.segments``
            if self._current is not None:
                self._peaks.append(self._current)
            self._current = None
            return
        if self._current is None or score > self._current.score:
            self._current = PeakFrame(time, score, image, prediction)

    def for_segments(self, found: Sequence[Segment]) -> tuple[PeakFrame | None, ...]:
        """The peak frame of each segment (found on the same frames and threshold), in order."""
        peaks = self._peaks + ([self._current] if self._current is not None else [])
        return tuple(next((p for p in peaks if s.start <= p.time <= s.end), None) for s in found)


class AlertPeaks:
    """The frames an alert's peak can be, for a live source: the last ``window`` frames (those that
    may start an alert) and the best high frame since then; ``find`` returns the one at a peak time."""

    def __init__(self, window: int, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self._recent: list[PeakFrame] = []
        self._best: PeakFrame | None = None

    def add(self, time: float, image: Image.Image, prediction: Prediction) -> None:
        frame = PeakFrame(time, manipulation_score(prediction), image, prediction)
        self._recent = [*self._recent[-(self.window - 1):], frame] if self.window > 1 else [frame]
        if frame.score >= self.threshold and (self._best is None or frame.score > self._best.score):
            self._best = frame

    def find(self, time: float) -> PeakFrame | None:
        candidates = [*self._recent, *([self._best] if self._best is not None else [])]
        return next((f for f in candidates if f.time == time), None)

    def alert_ended(self) -> None:
        """A new alert's peak lies in its own window: forget the previous alert's best frame."""
        self._best = None
