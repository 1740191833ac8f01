"""Variant recipes: how each ONNX file of a bundle is made from the fp32 export.

A recipe is data (name, file, description, batch invariance, settings for the
manifest) plus one build function ``(BuildContext) -> dict`` whose result is
recorded in the manifest too (chosen parameters, excluded nodes, ...).
:data:`RECIPES` is the table. Our own int8 recipes (``int8``, ``int8-ov``)
live in ``int8``; the ones that drive a library's converter are here:

* ``int8-ort``: onnxruntime's ``quantize_dynamic``, kept as a baseline;
* ``int8-static``: calibrated QDQ int8 (fixed activation ranges, batch-invariant).
  Smoothing is applied first: static per-tensor ranges suffer most from the
  LayerNorm outlier channels (the setting SmoothQuant was designed for);
* ``int4``: block-wise 4-bit weights (``MatMulNBits``) for the smallest file;
* ``fp16``: half-precision weights and compute for GPU execution providers. On
  CPU, onnxruntime has few fp16 kernels and inserts casts around the rest, so
  it is slower than fp32 there. Inputs and outputs stay float32, so the
  runtime feeds it like any other variant.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deepfake_edge.extras import importable
from deepfake_edge.session import INPUT_NAME

from .calibration import CalibrationStats
from .effort import DEFAULT_EFFORT, EFFORTS, Effort
from .fidelity import FidelityBudget
from .fusions import fuse_graph
from .int8 import OPENVINO, OPENVINO_OPTIONS, build_int8, build_int8_openvino
from .quantize import quantizable_matmuls
from .tuning import TuningMemo, smooth_layernorms

STATIC_ALPHA = 0.5
INT4_BLOCK_SIZE = 32
# accuracy_level 4: activations are quantized to int8 inside MatMulNBits, which
# uses the VNNI int8 kernels; level 0/1 would dequantize weights to fp32.
INT4_ACCURACY_LEVEL = 4


@dataclass(frozen=True)
class BuildContext:
    """What a recipe's build step gets: paths, model geometry and calibration data."""

    fp32: Path                       # the validated fp32 export
    out: Path                        # where the recipe writes its model
    calibration: np.ndarray          # NCHW float32, images recipes may tune on (never the held-out set)
    calibration_names: list[str]
    stats: CalibrationStats          # fp32 logits and activation statistics on ``calibration``
    labels: tuple[str, ...]
    positive: str | None
    num_heads: int
    hidden_size: int
    budget: FidelityBudget = field(default_factory=FidelityBudget)
    tune: bool = True                # False: skip calibration-driven search (same graph and speed)
    effort: Effort = EFFORTS[DEFAULT_EFFORT]  # how hard the search looks (when ``tune``)
    memo: TuningMemo = field(default_factory=TuningMemo)  # shared by the recipes of one export
    keep_fp32: int = 0               # int8: at least this many most-sensitive MatMuls stay fp32
    log: Callable[[str], None] = print
    # The export's gate and its held-out images (a model -> its fidelity there): the int8 recipe keeps
    # more layers in fp32 when its calibration-tuned model misses the gate there (see ``int8``).
    gate: FidelityBudget | None = None
    held_out: Callable[[onnx.ModelProto], dict[str, Any]] | None = None


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
    # True when the recipe computes the classifier differently from the float ``patch_logits``
    # branch (quantized, or bf16 in the engine): the logits are then pooled from the patch logits
    # (``evidence.pool_patch_logits``) so that every evidence map averages to its logits.
    logits_from_patches: bool = False

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


def build_fp16(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(ctx.fp32), keep_io_types=True)
    onnx.save(model, ctx.out)
    return {"keep_io_types": True, "intended_providers": ["CUDAExecutionProvider", "DmlExecutionProvider"]}


def build_int4(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    fused, fusions = fuse_graph(onnx.load(ctx.fp32), ctx.num_heads, ctx.hidden_size)
    quantizer = MatMulNBitsQuantizer(fused, block_size=INT4_BLOCK_SIZE, is_symmetric=True,
                                     accuracy_level=INT4_ACCURACY_LEVEL)
    quantizer.process()
    quantizer.model.save_model_to_file(str(ctx.out), use_external_data_format=False)
    return {"block_size": INT4_BLOCK_SIZE, "symmetric": True, "accuracy_level": INT4_ACCURACY_LEVEL, **fusions}


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an NCHW array."""

    def __init__(self, pixel_values: np.ndarray) -> None:
        self._items = iter(pixel_values)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {INPUT_NAME: item[None]}


def build_static_int8(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # Its own ranges, captured on its own (unfused) graph. The shared statistics agree with them to
    # 1e-6, yet its percentile calibration is that sensitive: held-out max |dP| on the real-weights
    # proxy went from 0.18 to 0.24 with them (measured), so this baseline keeps its old numbers.
    model = smooth_layernorms(onnx.load(ctx.fp32), ctx.calibration, alpha=STATIC_ALPHA)[0]
    # Attention's activation x activation MatMuls stay fp32 (the int8 recipe's finding: quantizing
    # them costs fidelity and saves nothing). The QDQ quantizer ignores MatMulConstBOnly, so they are
    # excluded by name; they then still match the attention fusion below.
    weights = {node.name for node in quantizable_matmuls(model)}
    activation_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in weights]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "smoothed.onnx"
        onnx.save(model, src)
        # The calibrator prints progress to stdout; keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(
                src, ctx.out, _Reader(ctx.calibration),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"], nodes_to_exclude=activation_matmuls,
                calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99},
            )
    # Fuse after quantization: the QDQ pass leaves attention MatMuls and GELUs untouched, while
    # fusing the GELUs first would hide their outputs' type from its shape inference, and it would
    # then silently skip quantizing fc2.
    fused, fusions = fuse_graph(onnx.load(ctx.out), ctx.num_heads, ctx.hidden_size)
    onnx.save(fused, ctx.out)
    return {"smoothing_alpha": STATIC_ALPHA, "calibration_images": len(ctx.calibration_names),
            "calibrate_method": "Percentile 99.99", "quantized_matmuls": len(weights), **fusions}


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("fp32", "model.onnx",
               "The fp32 export, validated against torch; the reference for every other variant.",
               _copy_fp32, settings={"method": "optimum.exporters.onnx", "attention": "fp32"}),
        Recipe("int8", "model_int8.onnx",
               "Default. int8 weights (per channel) and int8 activations (per token) for every linear layer, "
               "SmoothQuant scales folded into the LayerNorms (alpha chosen on calibration images), attention "
               "fused into MultiHeadAttention and kept fp32, GELUs fused into FastGelu/BiasGelu; the most "
               "sensitive layers stay fp32 if needed to meet the fidelity budget.",
               build_int8, batch_invariant=True, gated=True,
               settings={"method": "deepfake_edge per-token int8 (MatMulIntegerToFloat)", "attention": "fp32"}),
        Recipe("int8-ort", "model_int8_ort.onnx",
               "Baseline: onnxruntime quantize_dynamic, per-channel weights, MatMul only (MatMulConstBOnly), "
               "one activation scale per tensor per run (so it runs one image at a time).",
               _ort_dynamic, batch_invariant=False, gated=True, settings={**_ORT_DYNAMIC, "attention": "fp32"},
               logits_from_patches=True),
        Recipe("int8-static", "model_int8_static.onnx",
               "Static QDQ int8: activation ranges calibrated once (Percentile 99.99) on the calibration "
               "images after smoothing; per-channel weights; linear layers only; attention fused and fp32, "
               "GELUs fused.",
               build_static_int8, batch_invariant=True, gated=True,
               settings={"method": "onnxruntime.quantization.quantize_static (QDQ)", "attention": "fp32"}),
        Recipe("int8-ov", "model_int8_ov.onnx",
               "int8 weights tuned like int8 (smoothing, GPTQ), run by OpenVINO's CPU plugin "
               "(pip install 'deepfake-edge[openvino]'): activations quantized to int8 at run time in groups "
               "of 64 channels, everything else (attention included) in bf16 where the CPU supports it.",
               build_int8_openvino, batch_invariant=False, gated=True,
               settings={"method": "deepfake_edge weights-only int8 ONNX + OpenVINO dynamic quantization",
                         "attention": "bf16 where the CPU has it (OpenVINO), else fp32"},
               backend=OPENVINO, backend_options=OPENVINO_OPTIONS, logits_from_patches=True),
        Recipe("int4", "model_int4.onnx",
               "Weight-only 4-bit (MatMulNBits, blocks of 32, symmetric) for the smallest file; "
               "activations int8 inside the kernel. Fidelity is recorded as measured, even when poor.",
               build_int4, batch_invariant=False,
               settings={"method": "onnxruntime MatMulNBitsQuantizer", "attention": "fp32"}),
        Recipe("fp16", "model_fp16.onnx",
               "fp16 weights and compute for GPU execution providers (CUDA, DirectML). "
               "Slower than fp32 on CPU.",
               build_fp16, settings={"method": "onnxruntime.transformers.float16", "attention": "fp16"}),
    )
}

# int8-ov joins where OpenVINO is installed: Detector.load(variant="auto") prefers it on CPUs with bf16.
DEFAULT_VARIANTS: tuple[str, ...] = ("fp32", "int8", *(("int8-ov",) if importable("openvino") else ()))
DEFAULT_VARIANT = "int8"
