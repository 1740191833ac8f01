"""The default ``int8`` recipe: fused attention, smoothing, per-token int8, GPTQ, sensitivity search.

Steps (each one measured, see README "Quantization"):

1. fuse attention (and the q/k/v biases) into ``MultiHeadAttention``, then the
   GELUs (and the fc1 bias) into ``FastGelu``/``BiasGelu`` with onnxruntime's
   transformer optimizer (speed; both exact in fp32);
2. fold SmoothQuant scales into the LayerNorms, with ``alpha`` chosen on the
   calibration images (fidelity; exact in fp32);
3. quantize every constant-weight MatMul to int8 with per-channel weights and
   per-token activations (speed, batch invariance), rounding the weights with
   GPTQ when that lowers the calibration error;
4. if the calibration fidelity still misses the budget, keep the MatMuls with
   the largest local quantization error in fp32, doubling the count until the
   budget is met or a cap is hit (sensitivity-guided mixed precision).

``ctx.tune = False`` skips the calibration-driven steps (alpha 0.5, round to
nearest, no search): the graph and its speed are identical, only fidelity
differs; speed benchmarks on random weights use it.
"""

from __future__ import annotations

from typing import Any

import onnx

from .build_context import BuildContext
from .evaluate_candidate import budget_score, calibration_fidelity, local_errors
from .graph_fusions import fuse_graph
from .per_token_int8 import quantizable_matmuls, quantize_per_token
from .smoothing import DEFAULT_ALPHA, activation_ranges, smooth_layernorms
from .weight_tuning import summary, tune_weights

MAX_EXCLUDED_FRACTION = 0.25  # beyond this, "int8" would no longer be an int8 model


def build_int8(ctx: BuildContext) -> dict[str, Any]:
    fused, fusions = fuse_graph(onnx.load(ctx.fp32), ctx.num_heads, ctx.hidden_size)
    ctx.log(f"   fused {fusions['attention_fused']} attention blocks into MultiHeadAttention "
            f"and {fusions['gelu_fused']} GELUs")
    ranges = activation_ranges(fused, ctx.calibration)
    if not ctx.tune:
        smoothed = smooth_layernorms(fused, ranges, alpha=DEFAULT_ALPHA)[0]
        model, quantized = quantize_per_token(smoothed)
        onnx.save(model, ctx.out)
        return {**fusions, "smoothing_alpha": DEFAULT_ALPHA,
                "weight_rounding": "nearest", "quantized_matmuls": len(quantized), "excluded_nodes": [], "tuned": False}

    # 2-3. alpha, then GPTQ rounding, chosen on the calibration images
    tuned = tune_weights(fused, ranges, ctx, lambda model, weights: quantize_per_token(model, weights=weights)[0],
                         lambda model: calibration_fidelity(model, ctx))
    smoothed, weights, fidelity, score = tuned.smoothed, tuned.weights, tuned.fidelity, tuned.score
    nodes = quantizable_matmuls(smoothed)

    # 4. sensitivity-guided mixed precision: as many layers as the user asked
    # for (--int8-keep-fp32), more only if the budget is still missed
    excluded: list[str] = []
    ranked: list[str] = []
    if ctx.keep_fp32 > 0 or ctx.budget.misses(fidelity):
        errors = local_errors(smoothed, nodes, ctx)
        ranked = sorted(errors, key=errors.__getitem__, reverse=True)
    if ctx.keep_fp32 > 0:
        excluded = ranked[: ctx.keep_fp32]
        fidelity = calibration_fidelity(quantize_per_token(smoothed, exclude=excluded, weights=weights)[0], ctx)
        score = budget_score(fidelity, ctx)
        ctx.log(f"   keeping the {len(excluded)} most sensitive MatMuls in fp32 (requested): {summary(fidelity)}")
    if ctx.budget.misses(fidelity):
        cap = max(1, int(len(ranked) * MAX_EXCLUDED_FRACTION), len(excluded))
        count = max(1, 2 * len(excluded))
        while count <= cap:
            trial = calibration_fidelity(quantize_per_token(smoothed, exclude=ranked[:count], weights=weights)[0], ctx)
            ctx.log(f"   keeping the {count} most sensitive MatMuls in fp32: {summary(trial)}")
            if not ctx.budget.misses(trial) or budget_score(trial, ctx) < score:
                score, fidelity, excluded = budget_score(trial, ctx), trial, ranked[:count]
            if not ctx.budget.misses(trial):
                break
            count = count * 2 if count * 2 <= cap or count == cap else cap
    model, quantized = quantize_per_token(smoothed, exclude=excluded, weights=weights)
    onnx.save(model, ctx.out)
    return {
        **fusions,
        "smoothing_alpha": tuned.alpha,
        "smoothing_search": tuned.tried,
        "weight_rounding": "gptq" if weights else "nearest",
        "quantized_matmuls": len(quantized),
        "excluded_nodes": excluded,
        "calibration_images": len(ctx.calibration_names),
        "calibration_fidelity": fidelity,
        "budget": ctx.budget.to_dict(),
        "tuned": True,
    }
