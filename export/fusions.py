"""The graph fusions every onnxruntime-quantized recipe applies: attention, then GELU.

Both are exact in fp32; the README's "Graph fusions" section has the
measurements behind them. :func:`fuse_graph` runs them in their order and
returns the counts the manifest records.

Attention
---------
onnxruntime's transformer optimizer does not recognise the pattern torch
exports for SigLIP attention (onnxruntime 1.32, TorchScript and dynamo exports alike), so the 12 layers
each run ~10 separate ops: reshapes, transposes, two scale ``Mul``s, two
batched MatMuls and a Softmax, with the full [heads, T, T] score tensor
written to and read back from memory. ``com.microsoft.MultiHeadAttention``
computes the same thing in one kernel.

The pattern matched (per layer, as exported by torch for ``SiglipAttention``)::

    q = Mul?(Transpose[0,2,1,3](Reshape(Q)), c_q)
    k = Mul?(Transpose[0,2,3,1](Reshape(K)), c_k)
    v =      Transpose[0,2,1,3](Reshape(V))
    out = Reshape(Transpose[0,2,1,3](MatMul(Softmax(MatMul(q, k)), v)))

becomes ``out = MultiHeadAttention(Q, K, V, num_heads=H, scale=c_q * c_k)``.
When Q, K and V are ``Add(x, bias)`` with constant bias vectors (the q/k/v
projections' biases), the ``Add``s go too and the biases become the op's
``bias`` input, which it adds while laying out the heads (three fewer passes
over a [T, hidden] tensor per layer).
Anything that does not match exactly is left alone, so the pass is safe on
graphs it does not understand; parity is checked by the export validation.

GELU
----
torch exports SigLIP's GELU as eight elementwise ops (``Mul``/``Add``/``Tanh``,
or ``Div``/``Erf``/...), each a full pass over a [T, 3072] tensor, after the
``fc1`` bias ``Add``: about 45 ms per image at siglip-base-512, a sixth of the
int8 model. onnxruntime's session-time optimizer does not fuse them, but its
offline transformer optimizer does: ``MatMul -> Add(bias) -> GELU`` becomes
``MatMul -> FastGelu(x, bias)`` (tanh form) or ``BiasGelu`` (erf form). The
``int8`` and ``int4`` recipes run it on the fp32 graph before quantizing (the
quantization passes then swap the ``MatMul`` for an int8 one and the fused GELU
stays); ``int8-static`` runs it after its QDQ pass, whose shape inference
cannot see through the contrib op.

Every optional fusion but GELU's is switched off (the optimizer still removes
no-op Identity/Cast/Reshape nodes, which changes nothing numerically):

* attention: the optimizer does not recognise SigLIP's pattern
  (:func:`fuse_attention` does it, run first);
* ``SkipLayerNormalization`` (residual ``Add`` + LayerNorm): measured slower.
  onnxruntime 1.32's CPU kernel takes 1.6 ms on a [1024, 768] tensor where the
  ``Add, Add, LayerNormalization`` it replaces take 0.3 ms, so it made the int8
  model 25 ms slower. It would also hide the LayerNorms that smoothing folds
  its scales into.

``opt_level=0`` keeps onnxruntime's own (hardware-specific) graph rewrites out
of the saved file; the runtime applies them when it loads the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import MS_DOMAIN, GraphIndex, replace_nodes


def fuse_graph(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Return a fused copy of ``model`` and ``{"attention_fused": n, "gelu_fused": m}`` for the manifest."""
    fused, attention = fuse_attention(model, num_heads)
    fused, gelus = fuse_gelu(fused, num_heads, hidden_size)
    return fused, {"attention_fused": attention, "gelu_fused": gelus}


# -- attention ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Match:
    q: str
    k: str
    v: str
    scale: float
    output: str  # the final Reshape's output, which the MHA now produces
    nodes: tuple[onnx.NodeProto, ...]
    bias: np.ndarray | None  # [3 * hidden]: q, k and v biases, absorbed from their Adds


def _perm(node: onnx.NodeProto) -> list[int]:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return []


def _unscale(g: GraphIndex, name: str) -> tuple[str, float, list[onnx.NodeProto]]:
    """Strip an optional scalar ``Mul``/``Div`` by a constant; return (input, factor, nodes)."""
    node = g.producer.get(name)
    if node is not None and node.op_type in ("Mul", "Div"):
        for i in (0, 1):
            c = g.const(node.input[1 - i])
            if c is not None and c.size == 1 and (node.op_type == "Mul" or i == 0):
                factor = float(c.reshape(())) if node.op_type == "Mul" else 1.0 / float(c.reshape(()))
                return node.input[i], factor, [node]
    return name, 1.0, []


def _head_input(g: GraphIndex, name: str, perm: list[int]) -> tuple[str, list[onnx.NodeProto]] | None:
    """``Transpose[perm](Reshape(X))`` -> X."""
    t = g.producer.get(name)
    if t is None or t.op_type != "Transpose" or _perm(t) != perm:
        return None
    r = g.parent(t, 0, "Reshape")
    if r is None:
        return None
    return r.input[0], [t, r]


def _bias_add(g: GraphIndex, name: str) -> tuple[str, np.ndarray, onnx.NodeProto] | None:
    """``name = Add(x, c)`` with ``c`` a constant float vector -> (x, c, the Add)."""
    node = g.producer.get(name)
    if node is None or node.op_type != "Add":
        return None
    for i in (0, 1):
        c = g.const(node.input[1 - i])
        if c is not None and c.ndim == 1 and c.size > 1 and c.dtype == np.float32 and g.const(node.input[i]) is None:
            return node.input[i], c, node
    return None


def _absorb_biases(g: GraphIndex, qkv: list[str]) -> tuple[list[str], np.ndarray | None, list[onnx.NodeProto]]:
    """Strip the q/k/v bias ``Add``s that feed only the attention; missing biases count as zeros."""
    found = [_bias_add(g, name) for name in qkv]
    sizes = {b[1].size for b in found if b is not None}
    if len(sizes) != 1:
        return qkv, None, []
    (width,) = sizes
    vectors = [b[1] if b is not None else np.zeros(width, np.float32) for b in found]
    return ([b[0] if b is not None else name for b, name in zip(found, qkv, strict=True)],
            np.concatenate(vectors), [b[2] for b in found if b is not None])


def _feeds_only_shapes(g: GraphIndex, node: onnx.NodeProto, reshapes: list[onnx.NodeProto], depth: int = 8) -> bool:
    """Whether everything computed from ``node`` ends in the shape input of ``reshapes`` (and nowhere else)."""
    users = g.users(node.output[0])
    if depth == 0 or not users or node.output[0] in g.graph_outputs:
        return False
    ids = {id(r) for r in reshapes}
    return all((id(u) in ids and list(u.input).index(node.output[0]) == 1) or
               (id(u) not in ids and len(u.output) == 1 and _feeds_only_shapes(g, u, reshapes, depth - 1))
               for u in users)


def _shape_users(g: GraphIndex, name: str, chain: list[onnx.NodeProto],
                 reshapes: list[onnx.NodeProto]) -> list[onnx.NodeProto] | None:
    """The users of ``name`` outside ``chain``, if all are ``Shape`` ops feeding only the shapes of
    ``reshapes`` (ViT computes its attention reshapes from the tensors' run-time shapes): those die
    with the fused nodes. None when another user needs ``name``."""
    ids = {id(n) for n in chain}
    others = [u for u in g.users(name) if id(u) not in ids]
    if name in g.graph_outputs or not all(u.op_type == "Shape" and _feeds_only_shapes(g, u, reshapes)
                                          for u in others):
        return None
    return others


def _match(g: GraphIndex, softmax: onnx.NodeProto) -> _Match | None:
    if any(a.name == "axis" and a.i not in (-1, 3) for a in softmax.attribute):
        return None
    qk = g.parent(softmax, 0, "MatMul")
    av = g.only_child(softmax, "MatMul")
    if qk is None or av is None or av.input[0] != softmax.output[0]:
        return None
    q_name, q_scale, q_nodes = _unscale(g, qk.input[0])
    k_name, k_scale, k_nodes = _unscale(g, qk.input[1])
    q = _head_input(g, q_name, [0, 2, 1, 3])
    k = _head_input(g, k_name, [0, 2, 3, 1])
    v = _head_input(g, av.input[1], [0, 2, 1, 3])
    out_t = g.only_child(av, "Transpose")
    if q is None or k is None or v is None or out_t is None or _perm(out_t) != [0, 2, 1, 3]:
        return None
    reshapes = [u for u in g.users(out_t.output[0]) if u.op_type == "Reshape"]
    out_r = reshapes[0] if len(reshapes) == 1 and reshapes[0].input[0] == out_t.output[0] else None
    if out_r is None:
        return None
    # ViT computes the output shape from Shape(out_t): that arithmetic dies with out_r (and is pruned).
    core = [*q_nodes, *k_nodes, *q[1], *k[1], *v[1], qk, softmax, av, out_t]
    shape_users = _shape_users(g, out_t.output[0], [*core, out_r], [out_r])
    if shape_users is None:
        return None
    chain = [*core, out_r, *shape_users]
    # Every intermediate must feed only this chain, or removing it would break other users.
    if not all(g.used_only_by(node.output[0], chain) for node in core):
        return None
    inputs, bias, bias_adds = _absorb_biases(g, [q[0], k[0], v[0]])
    head_reshapes = [q[1][1], k[1][1], v[1][1]]
    bias_shapes = [_shape_users(g, add.output[0], chain, head_reshapes) for add in bias_adds]
    if any(users is None for users in bias_shapes):
        inputs, bias, bias_adds, bias_shapes = [q[0], k[0], v[0]], None, [], []
    extra = [n for users in bias_shapes for n in users or ()]
    return _Match(*inputs, q_scale * k_scale, out_r.output[0], tuple(chain + bias_adds + extra), bias)


def fuse_attention(model: onnx.ModelProto, num_heads: int) -> tuple[onnx.ModelProto, int]:
    """Return a copy of ``model`` with every matched attention fused, and the count."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = GraphIndex(model)
    matches = [m for m in (_match(g, n) for n in model.graph.node if n.op_type == "Softmax") if m is not None]
    if not matches:
        return model, 0
    fused, biases = [], []
    for i, m in enumerate(matches):
        inputs = [m.q, m.k, m.v]
        if m.bias is not None:
            inputs.append(f"dfe_mha_{i}/qkv_bias")
            biases.append(numpy_helper.from_array(m.bias, inputs[-1]))
        fused.append(helper.make_node("MultiHeadAttention", inputs, [m.output], name=f"dfe_mha_{i}",
                                      domain=MS_DOMAIN, num_heads=num_heads, scale=m.scale))
    replace_nodes(model, [n for m in matches for n in m.nodes], fused, biases)
    return model, len(matches)


# -- GELU --------------------------------------------------------------------------------------
_GELU_OPS = ("FastGelu", "BiasGelu", "Gelu")


def fuse_gelu(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, int]:
    """Return a copy of ``model`` with its GELUs fused, and how many were fused."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("vit")
    for flag in ("enable_attention", "enable_skip_layer_norm", "enable_bias_skip_layer_norm", "enable_layer_norm",
                 "enable_embed_layer_norm", "enable_rotary_embeddings", "enable_qordered_matmul"):
        if hasattr(options, flag):
            setattr(options, flag, False)
    before = sum(node.op_type in _GELU_OPS for node in model.graph.node)
    # The optimizer's modules log every fusion under their own top-level names (fusion_base,
    # onnx_model_bert, ...); the export log says what matters, so silence them for the call.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        optimized = optimize_model(onnx.ModelProto.FromString(model.SerializeToString()), model_type="vit",
                                   num_heads=num_heads, hidden_size=hidden_size,
                                   optimization_options=options, opt_level=0)
    finally:
        logging.disable(previous)
    model = optimized.model
    # The optimizer declares com.microsoft only when it saves to a file; strict shape inference
    # (quantize_static) needs the declaration on the in-memory model too.
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    fused = sum(node.op_type in _GELU_OPS for node in model.graph.node) - before  # not GELUs already there
    return model, fused
