"""Per-video verdicts from per-frame scores: pure functions over the frames' manipulation scores
(``decision.ScoreRule``: P(positive label), or 1 - P(real label)).

``mean``: the mean over sampled frames, DeepfakeBench's video-level protocol.

``confident``: the rule of the DFDC winner (Seferbekov's ``confident_strategy``). Frames
over 0.8 are "confident fakes": when they are more than ``n // 2.5`` of the ``n`` frames
and more than 11, the score is their mean. Otherwise, when more than 90 % of the frames are
under 0.2, the score is the mean of those. Otherwise it is the plain mean. The constants are
the winner's (chosen for 32 frames a video); with fewer than 12 frames over 0.8 the fake
branch never applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["AGGREGATES", "Segment", "aggregate", "confident_score", "mean_score", "segments"]

CONFIDENT_HIGH = 0.8
CONFIDENT_LOW = 0.2
CONFIDENT_MIN_HIGH = 11
CONFIDENT_LOW_FRACTION = 0.9


def mean_score(scores: Sequence[float]) -> float:
    """Mean score; NaN for no frames."""
    return math.fsum(scores) / len(scores) if scores else math.nan


def confident_score(scores: Sequence[float]) -> float:
    """The DFDC winner's ``confident_strategy`` (see the module docstring)."""
    n = len(scores)
    high = [s for s in scores if s > CONFIDENT_HIGH]
    if len(high) > n // 2.5 and len(high) > CONFIDENT_MIN_HIGH:
        return mean_score(high)
    low = [s for s in scores if s < CONFIDENT_LOW]
    if len(low) > CONFIDENT_LOW_FRACTION * n:
        return mean_score(low)
    return mean_score(scores)


#: --aggregate choices: name -> frames' scores -> the video's score.
AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {"mean": mean_score, "confident": confident_score}


def aggregate(method: str, scores: Sequence[float]) -> float:
    try:
        rule = AGGREGATES[method]
    except KeyError:
        raise ValueError(f"unknown aggregate {method!r}; expected one of {sorted(AGGREGATES)}") from None
    return rule(scores)


@dataclass(frozen=True)
class Segment:
    """A run of consecutive sampled frames at or over the threshold, from the first one's time to the last one's."""

    start: float
    end: float
    frames: int
    max_score: float
    mean_score: float

    def to_dict(self) -> dict[str, float | int]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "frames": self.frames,
                "max_score": self.max_score, "mean_score": self.mean_score}


def segments(
    times: Sequence[float], scores: Sequence[float], *, threshold: float, min_length: float = 0.0
) -> list[Segment]:
    """Runs of consecutive frames with score >= ``threshold`` lasting at least ``min_length`` seconds.

    A run lasts from its first frame's time to its last one's, so a single frame lasts 0 s:
    ``min_length=0`` keeps it.
    """
    if len(times) != len(scores):
        raise ValueError(f"times and scores differ in length: {len(times)} != {len(scores)}")
    found: list[Segment] = []
    run: list[int] = []
    for i in [*range(len(scores)), None]:
        if i is not None and scores[i] >= threshold:
            run.append(i)
            continue
        if run and times[run[-1]] - times[run[0]] >= min_length:
            values = [scores[j] for j in run]
            found.append(Segment(times[run[0]], times[run[-1]], len(run), max(values), mean_score(values)))
        run = []
    return found
