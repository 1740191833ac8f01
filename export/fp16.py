"""``fp16``: half-precision weights and compute, for GPU execution providers.

On CPU, onnxruntime has few fp16 kernels and inserts casts around the rest, so
this variant is slower than fp32 there; it exists for CUDA/DirectML/CoreML users.
Inputs and outputs stay float32 so the runtime feeds it like any other variant.
"""

from __future__ import annotations

from typing import Any

import onnx

from .build_context import BuildContext


def build_fp16(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(ctx.fp32), keep_io_types=True)
    onnx.save(model, ctx.out)
    return {"keep_io_types": True, "intended_providers": ["CUDAExecutionProvider", "DmlExecutionProvider"]}
