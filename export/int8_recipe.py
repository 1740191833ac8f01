"""The default ``int8`` recipe: fused attention, smoothing, per-token int8, sensitivity search.

Steps (each one measured, see README "Quantization"):

1. fuse attention into ``MultiHeadAttention`` (speed; exact in fp32);
2. fold SmoothQuant scales into the LayerNorms, with ``alpha`` chosen on the
   calibration images (fidelity; exact in fp32);
3. quantize every constant-weight MatMul to int8 with per-channel weights and
   per-token activations (speed, batch invariance);
4. if the calibration fidelity still misses the budget, keep the MatMuls with
   the largest local quantization error in fp32, doubling the count until the
   budget is met or a cap is hit (sensitivity-guided mixed precision).
"""

from __future__ import annotations

from typing import Any

import onnx

from .attention_fusion import fuse_attention
from .build_context import BuildContext
from .evaluate_candidate import budget_score, calibration_fidelity, local_errors
from .per_token_int8 import quantizable_matmuls, quantize_per_token
from .smoothing import smooth_layernorms

ALPHAS: tuple[float | None, ...] = (None, 0.5, 0.65, 0.8, 0.9)
MAX_EXCLUDED_FRACTION = 0.25  # beyond this, "int8" would no longer be an int8 model



def build_int8(ctx: BuildContext) -> dict[str, Any]:
    fp32 = onnx.load(ctx.fp32)
    fused, attention = fuse_attention(fp32, ctx.num_heads)
    ctx.log(f"   fused {attention} attention blocks into MultiHeadAttention")

    # 2. alpha search on the calibration images (None = no smoothing)
    tried: list[dict[str, Any]] = []
    best: tuple[float, float | None, onnx.ModelProto, dict[str, Any]] | None = None
    for alpha in ALPHAS:
        smoothed = smooth_layernorms(fused, ctx.calibration, alpha=alpha)[0] if alpha is not None else fused
        candidate, _ = quantize_per_token(smoothed)
        fidelity = calibration_fidelity(candidate, ctx)
        score = budget_score(fidelity, ctx)
        tried.append({"alpha": alpha, "max_abs_dp": fidelity["max_abs_dp"], "mean_abs_dp": fidelity["mean_abs_dp"],
                      "label_agreement": fidelity["label_agreement"]})
        ctx.log(f"   smoothing alpha={alpha}: max |dP| {fidelity['max_abs_dp']:.4f}, mean {fidelity['mean_abs_dp']:.5f}")
        if best is None or score < best[0]:
            best = (score, alpha, smoothed, fidelity)
    assert best is not None
    score, alpha, smoothed, fidelity = best

    # 4. sensitivity-guided mixed precision, only if needed
    excluded: list[str] = []
    if ctx.budget.misses(fidelity):
        nodes = quantizable_matmuls(smoothed)
        errors = local_errors(smoothed, nodes, ctx)
        ranked = sorted(errors, key=errors.__getitem__, reverse=True)
        cap = max(1, int(len(ranked) * MAX_EXCLUDED_FRACTION))
        count = 1
        while count <= cap:
            candidate, _ = quantize_per_token(smoothed, exclude=ranked[:count])
            trial = calibration_fidelity(candidate, ctx)
            ctx.log(f"   keeping {count} most sensitive MatMuls in fp32: max |dP| {trial['max_abs_dp']:.4f}, "
                    f"mean {trial['mean_abs_dp']:.5f}")
            if budget_score(trial, ctx) < score:
                score, fidelity, excluded = budget_score(trial, ctx), trial, ranked[:count]
            if not ctx.budget.misses(trial):
                break
            count = count * 2 if count * 2 <= cap or count == cap else cap
    model, quantized = quantize_per_token(smoothed, exclude=excluded)
    onnx.save(model, ctx.out)
    return {
        "attention_fused": attention,
        "smoothing_alpha": alpha,
        "smoothing_search": tried,
        "quantized_matmuls": len(quantized),
        "excluded_nodes": excluded,
        "calibration_images": len(ctx.calibration_names),
        "calibration_fidelity": fidelity,
        "budget": ctx.budget.to_dict(),
        "budget_met_on_calibration": not ctx.budget.misses(fidelity),
    }
