"""Variant recipes: how each ONNX file of a bundle is made from the fp32 export.

A recipe is data (name, file, description, batch invariance, settings for the
manifest) plus one build function ``(BuildContext) -> dict`` whose result is
recorded in the manifest too (chosen parameters, excluded nodes, ...).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..extras import importable
from .build_context import BuildContext
from .fp16 import build_fp16
from .int8_recipe import build_int8
from .openvino_recipe import BACKEND as OPENVINO
from .openvino_recipe import BACKEND_OPTIONS as OPENVINO_OPTIONS
from .openvino_recipe import build_int8_openvino
from .static_int8 import build_static_int8
from .weight_only import build_int4


@dataclass(frozen=True)
class Recipe:
    name: str
    file: str
    description: str
    build: Callable[[BuildContext], dict[str, Any]]
    # False when an image's result could depend on the rest of its batch (a
    # run-time activation range over the whole batch); the runtime then feeds
    # the model one image at a time.
    batch_invariant: bool = True
    # Whether the fidelity budget applies (and --strict can fail the export).
    gated: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    # The engine the runtime uses for this file (recorded in the manifest), and its options.
    backend: str = "onnxruntime"
    backend_options: dict[str, str] | None = None

    def manifest_entry(self, built: dict[str, Any]) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, **self.settings, **built}


def _copy_fp32(ctx: BuildContext) -> dict[str, Any]:
    if ctx.fp32 != ctx.out:
        shutil.copyfile(ctx.fp32, ctx.out)
    return {}


# Stock onnxruntime dynamic int8 (what Optimum's avx512_vnni config does, minus
# the attention matmuls): kept as a documented baseline for the fidelity table.
_ORT_DYNAMIC: dict[str, Any] = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "per_channel": True,
    "weight_type": "QInt8",
    "op_types_to_quantize": ["MatMul"],
    "extra_options": {"MatMulConstBOnly": True},
}


def _ort_dynamic(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Driven by the same dict the manifest records, so the two cannot drift apart.
    quantize_dynamic(ctx.fp32, ctx.out, per_channel=_ORT_DYNAMIC["per_channel"], reduce_range=False,
                     weight_type=QuantType[_ORT_DYNAMIC["weight_type"]],
                     op_types_to_quantize=_ORT_DYNAMIC["op_types_to_quantize"],
                     extra_options=_ORT_DYNAMIC["extra_options"])
    return {}


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("fp32", "model.onnx",
               "The fp32 export, validated against torch; the reference for every other variant.",
               _copy_fp32, settings={"method": "optimum.exporters.onnx"}),
        Recipe("int8", "model_int8.onnx",
               "Default. int8 weights (per channel) and int8 activations (per token) for every linear layer, "
               "SmoothQuant scales folded into the LayerNorms (alpha chosen on calibration images), attention "
               "fused into MultiHeadAttention and kept fp32, GELUs fused into FastGelu/BiasGelu; the most "
               "sensitive layers stay fp32 if needed to meet the fidelity budget.",
               build_int8, batch_invariant=True, gated=True,
               settings={"method": "deepfake_edge per-token int8 (MatMulIntegerToFloat)"}),
        Recipe("int8-ort", "model_int8_ort.onnx",
               "Baseline: onnxruntime quantize_dynamic, per-channel weights, MatMul only (MatMulConstBOnly), "
               "one activation scale per tensor per run (so it runs one image at a time).",
               _ort_dynamic, batch_invariant=False, gated=True, settings=_ORT_DYNAMIC),
        Recipe("int8-static", "model_int8_static.onnx",
               "Static QDQ int8: activation ranges calibrated once (Percentile 99.99) on the calibration "
               "images after smoothing; per-channel weights; linear layers only; attention fused and fp32, "
               "GELUs fused.",
               build_static_int8, batch_invariant=True, gated=True,
               settings={"method": "onnxruntime.quantization.quantize_static (QDQ)"}),
        Recipe("int8-ov", "model_int8_ov.onnx",
               "int8 weights tuned like int8 (smoothing, GPTQ), run by OpenVINO's CPU plugin "
               "(pip install 'deepfake-edge[openvino]'): activations quantized to int8 at run time in groups "
               "of 64 channels, everything else (attention included) in bf16 where the CPU supports it.",
               build_int8_openvino, batch_invariant=False, gated=True,
               settings={"method": "deepfake_edge weights-only int8 ONNX + OpenVINO dynamic quantization"},
               backend=OPENVINO, backend_options=OPENVINO_OPTIONS),
        Recipe("int4", "model_int4.onnx",
               "Weight-only 4-bit (MatMulNBits, blocks of 32, symmetric) for the smallest file; "
               "activations int8 inside the kernel. Fidelity is recorded as measured, even when poor.",
               build_int4, batch_invariant=False,
               settings={"method": "onnxruntime MatMulNBitsQuantizer"}),
        Recipe("fp16", "model_fp16.onnx",
               "fp16 weights and compute for GPU execution providers (CUDA, DirectML). "
               "Slower than fp32 on CPU.",
               build_fp16, settings={"method": "onnxruntime.transformers.float16"}),
    )
}

# int8-ov joins where OpenVINO is installed: Detector.load(variant="auto") prefers it on CPUs with bf16.
DEFAULT_VARIANTS: tuple[str, ...] = ("fp32", "int8", *(("int8-ov",) if importable("openvino") else ()))
DEFAULT_VARIANT = "int8"
