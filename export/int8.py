"""Our int8 recipes: ``int8`` (per-token int8 on onnxruntime) and ``int8-ov`` (int8 weights on OpenVINO).

``int8``, step by step (each one measured, see README "Quantization"):

1. fuse attention (and the q/k/v biases) into ``MultiHeadAttention``, then the
   GELUs (and the fc1 bias) into ``FastGelu``/``BiasGelu`` (speed; both exact
   in fp32, see ``fusions``);
2. fold SmoothQuant scales into the LayerNorms, with ``alpha`` chosen on the
   calibration images (fidelity; exact in fp32);
3. quantize every constant-weight MatMul to int8 with per-channel weights and
   per-token activations (speed, batch invariance), rounding the weights with
   GPTQ when that lowers the calibration error;
4. if the calibration fidelity still misses the budget, keep the MatMuls with
   the largest local quantization error in fp32, doubling the count until the
   budget is met or a cap is hit (sensitivity-guided mixed precision).

``int8-ov`` stores its weights as ``DequantizeLinear(W_int8)`` in plain ONNX;
the manifest tells the runtime to open it with OpenVINO and these options:

* ``DYNAMIC_QUANTIZATION_GROUP_SIZE = 64``: activations are quantized to int8
  at run time in groups of 64 channels per token (finer than our per-token
  scales) and the linear layers run as int8 GEMMs;
* ``INFERENCE_PRECISION_HINT = bf16``: everything else, attention included, in
  bf16 where the CPU has it (AVX512-BF16 or AMX; plain f32 elsewhere).

Its weights get the same smoothing alpha and GPTQ search, scored with OpenVINO
itself. The graph is left unfused: OpenVINO fuses attention and GELU on its
own, and does not know onnxruntime's contrib ops.

``ctx.tune = False`` skips the calibration-driven steps (alpha 0.5, round to
nearest, no search): the graph and its speed are identical, only fidelity
differs; speed benchmarks on random weights use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from .attention_int8 import ATTENTION_FP32, with_attention
from .fidelity import HELD_OUT_MARGIN, budget_score, calibration_fidelity, calibration_logits, gate_ratio, summary
from .fusions import fuse_graph
from .quantize import dequantized_weights, quantizable_matmuls, quantize_per_token
from .tuning import (
    DEFAULT_ALPHA,
    local_errors,
    smooth_layernorms,
    tune_weights,
)

if TYPE_CHECKING:
    from .recipes import BuildContext

MAX_EXCLUDED_FRACTION = 0.25  # beyond this, "int8" would no longer be an int8 model
OPENVINO = "openvino"
OPENVINO_OPTIONS: dict[str, str] = {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "64"}


def untuned_int8(fp32: onnx.ModelProto, calibration: np.ndarray | dict[str, np.ndarray], num_heads: int,
                 hidden_size: int, *, fuse: bool = True, exclude: Sequence[str] = (),
                 attention: str = ATTENTION_FP32) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The ``int8`` graph without the calibration-driven search, and its manifest record.

    Alpha 0.5 and round-to-nearest weights: the same ops as the tuned graph,
    so the same speed. ``fuse=False`` and ``exclude`` (MatMul names kept fp32)
    let the latency benchmark time what the fusions and the mixed precision cost;
    ``attention`` is the precision of the fused attention (``attention_int8``).
    ``calibration``: NCHW images, or the LayerNorm ranges of :class:`~.calibration.CalibrationStats`.
    """
    fused, fusions = fuse_graph(fp32, num_heads, hidden_size) if fuse else (fp32, {})
    smoothed = smooth_layernorms(fused, calibration, alpha=DEFAULT_ALPHA)[0]
    model, quantized = quantize_per_token(smoothed, exclude=exclude)
    model, attention_record = with_attention(model, attention if fuse else ATTENTION_FP32)
    return model, {**fusions, **attention_record, "smoothing_alpha": DEFAULT_ALPHA, "weight_rounding": "nearest",
                   "quantized_matmuls": len(quantized), "excluded_nodes": list(exclude), "tune": False}


def _log_fusions(ctx: BuildContext, fusions: dict[str, Any]) -> None:
    ctx.log(f"   fused {fusions['attention_fused']} attention blocks into MultiHeadAttention "
            f"and {fusions['gelu_fused']} GELUs")


def build_int8(ctx: BuildContext) -> dict[str, Any]:
    if not ctx.tune:
        model, record = untuned_int8(onnx.load(ctx.fp32), ctx.stats.ranges, ctx.num_heads, ctx.hidden_size)
        _log_fusions(ctx, record)
        onnx.save(model, ctx.out)
        return record
    fused, fusions = fuse_graph(onnx.load(ctx.fp32), ctx.num_heads, ctx.hidden_size)
    _log_fusions(ctx, fusions)

    # 2-3. alpha, then GPTQ rounding, chosen on the calibration images
    tuned = tune_weights(fused, ctx, lambda model, weights: quantize_per_token(model, weights=weights)[0],
                         lambda model, indices: calibration_logits(model, ctx, indices))
    smoothed, weights, fidelity, score = tuned.smoothed, tuned.weights, tuned.fidelity, tuned.score

    # 4. sensitivity-guided mixed precision: as many layers as the user asked
    # for (--int8-keep-fp32), more if the tuning target or the gate's held-out images need them
    excluded, fidelity, ranked = _keep_sensitive_fp32(ctx, smoothed, weights, fidelity, score)
    excluded, held_out, widened = _widen_on_held_out(ctx, smoothed, weights, excluded, ranked)
    model, quantized = quantize_per_token(smoothed, exclude=excluded, weights=weights)
    onnx.save(model, ctx.out)
    return {
        **fusions,
        "smoothing_alpha": tuned.alpha,
        "smoothing_search": tuned.tried,
        "weight_rounding": "gptq" if weights else "nearest",
        "effort": ctx.effort.name,
        "quantized_matmuls": len(quantized),
        "excluded_nodes": excluded,
        "calibration_images": len(ctx.calibration_names),
        "calibration_fidelity": fidelity,
        "budget": ctx.budget.to_dict(),
        "widened_on_held_out": widened,
        "tune": True,
        **({"held_out_fidelity": held_out} if held_out is not None else {}),
    }


Weights = Mapping[str, tuple[np.ndarray, np.ndarray]] | None


def _ranked(ctx: BuildContext, smoothed: onnx.ModelProto) -> list[str]:
    """The weight MatMuls, most quantization-sensitive first (local error on the calibration images)."""
    errors = local_errors(smoothed, quantizable_matmuls(smoothed), ctx.calibration)
    return sorted(errors, key=errors.__getitem__, reverse=True)


def _doublings(start: int, cap: int) -> list[int]:
    """1, 2, 4, ... from ``start`` (at least 1), the last one ``cap``."""
    counts, count = [], max(1, start)
    while count <= cap:
        counts.append(count)
        count = count * 2 if count * 2 <= cap or count == cap else cap
    return counts


def _keep_sensitive_fp32(ctx: BuildContext, smoothed: onnx.ModelProto, weights: Weights, fidelity: dict[str, Any],
                         score: float) -> tuple[list[str], dict[str, Any], list[str]]:
    """(MatMuls kept fp32, calibration fidelity, the sensitivity ranking or []) for the calibration target."""
    excluded: list[str] = []
    ranked = _ranked(ctx, smoothed) if ctx.keep_fp32 > 0 or ctx.budget.misses(fidelity) else []
    if ctx.keep_fp32 > 0:
        excluded = ranked[: ctx.keep_fp32]
        fidelity = calibration_fidelity(quantize_per_token(smoothed, exclude=excluded, weights=weights)[0], ctx)
        score = budget_score(fidelity, ctx.budget)
        ctx.log(f"   keeping the {len(excluded)} most sensitive MatMuls in fp32 (requested): {summary(fidelity)}")
    if ctx.budget.misses(fidelity):
        cap = max(1, int(len(ranked) * MAX_EXCLUDED_FRACTION), len(excluded))
        for count in _doublings(2 * len(excluded), cap):
            trial = calibration_fidelity(quantize_per_token(smoothed, exclude=ranked[:count], weights=weights)[0], ctx)
            ctx.log(f"   keeping the {count} most sensitive MatMuls in fp32: {summary(trial)}")
            if not ctx.budget.misses(trial) or budget_score(trial, ctx.budget) < score:
                score, fidelity, excluded = budget_score(trial, ctx.budget), trial, ranked[:count]
            if not ctx.budget.misses(trial):
                break
    return excluded, fidelity, ranked


def _widen_on_held_out(ctx: BuildContext, smoothed: onnx.ModelProto, weights: Weights, excluded: list[str],
                       ranked: list[str]) -> tuple[list[str], dict[str, Any] | None, int]:
    """Keep more MatMuls fp32 until the gate's held-out images are within ``HELD_OUT_MARGIN`` of it.

    Returns the MatMuls kept fp32, the chosen model's held-out fidelity (None without a gate) and how
    many were added here. Calibration figures ran 1.5-2.4x below held-out ones on real weights, so a
    model tuned on calibration images alone can still miss the gate; this uses the held-out images
    for one decision only (how many layers stay fp32), which the manifest records.
    """
    if ctx.held_out is None or ctx.gate is None:
        return excluded, None, 0
    target = ctx.gate.scaled(HELD_OUT_MARGIN)
    found = ctx.held_out(quantize_per_token(smoothed, exclude=excluded, weights=weights)[0])
    if not target.misses(found):
        return excluded, found, 0
    best = (gate_ratio(found, target), excluded, found)
    ctx.log(f"   held-out images: {summary(found)}; over {HELD_OUT_MARGIN:g} of the gate, widening")
    ranked = ranked or _ranked(ctx, smoothed)
    cap = max(1, int(len(ranked) * MAX_EXCLUDED_FRACTION), len(excluded))
    for count in _doublings(max(2 * len(excluded), 1), cap):
        trial = ranked[:count]
        found = ctx.held_out(quantize_per_token(smoothed, exclude=trial, weights=weights)[0])
        ctx.log(f"   keeping the {count} most sensitive MatMuls in fp32 (held-out images): {summary(found)}")
        if gate_ratio(found, target) < best[0]:
            best = (gate_ratio(found, target), trial, found)
        if not target.misses(found):
            break
    return best[1], best[2], len(best[1]) - len(excluded)


def build_int8_openvino(ctx: BuildContext) -> dict[str, Any]:
    fp32 = onnx.load(ctx.fp32)  # export_bundle checked that OpenVINO is installed
    if not ctx.tune:
        model, count = dequantized_weights(smooth_layernorms(fp32, ctx.stats.ranges, alpha=DEFAULT_ALPHA)[0])
        onnx.save(model, ctx.out)
        return {"smoothing_alpha": DEFAULT_ALPHA, "weight_rounding": "nearest", "quantized_matmuls": count,
                "tune": False}
    tuned = tune_weights(
        fp32, ctx, lambda model, weights: dequantized_weights(model, weights)[0],
        lambda model, indices: calibration_logits(model, ctx, indices, backend=OPENVINO,
                                                  backend_options=OPENVINO_OPTIONS),
    )
    model, count = dequantized_weights(tuned.smoothed, tuned.weights)
    onnx.save(model, ctx.out)
    return {
        "smoothing_alpha": tuned.alpha,
        "smoothing_search": tuned.tried,
        "weight_rounding": "gptq" if tuned.weights else "nearest",
        "effort": ctx.effort.name,
        "quantized_matmuls": count,
        "calibration_images": len(ctx.calibration_names),
        "calibration_fidelity": tuned.fidelity,
        "budget": ctx.budget.to_dict(),
        "tune": True,
    }
