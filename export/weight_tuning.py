"""The calibration-driven choices shared by the int8 recipes: smoothing alpha, then GPTQ or not.

Each recipe says how a smoothed fp32 graph (plus optional pre-rounded weights)
becomes its quantized graph, and how a candidate is scored (which engine runs
it); the search itself is the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .build_context import BuildContext
from .evaluate_candidate import budget_score
from .gptq import gptq_weights
from .per_token_int8 import quantizable_matmuls
from .smoothing import smooth_layernorms

ALPHAS: tuple[float, ...] = (0.5, 0.65, 0.8)
_REPORTED = ("max_abs_dp", "mean_abs_dp", "boundary_max_abs_dp", "boundary_mean_abs_dp", "label_agreement")

Weights = Mapping[str, tuple[np.ndarray, np.ndarray]]
Quantize = Callable[[onnx.ModelProto, "Weights | None"], onnx.ModelProto]
Evaluate = Callable[[onnx.ModelProto], dict[str, Any]]


@dataclass(frozen=True)
class TunedWeights:
    alpha: float
    smoothed: onnx.ModelProto       # the fp32 graph with the chosen smoothing folded in
    weights: Weights | None         # GPTQ-rounded weights, or None for round-to-nearest
    fidelity: dict[str, Any]        # of the chosen candidate, on the calibration images
    score: float
    tried: list[dict[str, Any]]


def summary(fidelity: dict[str, Any]) -> str:
    return (f"max |dP| {fidelity['max_abs_dp']:.4f}, mean {fidelity['mean_abs_dp']:.5f}; "
            f"at the boundary: max {fidelity['boundary_max_abs_dp']:.4f}, mean {fidelity['boundary_mean_abs_dp']:.5f}")


def tune_weights(fp32: onnx.ModelProto, ranges: dict[str, np.ndarray], ctx: BuildContext,
                 quantize: Quantize, evaluate: Evaluate) -> TunedWeights:
    """Pick the smoothing alpha, then keep GPTQ rounding only if it lowers the calibration score."""
    tried: list[dict[str, Any]] = []
    best: tuple[float, float, onnx.ModelProto, dict[str, Any]] | None = None
    for alpha in ALPHAS:
        smoothed = smooth_layernorms(fp32, ranges, alpha=alpha)[0]
        fidelity = evaluate(quantize(smoothed, None))
        score = budget_score(fidelity, ctx)
        tried.append({"alpha": alpha, **{k: fidelity[k] for k in _REPORTED}})
        ctx.log(f"   smoothing alpha={alpha}: {summary(fidelity)}")
        if best is None or score < best[0]:
            best = (score, alpha, smoothed, fidelity)
    assert best is not None
    score, alpha, smoothed, fidelity = best
    rounded = gptq_weights(smoothed, quantizable_matmuls(smoothed), ctx.calibration)
    gptq_fidelity = evaluate(quantize(smoothed, rounded))
    ctx.log(f"   GPTQ weight rounding: {summary(gptq_fidelity)}")
    if budget_score(gptq_fidelity, ctx) < score:
        return TunedWeights(alpha, smoothed, rounded, gptq_fidelity, budget_score(gptq_fidelity, ctx), tried)
    return TunedWeights(alpha, smoothed, None, fidelity, score, tried)
