"""Fuse SigLIP's exported attention into onnxruntime's ``MultiHeadAttention`` op.

onnxruntime's transformer optimizer does not recognise the pattern torch
exports for SigLIP attention (shared_notes/MEASUREMENTS.md), so the 12 layers
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
Anything that does not match exactly is left alone, so the pass is safe on
graphs it does not understand; parity is checked by the export validation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class _Match:
    softmax: onnx.NodeProto
    q: str
    k: str
    v: str
    scale: float
    output_node: onnx.NodeProto  # the final Reshape whose output the MHA replaces
    removed: tuple[int, ...]


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in model.graph.node:
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                self.consumers[name].append(node)
        self.inits = {i.name: i for i in model.graph.initializer}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def parent(self, node: onnx.NodeProto, index: int, op_type: str) -> onnx.NodeProto | None:
        if index >= len(node.input):
            return None
        p = self.producer.get(node.input[index])
        return p if p is not None and p.op_type == op_type else None

    def only_child(self, node: onnx.NodeProto, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(node.output[0], [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _perm(node: onnx.NodeProto) -> list[int]:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return []


def _unscale(g: _Graph, name: str) -> tuple[str, float, list[onnx.NodeProto]]:
    """Strip an optional scalar ``Mul``/``Div`` by a constant; return (input, factor, nodes)."""
    node = g.producer.get(name)
    if node is not None and node.op_type in ("Mul", "Div"):
        for i in (0, 1):
            c = g.const(node.input[1 - i])
            if c is not None and c.size == 1 and (node.op_type == "Mul" or i == 0):
                factor = float(c.reshape(())) if node.op_type == "Mul" else 1.0 / float(c.reshape(()))
                return node.input[i], factor, [node]
    return name, 1.0, []


def _head_input(g: _Graph, name: str, perm: list[int]) -> tuple[str, list[onnx.NodeProto]] | None:
    """``Transpose[perm](Reshape(X))`` -> X."""
    t = g.producer.get(name)
    if t is None or t.op_type != "Transpose" or _perm(t) != perm:
        return None
    r = g.parent(t, 0, "Reshape")
    if r is None:
        return None
    return r.input[0], [t, r]


def _match(g: _Graph, softmax: onnx.NodeProto) -> _Match | None:
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
    out_r = g.only_child(out_t, "Reshape")
    if out_r is None:
        return None
    chain = [*q_nodes, *k_nodes, *q[1], *k[1], *v[1], qk, softmax, av, out_t, out_r]
    # Every intermediate must feed only this chain, or removing it would break other users.
    ids = {id(n) for n in chain}
    for node in chain[:-1]:
        if any(id(u) not in ids for u in g.consumers.get(node.output[0], [])):
            return None
    index = {id(n): i for i, n in enumerate(g.model.graph.node)}
    return _Match(softmax, q[0], k[0], v[0], q_scale * k_scale, out_r, tuple(index[id(n)] for n in chain))


def fuse_attention(model: onnx.ModelProto, num_heads: int) -> tuple[onnx.ModelProto, int]:
    """Return a copy of ``model`` with every matched attention fused, and the count."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model)
    matches = [m for m in (_match(g, n) for n in model.graph.node if n.op_type == "Softmax") if m is not None]
    if not matches:
        return model, 0
    removed: set[int] = set()
    insert_at: dict[int, onnx.NodeProto] = {}
    for i, m in enumerate(matches):
        removed.update(m.removed)
        mha = helper.make_node(
            "MultiHeadAttention", [m.q, m.k, m.v], [m.output_node.output[0]],
            name=f"dfe_mha_{i}", domain=MS_DOMAIN, num_heads=num_heads, scale=m.scale,
        )
        insert_at[max(m.removed)] = mha  # after the last removed node: all inputs exist by then
    nodes: list[onnx.NodeProto] = []
    for idx, node in enumerate(model.graph.node):
        if idx not in removed:
            nodes.append(node)
        if idx in insert_at:
            nodes.append(insert_at[idx])
    del model.graph.node[:]
    model.graph.node.extend(_prune(nodes, {o.name for o in model.graph.output}))
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, len(matches)


def _prune(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop nodes whose outputs nobody uses any more (the shape arithmetic of removed reshapes)."""
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output if o):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return kept[::-1]
