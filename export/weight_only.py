"""``int4``: block-wise 4-bit weights (``MatMulNBits``) for the smallest file."""

from __future__ import annotations

from typing import Any

import onnx

from .build_context import BuildContext
from .graph_fusions import fuse_graph

BLOCK_SIZE = 32
# accuracy_level 4: activations are quantized to int8 inside MatMulNBits, which
# uses the VNNI int8 kernels; level 0/1 would dequantize weights to fp32.
ACCURACY_LEVEL = 4


def build_int4(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    fused, fusions = fuse_graph(onnx.load(ctx.fp32), ctx.num_heads, ctx.hidden_size)
    quantizer = MatMulNBitsQuantizer(fused, block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=ACCURACY_LEVEL)
    quantizer.process()
    quantizer.model.save_model_to_file(str(ctx.out), use_external_data_format=False)
    return {"block_size": BLOCK_SIZE, "symmetric": True, "accuracy_level": ACCURACY_LEVEL, **fusions}
