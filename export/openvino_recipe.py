"""``int8-ov``: int8 weights tuned like ``int8``, run by OpenVINO's CPU plugin (optional extra).

The file is plain ONNX with weights stored as ``DequantizeLinear(W_int8)``
(``weight_int8``); the manifest tells the runtime to open it with OpenVINO and
these options:

* ``DYNAMIC_QUANTIZATION_GROUP_SIZE = 64``: activations are quantized to int8
  at run time in groups of 64 channels per token (finer than our per-token
  scales) and the linear layers run as int8 GEMMs;
* ``INFERENCE_PRECISION_HINT = bf16``: everything else, attention included, in
  bf16 where the CPU has it (AVX512-BF16 or AMX; plain f32 elsewhere).

The weights get the same calibration-driven treatment as ``int8`` (SmoothQuant
alpha, GPTQ when it helps), scored with OpenVINO itself. The graph is left
unfused: OpenVINO fuses attention and GELU on its own, and does not know
onnxruntime's contrib ops.
"""

from __future__ import annotations

from typing import Any

import onnx

from .build_context import BuildContext
from .evaluate_candidate import calibration_fidelity
from .smoothing import DEFAULT_ALPHA, activation_ranges, smooth_layernorms
from .weight_int8 import dequantized_weights
from .weight_tuning import tune_weights

BACKEND = "openvino"
BACKEND_OPTIONS: dict[str, str] = {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "64"}


def build_int8_openvino(ctx: BuildContext) -> dict[str, Any]:
    fp32 = onnx.load(ctx.fp32)  # export_bundle checked that OpenVINO is installed
    ranges = activation_ranges(fp32, ctx.calibration)
    if not ctx.tune:
        model, count = dequantized_weights(smooth_layernorms(fp32, ranges, alpha=DEFAULT_ALPHA)[0])
        onnx.save(model, ctx.out)
        return {"smoothing_alpha": DEFAULT_ALPHA, "weight_rounding": "nearest", "quantized_matmuls": count,
                "tuned": False}
    tuned = tune_weights(
        fp32, ranges, ctx, lambda model, weights: dequantized_weights(model, weights)[0],
        lambda model: calibration_fidelity(model, ctx, backend=BACKEND, backend_options=BACKEND_OPTIONS),
    )
    model, count = dequantized_weights(tuned.smoothed, tuned.weights)
    onnx.save(model, ctx.out)
    return {
        "smoothing_alpha": tuned.alpha,
        "smoothing_search": tuned.tried,
        "weight_rounding": "gptq" if tuned.weights else "nearest",
        "quantized_matmuls": count,
        "calibration_images": len(ctx.calibration_names),
        "calibration_fidelity": tuned.fidelity,
        "budget": ctx.budget.to_dict(),
        "tuned": True,
    }
