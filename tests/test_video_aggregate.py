"""Per-video verdicts: pure functions, checked against the published reference code and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepfake_edge.video import (
    Segment,
    TimeSampler,
    aggregate,
    confident_score,
    mean_score,
    segments,
)


def dfdc_confident_strategy(pred: list[float], t: float = 0.8) -> float:
    """The DFDC winner's rule as published (selimsef/dfdc_deepfake_challenge, kernel_utils.py)."""
    pred = np.array(pred)
    sz = len(pred)
    fakes = np.count_nonzero(pred > t)
    if fakes > sz // 2.5 and fakes > 11:
        return float(np.mean(pred[pred > t]))
    elif np.count_nonzero(pred < 0.2) > 0.9 * sz:
        return float(np.mean(pred[pred < 0.2]))
    else:
        return float(np.mean(pred))


@pytest.mark.parametrize("seed", range(40))
def test_confident_matches_the_published_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 64))
    mix = rng.choice(["fake", "real", "mixed"])
    if mix == "fake":
        scores = np.where(rng.random(n) < 0.8, rng.uniform(0.81, 1, n), rng.uniform(0, 1, n))
    elif mix == "real":
        scores = np.where(rng.random(n) < 0.95, rng.uniform(0, 0.19, n), rng.uniform(0, 1, n))
    else:
        scores = rng.uniform(0, 1, n)
    assert confident_score(list(scores)) == pytest.approx(dfdc_confident_strategy(list(scores)), rel=1e-12)


def test_mean_and_unknown_method() -> None:
    assert mean_score([0.2, 0.4, 0.9]) == pytest.approx(0.5)
    assert math.isnan(mean_score([]))
    assert aggregate("mean", [1.0, 0.0]) == 0.5
    with pytest.raises(ValueError, match="unknown aggregate 'max'"):
        aggregate("max", [0.5])


def test_segments_are_runs_over_the_threshold() -> None:
    times = [0, 1, 2, 3, 4, 5, 6, 7]
    scores = [0.9, 0.7, 0.2, 0.6, 0.3, 0.8, 0.95, 0.5]
    assert segments(times, scores, threshold=0.5) == [
        Segment(0, 1, 2, 0.9, 0.8), Segment(3, 3, 1, 0.6, 0.6), Segment(5, 7, 3, 0.95, pytest.approx(0.75)),
    ]
    assert [s.start for s in segments(times, scores, threshold=0.5, min_length=1.5)] == [5]
    assert segments([], [], threshold=0.5) == []
    with pytest.raises(ValueError):
        segments([0, 1], [0.5], threshold=0.5)


def test_time_sampler_takes_the_first_frame_of_each_tick() -> None:
    sampler = TimeSampler(fps=2)
    frames = [0.0, 0.1, 0.5, 0.52, 0.99, 1.0, 3.7, 3.8, 4.0]
    assert [t for t in frames if sampler.take(t)] == [0.0, 0.5, 1.0, 3.7, 4.0]
    late = TimeSampler(fps=1, start=2.5)
    assert [t for t in [2.5, 3.0, 3.49, 3.5, 4.6] if late.take(t)] == [2.5, 3.5, 4.6]
