"""Weights-only int8 as plain ONNX: each constant weight becomes ``DequantizeLinear(W_q, scale)``.

The file stays a standard ONNX graph (any engine can run it, dequantizing the
weights), and OpenVINO's CPU plugin recognises the pattern as compressed
weights: it keeps them int8 and, with dynamic quantization enabled, runs the
GEMM on int8 activations (``int8-ov`` recipe).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_index import replace_nodes
from .per_token_int8 import quantizable_matmuls, quantize_weight


def dequantized_weights(
    model: onnx.ModelProto, weights: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> tuple[onnx.ModelProto, int]:
    """Return a copy with every constant MatMul weight stored as int8 (per output column), and the count.

    ``weights`` optionally gives pre-rounded ``(int8 [K, N], scale [N])`` per node name (GPTQ).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: i for i in model.graph.initializer}
    dequantize: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    targets = quantizable_matmuls(model)
    for node in targets:
        if weights and node.name in weights:
            w_q, scale = weights[node.name]
        else:
            w_q, scale = quantize_weight(numpy_helper.to_array(inits[node.input[1]]))
        q_name, s_name, out = f"{node.name}/W_int8", f"{node.name}/W_scale", f"{node.name}/W"
        added += [numpy_helper.from_array(w_q, q_name), numpy_helper.from_array(scale, s_name)]
        dequantize.append(helper.make_node("DequantizeLinear", [q_name, s_name], [out], name=f"{node.name}/Dequantize",
                                           axis=1))
        node.input[1] = out
    replace_nodes(model, [], dequantize, added)  # sorts the new nodes in, drops the fp32 weights
    return model, len(targets)
