"""8-bit attention after SageAttention (Zhang et al., ICLR 2025), in standard onnxruntime ops.

:func:`quantize_attention` replaces each fused fp32 ``com.microsoft.MultiHeadAttention``
(see ``fusions``) with int8 GEMMs on VNNI:

* ``S = Q Kᵀ`` as ``MatMulIntegerToFloat`` on uint8 Q (one scale per token and
  head, the attention scale folded in) and int8 K (one scale per token and head)
  after **subtracting K's mean over tokens**. Softmax is invariant to adding a
  constant per query row, and ``q·mean(K)`` is one, so the shift is exact
  before rounding; it also removes K's channel outliers (and K's bias, which is
  part of the mean). :func:`center_keys` is that shift alone, in fp32.
* ``P = Softmax(S)``, then uint8 P with one scale per row (``max(P_row) / 255``)
  against int8 V with one scale per channel (over the tokens), again as
  ``MatMulIntegerToFloat``.
* Heads run as separate ops on ``Split`` tensors: each head's [T, T] scores
  (4 MB at 1024 tokens) stay in cache between the GEMM, the softmax and the
  quantization. Batched over all heads at once the same ops were slower than
  the fused fp32 kernel (the 48 MB score tensor goes through memory four
  times); split per head they took 0.85x its CPU time (docs/attention-int8.md).
* V minus its mean over tokens, added back after P·V (exact: rows of P sum to 1).

Not applied by any recipe: on the real-weights proxy it moved p99 |ΔP| above
the ``int8`` budget for a 4-7 % saving (docs/attention-int8.md). The latency
benchmark times it (variant ``int8-att8``).

Every scale is per image, so the result does not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import MS_DOMAIN, replace_nodes

ATTENTION_FP32, ATTENTION_INT8 = "fp32", "int8"
_EPS = 1e-12  # keeps an all-zero row from dividing by zero
_CONSTANTS = {
    "dfe_att_eps": np.array(_EPS, np.float32),
    "dfe_att_inv127": np.array(1.0 / 127.0, np.float32),
    "dfe_att_inv255": np.array(1.0 / 255.0, np.float32),
    "dfe_att_one": np.array(1.0, np.float32),
    "dfe_att_zp_s8": np.array(0, np.int8),
    "dfe_att_zp_u8_128": np.array(128, np.uint8),
    "dfe_att_last": np.array([-1], np.int64),
    "dfe_att_tokens": np.array([1], np.int64),
    "dfe_att_two": np.array([2], np.int64),
    "dfe_att_one_i64": np.array([1], np.int64),
    "dfe_att_flat": np.array([-1], np.int64),
}


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _mha_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MultiHeadAttention nodes this pass understands: q, k, v [N, T, C] and an optional packed bias."""
    return [n for n in model.graph.node
            if n.op_type == "MultiHeadAttention" and n.domain == MS_DOMAIN and 3 <= len(n.input) <= 4
            and all(n.input[:3])]


def _bias_parts(model: onnx.ModelProto, node: onnx.NodeProto) -> list[np.ndarray] | None:
    if len(node.input) < 4 or not node.input[3]:
        return None
    inits = {i.name: i for i in model.graph.initializer}
    bias = numpy_helper.to_array(inits[node.input[3]])
    return list(np.split(bias.astype(np.float32), 3))


class _Builder:
    """Collects the nodes and initializers of one rewritten attention block."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def op(self, op_type: str, inputs: list[str], name: str, *, outputs: int = 1, domain: str = "",
           **attrs: object) -> str:
        out = [f"{self.prefix}/{name}" + (f"_{i}" if outputs > 1 else "") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, out, name=f"{self.prefix}/{name}", domain=domain,
                                           **attrs))
        return out[0]

    def const(self, name: str, value: np.ndarray) -> str:
        full = f"{self.prefix}/{name}"
        self.inits.append(numpy_helper.from_array(value, full))
        return full

    def add_bias(self, x: str, bias: np.ndarray | None, name: str) -> str:
        return x if bias is None else self.op("Add", [x, self.const(f"{name}_bias", bias)], f"{name}_biased")

    def mean_row(self, x: str) -> str:
        """A [1, T] row of 1/T for ``x`` [N, T, C]: ``MatMul(row, x)`` is the mean over tokens, [N, 1, C].

        onnxruntime 1.32 reduces over a middle axis slowly: ``ReduceMean`` over the
        tokens of a [1, 1024, 768] tensor took 1.0 ms, this GEMV 0.07 ms.
        """
        tokens = self.op("Slice", [self.op("Shape", [x], "x_shape"), "dfe_att_tokens", "dfe_att_two"], "tokens")
        ones = self.op("ConstantOfShape", [self.op("Concat", ["dfe_att_one_i64", tokens], "row_shape", axis=0)],
                       "ones", value=numpy_helper.from_array(np.array([1.0], np.float32)))
        return self.op("Div", [ones, self.op("Cast", [tokens], "count", to=onnx.TensorProto.FLOAT)], "mean_row")

    def per_row(self, x4: str, name: str, signed: bool) -> tuple[str, str]:
        """``x4`` [N, T, H, D] -> (int8 or uint8 [N, T, H, D], scale [N, T, H, 1]): one scale per token and head.

        QuantizeLinear takes 1-D scales only, so the rows are viewed as a [N*T*H, D] matrix.
        """
        amax = self.op("ReduceMax", [self.op("Abs", [x4], f"{name}_abs"), "dfe_att_last"], f"{name}_amax",
                       keepdims=1)
        scale = self.op("Mul", [self.op("Max", [amax, "dfe_att_eps"], f"{name}_amax_eps"), "dfe_att_inv127"],
                        f"{name}_scale")
        scale_1d = self.op("Reshape", [scale, "dfe_att_flat"], f"{name}_scale_1d")
        zero = numpy_helper.from_array(np.array([0 if signed else 128], np.int8 if signed else np.uint8))
        zp = self.op("ConstantOfShape", [self.op("Shape", [scale_1d], f"{name}_rows")], f"{name}_zp", value=zero)
        rows = self.op("Flatten", [x4], f"{name}_as_rows", axis=3)
        q_rows = self.op("QuantizeLinear", [rows, scale_1d, zp], f"{name}_q_rows", axis=0)
        return self.op("Reshape", [q_rows, self.op("Shape", [x4], f"{name}_shape")], f"{name}_q"), scale


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto, index: int, pv_int8: bool) -> _Builder:
    attrs = _attrs(node)
    heads = int(attrs["num_heads"])  # type: ignore[call-overload]
    b = _Builder(f"dfe_att{index}")
    q_bias, _k_bias, v_bias = _bias_parts(model, node) or (None, None, None)
    width = None if q_bias is None else q_bias.size
    split_heads = b.const("heads_shape", np.array([0, 0, heads, -1], np.int64))
    if "scale" in attrs:
        attention_scale = float(attrs["scale"])  # type: ignore[arg-type]
    else:
        if width is None:
            raise ValueError(f"{node.name}: MultiHeadAttention without scale or bias: head size unknown")
        attention_scale = (width // heads) ** -0.5

    # Q: uint8 per (token, head); the attention scale goes into Q's scales.
    q4 = b.op("Reshape", [b.add_bias(node.input[0], q_bias, "q"), split_heads], "q_heads")
    q_q, q_scale = b.per_row(q4, "q", signed=False)
    q_scale = b.op("Mul", [q_scale, b.const("attention_scale", np.array(attention_scale, np.float32))],
                   "q_scale_att")
    q_t = b.op("Transpose", [q_q], "q_t", perm=[0, 2, 1, 3])  # [N, H, T, D]
    q_scale_t = b.op("Transpose", [q_scale], "q_scale_t", perm=[0, 2, 1, 3])  # [N, H, T, 1]

    # K: minus its mean over tokens (exact for the softmax; the K bias cancels), int8 per (token, head).
    mean_row = b.mean_row(node.input[1])
    k = b.op("Sub", [node.input[1], b.op("MatMul", [mean_row, node.input[1]], "k_mean")], "k_centered")
    k_q, k_scale = b.per_row(b.op("Reshape", [k, split_heads], "k_heads"), "k", signed=True)
    k_t = b.op("Transpose", [k_q], "k_t", perm=[0, 2, 3, 1])  # [N, H, D, T]
    k_scale_t = b.op("Transpose", [k_scale], "k_scale_t", perm=[0, 2, 3, 1])  # [N, H, 1, T]

    # V: int8 per channel over the tokens. Dividing first lets one per-tensor QuantizeLinear
    # do it (its per-axis form along the last axis was 10x slower). fp32 P·V keeps V as it is.
    v = b.add_bias(node.input[2], v_bias, "v")
    v_mean = None
    if pv_int8:
        # V minus its mean over tokens, added back after P·V: exact, since each row of P sums
        # to 1. The mass rounding takes from P (small probabilities become 0) then no longer
        # pulls the output towards 0 by the mean; and V loses its channel offsets.
        v_mean = b.op("MatMul", [mean_row, v], "v_mean")
        v = b.op("Sub", [v, v_mean], "v_centered")
        # max |V| over the tokens, reduced along the last axis of Vᵀ: 0.6 ms against 1.1 ms over the middle axis
        v_abs_t = b.op("Transpose", [b.op("Abs", [v], "v_abs")], "v_abs_t", perm=[0, 2, 1])
        v_amax = b.op("Transpose", [b.op("ReduceMax", [v_abs_t, "dfe_att_last"], "v_amax_t", keepdims=1)], "v_amax",
                      perm=[0, 2, 1])  # [N, 1, C]
        v_scale = b.op("Mul", [b.op("Max", [v_amax, "dfe_att_eps"], "v_amax_eps"), "dfe_att_inv127"], "v_scale")
        v = b.op("QuantizeLinear", [b.op("Div", [v, v_scale], "v_unit"), "dfe_att_one", "dfe_att_zp_s8"], "v_q")
        v_scale_t = b.op("Transpose", [b.op("Reshape", [v_scale, split_heads], "v_scale_heads")], "v_scale_t",
                         perm=[0, 2, 1, 3])  # [N, H, 1, D]
    v_t = b.op("Transpose", [b.op("Reshape", [v, split_heads], "v_heads")], "v_t", perm=[0, 2, 1, 3])

    ones = b.const("split", np.ones(heads, np.int64))
    parts = {name: b.op("Split", [tensor, ones], f"{name}_split", outputs=heads, axis=1)
             for name, tensor in (("q", q_t), ("qs", q_scale_t), ("k", k_t), ("ks", k_scale_t), ("v", v_t),
                                  *((("vs", v_scale_t),) if pv_int8 else ()))}
    outputs = []
    for h in range(heads):
        part = {name: first[: -len("_0")] + f"_{h}" for name, first in parts.items()}
        scores = b.op("MatMulIntegerToFloat", [part["q"], part["k"], part["qs"], part["ks"], "dfe_att_zp_u8_128"],
                      f"h{h}/scores", domain=MS_DOMAIN)
        p = b.op("Softmax", [scores], f"h{h}/softmax", axis=-1)
        if not pv_int8:
            outputs.append(b.op("MatMul", [p, part["v"]], f"h{h}/context"))
            continue
        p_max = b.op("ReduceMax", [p, "dfe_att_last"], f"h{h}/p_max", keepdims=1)  # [N, 1, T, 1]
        p_scale = b.op("Mul", [p_max, "dfe_att_inv255"], f"h{h}/p_scale")
        p_rows = b.op("QuantizeLinear", [b.op("Flatten", [p], f"h{h}/p_rows", axis=3),
                                         b.op("Reshape", [p_scale, "dfe_att_flat"], f"h{h}/p_scale_1d")],
                      f"h{h}/p_q_rows", axis=0)  # uint8, zero point 0: P is in [0, 1]
        p_q = b.op("Reshape", [p_rows, b.op("Shape", [p], f"h{h}/p_shape")], f"h{h}/p_q")
        outputs.append(b.op("MatMulIntegerToFloat", [p_q, part["v"], p_scale, part["vs"]], f"h{h}/context",
                            domain=MS_DOMAIN))
    context = b.op("Transpose", [b.op("Concat", outputs, "heads", axis=1)], "context_t", perm=[0, 2, 1, 3])
    merged = b.const("merged_shape", np.array([0, 0, -1], np.int64))
    if v_mean is None:
        b.nodes.append(helper.make_node("Reshape", [context, merged], [node.output[0]], name=f"{b.prefix}/merge"))
    else:
        merged_out = b.op("Reshape", [context, merged], "merge")
        b.nodes.append(helper.make_node("Add", [merged_out, v_mean], [node.output[0]], name=f"{b.prefix}/uncenter"))
    return b


def quantize_attention(model: onnx.ModelProto, *, pv_int8: bool = True,
                       exclude: Iterable[str] = ()) -> tuple[onnx.ModelProto, int]:
    """Return a copy of ``model`` with every fused MultiHeadAttention in int8, and how many were replaced.

    ``pv_int8=False`` keeps P·V in fp32 (per head), quantizing only Q Kᵀ;
    ``exclude`` names MultiHeadAttention nodes to keep in fp32.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    kept = set(exclude)
    targets = [node for node in _mha_nodes(model) if node.name not in kept]
    if not targets:
        return model, 0
    builders = [_rewrite(model, node, i, pv_int8) for i, node in enumerate(targets)]
    constants = [numpy_helper.from_array(value, name) for name, value in _CONSTANTS.items()]
    replace_nodes(model, targets, [n for b in builders for n in b.nodes],
                  constants + [t for b in builders for t in b.inits])
    return model, len(targets)


def center_keys(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The K-mean shift alone, in fp32: each MultiHeadAttention reads ``K - mean_tokens(K)`` and no K bias.

    Exact up to fp32 rounding (softmax is invariant to a constant per query row);
    the int8 pass relies on it, and the tests check it on its own.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    targets = _mha_nodes(model)
    added: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    for i, node in enumerate(targets):
        p, k = f"dfe_center{i}", node.input[1]
        added += [helper.make_node("ReduceMean", [k, "dfe_att_tokens"], [f"{p}/k_mean"], name=f"{p}/mean",
                                   keepdims=1),
                  helper.make_node("Sub", [k, f"{p}/k_mean"], [f"{p}/k_centered"], name=f"{p}/center")]
        node.input[1] = f"{p}/k_centered"
        parts = _bias_parts(model, node)
        if parts is not None:
            parts[1] = np.zeros_like(parts[1])
            name = f"{p}/qkv_bias"
            inits.append(numpy_helper.from_array(np.concatenate(parts), name))
            node.input[3] = name
    if targets:
        inits.append(numpy_helper.from_array(_CONSTANTS["dfe_att_tokens"], "dfe_att_tokens"))
    replace_nodes(model, [], added, inits)
    return model, len(targets)


def attention_precision(model: onnx.ModelProto) -> str:
    """``"int8"`` when no fp32 MultiHeadAttention is left and int8 attention blocks are present, else ``"fp32"``."""
    ops = [(n.op_type, n.name) for n in model.graph.node]
    if any(op == "MultiHeadAttention" for op, _ in ops):
        return ATTENTION_FP32
    return ATTENTION_INT8 if any(name.startswith("dfe_att") for _, name in ops) else ATTENTION_FP32



def with_attention(model: onnx.ModelProto, precision: str) -> tuple[onnx.ModelProto, dict[str, object]]:
    """The ``int8`` recipe's hook: ``model`` with its attention in ``precision``, and the manifest record."""
    if precision not in (ATTENTION_FP32, ATTENTION_INT8):
        raise ValueError(f"attention precision {precision!r}: expected {ATTENTION_FP32!r} or {ATTENTION_INT8!r}")
    if precision == ATTENTION_FP32:
        return model, {"attention": ATTENTION_FP32}
    quantized, count = quantize_attention(model)
    return quantized, {"attention": attention_precision(quantized), "attention_int8_blocks": count}
