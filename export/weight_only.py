"""``int4``: block-wise 4-bit weights (``MatMulNBits``) for the smallest file."""

from __future__ import annotations

from typing import Any

import onnx

from .attention_fusion import fuse_attention
from .build_context import BuildContext
from .elementwise_fusion import fuse_elementwise

BLOCK_SIZE = 32
# accuracy_level 4: activations are quantized to int8 inside MatMulNBits, which
# uses the VNNI int8 kernels; level 0/1 would dequantize weights to fp32.
ACCURACY_LEVEL = 4


def build_int4(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    fused, attention = fuse_attention(onnx.load(ctx.fp32), ctx.num_heads)
    quantizer = MatMulNBitsQuantizer(fused, block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=ACCURACY_LEVEL)
    quantizer.process()
    model, fusions = fuse_elementwise(quantizer.model.model)
    onnx.save(model, ctx.out)
    return {"block_size": BLOCK_SIZE, "symmetric": True, "accuracy_level": ACCURACY_LEVEL, "attention_fused": attention,
            **fusions.record()}
