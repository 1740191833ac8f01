"""Dynamic int8 with *per-token* activation scales: a graph rewrite onto onnxruntime ops.

Why not onnxruntime's ``quantize_dynamic``? Its ``DynamicQuantizeMatMul`` computes
one activation scale per tensor, i.e. across all 1,024 tokens (and across the
whole batch). A few outlier tokens then set the scale for everyone, and on real
ViT weights that moved P(fake) by up to 0.06 even with per-channel weights.
Giving every token its own scale is the standard fix for transformer
activations (LLM.int8(), ZeroQuant) and, as a bonus, makes the result
independent of the rest of the batch.

For every ``MatMul`` whose B input is a constant 2-D weight ``W [K, N]``:

* ``W`` becomes int8, symmetric, one scale per output column (per-channel);
* its activation input ``A [..., K]`` is quantized once per consumer group
  (q, k and v share one quantized input) to uint8 with a per-token scale::

      a_scale = max(|A|, axis=-1) / 127              # [..., 1]
      A_q     = QuantizeLinear(A, a_scale, 128)      # uint8, zero point 128 (symmetric)

* ``com.microsoft.MatMulIntegerToFloat(A_q, W_q, a_scale, w_scale, 128)`` does
  the u8 x s8 GEMM (VNNI) and the dequantization in one kernel. Its optional
  ``bias`` input is *not* used: with a per-token ``a_scale`` onnxruntime 1.32
  adds it wrongly (measured), so the model's own bias ``Add`` stays.

Attention's activation x activation MatMuls stay fp32 (no constant B).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph_index import MS_DOMAIN, replace_nodes

_ZERO_POINT = 128
_EPS = 1e-12  # keeps an all-zero token from dividing by zero


@dataclass(frozen=True)
class QuantizedNode:
    name: str
    k: int
    n: int


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def quantizable_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose B input is a constant 2-D float weight, in graph order."""
    inits = _initializers(model)
    return [
        node
        for node in model.graph.node
        if node.op_type == "MatMul"
        and node.input[1] in inits
        and len(inits[node.input[1]].dims) == 2
        and inits[node.input[1]].data_type == TensorProto.FLOAT
    ]


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column: W ~= W_q * scale[None, :]."""
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return q, scale


def quantize_per_token(
    model: onnx.ModelProto,
    *,
    exclude: Iterable[str] = (),
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[onnx.ModelProto, list[QuantizedNode]]:
    """Return a rewritten copy of ``model`` and the MatMul nodes that were quantized.

    ``exclude`` lists MatMul node names to keep in fp32 (mixed precision).
    ``weights`` optionally gives pre-rounded ``(int8 [K, N], scale [N])`` per node
    name (e.g. from GPTQ); other nodes use round-to-nearest.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = _initializers(model)
    excluded = set(exclude)
    targets = [n for n in quantizable_matmuls(model) if n.name not in excluded]

    by_input: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in targets:
        by_input[node.input[0]].append(node)

    added: list[onnx.NodeProto] = []
    removed: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array(_ZERO_POINT, np.uint8), "dfe_zp_u8"),
        numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "dfe_inv127"),
        numpy_helper.from_array(np.array(_EPS, np.float32), "dfe_eps"),
        numpy_helper.from_array(np.array([-1], np.int64), "dfe_last_axis"),
        numpy_helper.from_array(np.array([-1], np.int64), "dfe_flat"),
    ]
    done: list[QuantizedNode] = []
    for group_index, (a_name, nodes) in enumerate(by_input.items()):
        p = f"dfe_tok{group_index}"
        k = int(inits[nodes[0].input[1]].dims[0])
        rows = f"dfe_rows_k{k}"
        if rows not in {i.name for i in new_inits}:
            new_inits.append(numpy_helper.from_array(np.array([-1, k], np.int64), rows))
        # One QuantizeLinear pass does divide, round, +128 and saturate. It takes
        # per-axis (1-D) scales only, so the tokens are viewed as rows of a 2-D
        # matrix (reshapes are free) and quantized along axis 0.
        added.extend([
            helper.make_node("Abs", [a_name], [f"{p}_abs"], name=f"{p}/Abs"),
            helper.make_node("ReduceMax", [f"{p}_abs", "dfe_last_axis"], [f"{p}_amax"], name=f"{p}/ReduceMax",
                             keepdims=1),
            helper.make_node("Max", [f"{p}_amax", "dfe_eps"], [f"{p}_amax_eps"], name=f"{p}/Max"),
            helper.make_node("Mul", [f"{p}_amax_eps", "dfe_inv127"], [f"{p}_scale"], name=f"{p}/Scale"),
            helper.make_node("Reshape", [f"{p}_scale", "dfe_flat"], [f"{p}_scale_1d"], name=f"{p}/ScaleRows"),
            helper.make_node("Shape", [f"{p}_scale_1d"], [f"{p}_n_rows"], name=f"{p}/NRows"),
            helper.make_node("ConstantOfShape", [f"{p}_n_rows"], [f"{p}_zp"], name=f"{p}/ZeroPoint",
                             value=numpy_helper.from_array(np.array([_ZERO_POINT], np.uint8))),
            helper.make_node("Reshape", [a_name, rows], [f"{p}_rows"], name=f"{p}/Rows"),
            helper.make_node("QuantizeLinear", [f"{p}_rows", f"{p}_scale_1d", f"{p}_zp"], [f"{p}_q_rows"],
                             name=f"{p}/Quantize", axis=0),
            helper.make_node("Shape", [a_name], [f"{p}_shape"], name=f"{p}/Shape"),
            helper.make_node("Reshape", [f"{p}_q_rows", f"{p}_shape"], [f"{p}_q"], name=f"{p}/Unrows"),
        ])
        for node in nodes:
            weight = numpy_helper.to_array(inits[node.input[1]])
            k, n = weight.shape
            w_q, w_scale = weights[node.name] if weights and node.name in weights else quantize_weight(weight)
            wq_name, ws_name = f"{node.name}/W_int8", f"{node.name}/W_scale"
            new_inits += [numpy_helper.from_array(w_q, wq_name), numpy_helper.from_array(w_scale, ws_name)]
            inputs = [f"{p}_q", wq_name, f"{p}_scale", ws_name, "dfe_zp_u8"]
            added.append(
                helper.make_node("MatMulIntegerToFloat", inputs, [node.output[0]], name=f"{node.name}/PerToken",
                                 domain=MS_DOMAIN)
            )
            removed.append(node)
            done.append(QuantizedNode(node.name, k, n))

    replace_nodes(model, removed, added, new_inits)  # sorts the new nodes in, drops the fp32 weights
    return model, done
