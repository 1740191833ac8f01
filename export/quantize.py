"""The int8 graph rewrites: per-token dynamic int8 (``int8``) and weights-only int8 (``int8-ov``).

Both quantize the same weights: every ``MatMul`` whose B input is a constant
2-D weight (:func:`quantizable_matmuls`), symmetric int8 with one scale per
output column (:func:`quantize_weight`, or GPTQ-rounded weights passed in).

Per-token dynamic int8
----------------------
Why not onnxruntime's ``quantize_dynamic``? Its ``DynamicQuantizeMatMul`` computes
one activation scale per tensor, i.e. across all 1,024 tokens (and across the
whole batch). A few outlier tokens then set the scale for everyone, and on real
ViT weights that moved P(fake) by up to 0.06 even with per-channel weights.
Giving every token its own scale is the standard fix for transformer
activations (LLM.int8(), ZeroQuant) and, as a bonus, makes the result
independent of the rest of the batch.

For every such ``MatMul`` with weight ``W [K, N]``:

* ``W`` becomes int8 as above;
* its activation input ``A [..., K]`` is quantized once per consumer group
  (q, k and v share one quantized input) to uint8 with a per-token scale::

      a_scale = max(|A|, axis=-1) / 127              # [..., 1]
      A_q     = QuantizeLinear(A, a_scale, 128)      # uint8, zero point 128 (symmetric)

* ``com.microsoft.MatMulIntegerToFloat(A_q, W_q, a_scale, w_scale, 128)`` does
  the u8 x s8 GEMM (VNNI) and the dequantization in one kernel. Its optional
  ``bias`` input is *not* used: with a per-token ``a_scale`` onnxruntime 1.32
  adds it wrongly (measured), so the model's own bias ``Add`` stays.

Inputs that are GELU outputs (fc2's) are one-sided: nothing below -0.17, a long
tail above. A symmetric scale spends half the 8 bits on values that never occur,
so those tokens are quantized *centred*: with ``c`` the midpoint of the token's
range, ``A_q = QuantizeLinear(A, s, 128 - round(c / s))`` (a per-token zero
point) and ``s = (max - min) / 254``, which doubles the resolution. The GEMM
then computes ``(A - c') @ W``, and ``c' * colsum(W)`` is added back (exact:
``c' = (128 - zp) * s`` is what the zero point removed). On the real-weights
proxy, the fc2 layers were the ones the sensitivity search kept in fp32.

Attention's activation x activation MatMuls stay fp32 (no constant B).

Weights-only int8
-----------------
Each constant weight becomes ``DequantizeLinear(W_q, scale)``: the file stays
a standard ONNX graph (any engine can run it, dequantizing the weights), and
OpenVINO's CPU plugin recognises the pattern as compressed weights: it keeps
them int8 and, with dynamic quantization enabled, runs the GEMM on int8
activations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import MS_DOMAIN, replace_nodes

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


# Ops whose outputs are one-sided (GELU: >= -0.17), quantized centred (see the module docstring).
ONE_SIDED_OPS = ("FastGelu", "BiasGelu", "Gelu")


def _symmetric_token_scale(p: str, a_name: str) -> list[onnx.NodeProto]:
    """``{p}_scale`` = max|A| / 127 per token and ``{p}_zp`` = 128 per row (``{p}_n_rows`` rows)."""
    return [
        helper.make_node("Abs", [a_name], [f"{p}_abs"], name=f"{p}/Abs"),
        helper.make_node("ReduceMax", [f"{p}_abs", "dfe_last_axis"], [f"{p}_amax"], name=f"{p}/ReduceMax",
                         keepdims=1),
        helper.make_node("Max", [f"{p}_amax", "dfe_eps"], [f"{p}_amax_eps"], name=f"{p}/Max"),
        helper.make_node("Mul", [f"{p}_amax_eps", "dfe_inv127"], [f"{p}_scale"], name=f"{p}/Scale"),
        helper.make_node("Reshape", [f"{p}_scale", "dfe_flat"], [f"{p}_scale_1d"], name=f"{p}/ScaleRows"),
        helper.make_node("Shape", [f"{p}_scale_1d"], [f"{p}_n_rows"], name=f"{p}/NRows"),
        helper.make_node("ConstantOfShape", [f"{p}_n_rows"], [f"{p}_zp"], name=f"{p}/ZeroPoint",
                         value=numpy_helper.from_array(np.array([_ZERO_POINT], np.uint8))),
    ]


def _centred_token_scale(p: str, a_name: str) -> list[onnx.NodeProto]:
    """``{p}_scale`` = max(max - min, |max + min|) / 254 per token, ``{p}_zp`` = 128 - round(mid / scale) per row, and
    ``{p}_shift`` = (128 - zp) * scale [..., 1]: what the zero point takes off every value of the token."""
    return [
        helper.make_node("ReduceMax", [a_name, "dfe_last_axis"], [f"{p}_max"], name=f"{p}/ReduceMax", keepdims=1),
        helper.make_node("ReduceMin", [a_name, "dfe_last_axis"], [f"{p}_min"], name=f"{p}/ReduceMin", keepdims=1),
        helper.make_node("Sub", [f"{p}_max", f"{p}_min"], [f"{p}_range"], name=f"{p}/Range"),
        helper.make_node("Add", [f"{p}_max", f"{p}_min"], [f"{p}_sum"], name=f"{p}/Sum"),
        # |max + min| bounds the scale from below so that |mid / scale| <= 127 and the zero point stays
        # in uint8 (a token of nearly equal positive values gets the symmetric scale instead).
        helper.make_node("Abs", [f"{p}_sum"], [f"{p}_abs_sum"], name=f"{p}/AbsSum"),
        helper.make_node("Max", [f"{p}_range", f"{p}_abs_sum", "dfe_eps"], [f"{p}_span"], name=f"{p}/Max"),
        helper.make_node("Mul", [f"{p}_span", "dfe_inv254"], [f"{p}_scale"], name=f"{p}/Scale"),
        helper.make_node("Div", [f"{p}_sum", f"{p}_scale"], [f"{p}_mid2"], name=f"{p}/Mid"),
        helper.make_node("Mul", [f"{p}_mid2", "dfe_half"], [f"{p}_mid"], name=f"{p}/Half"),
        helper.make_node("Round", [f"{p}_mid"], [f"{p}_mid_q"], name=f"{p}/RoundMid"),
        helper.make_node("Mul", [f"{p}_mid_q", f"{p}_scale"], [f"{p}_shift"], name=f"{p}/Shift"),
        helper.make_node("Sub", ["dfe_zp_f", f"{p}_mid_q"], [f"{p}_zp_f"], name=f"{p}/ZeroPointF"),
        helper.make_node("Reshape", [f"{p}_zp_f", "dfe_flat"], [f"{p}_zp_f1d"], name=f"{p}/ZeroPointRows"),
        helper.make_node("Cast", [f"{p}_zp_f1d"], [f"{p}_zp"], name=f"{p}/ZeroPoint", to=TensorProto.UINT8),
        helper.make_node("Reshape", [f"{p}_scale", "dfe_flat"], [f"{p}_scale_1d"], name=f"{p}/ScaleRows"),
    ]


def quantize_per_token(
    model: onnx.ModelProto,
    *,
    exclude: Iterable[str] = (),
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    centre: bool = True,
) -> tuple[onnx.ModelProto, list[QuantizedNode]]:
    """Return a rewritten copy of ``model`` and the MatMul nodes that were quantized.

    ``exclude`` lists MatMul node names to keep in fp32 (mixed precision).
    ``weights`` optionally gives pre-rounded ``(int8 [K, N], scale [N])`` per node
    name (e.g. from GPTQ); other nodes use round-to-nearest. ``centre`` quantizes
    the outputs of ``ONE_SIDED_OPS`` centred (see the module docstring).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = _initializers(model)
    excluded = set(exclude)
    targets = [n for n in quantizable_matmuls(model) if n.name not in excluded]
    one_sided = {o for n in model.graph.node if n.op_type in ONE_SIDED_OPS for o in n.output} if centre else set()

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
        numpy_helper.from_array(np.array(1.0 / 254.0, np.float32), "dfe_inv254"),
        numpy_helper.from_array(np.array(0.5, np.float32), "dfe_half"),
        numpy_helper.from_array(np.array(_ZERO_POINT, np.float32), "dfe_zp_f"),
    ]
    done: list[QuantizedNode] = []
    for group_index, (a_name, nodes) in enumerate(by_input.items()):
        p = f"dfe_tok{group_index}"
        k = int(inits[nodes[0].input[1]].dims[0])
        rows = f"dfe_rows_k{k}"
        if rows not in {i.name for i in new_inits}:
            new_inits.append(numpy_helper.from_array(np.array([-1, k], np.int64), rows))
        # One QuantizeLinear pass does divide, round, add the zero point and saturate. It takes
        # per-axis (1-D) scales only, so the tokens are viewed as rows of a 2-D
        # matrix (reshapes are free) and quantized along axis 0.
        centred = a_name in one_sided
        added.extend(_centred_token_scale(p, a_name) if centred else _symmetric_token_scale(p, a_name))
        added.extend([
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
            gemm_out = f"{node.name}/centred" if centred else node.output[0]
            added.append(
                helper.make_node("MatMulIntegerToFloat", inputs, [gemm_out], name=f"{node.name}/PerToken",
                                 domain=MS_DOMAIN)
            )
            if centred:  # add back shift * colsum(W_q * w_scale), the part the zero point took off
                colsum = (w_q.astype(np.float64) * w_scale.astype(np.float64)).sum(axis=0).astype(np.float32)
                new_inits.append(numpy_helper.from_array(colsum, f"{node.name}/W_colsum"))
                added += [
                    helper.make_node("Mul", [f"{p}_shift", f"{node.name}/W_colsum"], [f"{node.name}/restore"],
                                     name=f"{node.name}/Restore"),
                    helper.make_node("Add", [gemm_out, f"{node.name}/restore"], [node.output[0]],
                                     name=f"{node.name}/Restored"),
                ]
            removed.append(node)
            done.append(QuantizedNode(node.name, k, n))

    replace_nodes(model, removed, added, new_inits)  # sorts the new nodes in, drops the fp32 weights
    return model, done


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
