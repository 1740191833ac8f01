"""Reading, rewriting and probing ONNX graphs: the shared ground of the fusion and quantization passes.

A pass finds patterns through :class:`GraphIndex` (who produces a tensor, who
consumes it, which inputs are constants), collects the nodes it replaces and
the nodes it adds, then calls :func:`replace_nodes`, which re-sorts the graph
topologically and drops whatever the removed nodes leave unused. A pass
therefore never has to reason about where in the node list a fused node must
go.

Calibration-driven passes (smoothing, GPTQ, sensitivity) need statistics of
activations inside the graph; onnxruntime only returns graph outputs, so
:func:`iter_tensors` runs a copy whose output list includes the wanted tensors.
"""

from __future__ import annotations

import heapq
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deepfake_edge.session import INPUT_NAME, create_session

MS_DOMAIN = "com.microsoft"


class GraphIndex:
    """Producer/consumer maps over one graph, built once per pass."""

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
        self.graph_outputs = {o.name for o in model.graph.output}

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` output (through ``Identity``), else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        if node is not None and node.op_type == "Identity":
            return self.const(node.input[0])
        return None

    def parent(self, node: onnx.NodeProto, index: int, op_type: str) -> onnx.NodeProto | None:
        if index >= len(node.input):
            return None
        p = self.producer.get(node.input[index])
        return p if p is not None and p.op_type == op_type else None

    def users(self, name: str) -> list[onnx.NodeProto]:
        return self.consumers.get(name, [])

    def only_child(self, node: onnx.NodeProto, op_type: str) -> onnx.NodeProto | None:
        users = self.users(node.output[0])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def used_only_by(self, name: str, nodes: Iterable[onnx.NodeProto]) -> bool:
        """True when every consumer of ``name`` is in ``nodes`` (and it is no graph output)."""
        ids = {id(n) for n in nodes}
        return name not in self.graph_outputs and all(id(u) in ids for u in self.users(name))


def replace_nodes(model: onnx.ModelProto, removed: Iterable[onnx.NodeProto], added: Iterable[onnx.NodeProto],
                  initializers: Iterable[onnx.TensorProto] = ()) -> None:
    """Remove ``removed``, add ``added`` and ``initializers``, then sort and prune ``model`` in place."""
    gone = {id(n) for n in removed}
    nodes = [n for n in model.graph.node if id(n) not in gone] + list(added)
    graph = model.graph
    graph.initializer.extend(initializers)
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered = _prune(_topological(nodes, available), {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(ordered)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if any(n.domain == MS_DOMAIN for n in graph.node) and not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's algorithm, preferring the existing order (keeps diffs and profiles readable)."""
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    waiting = [sum(1 for name in set(n.input) if name not in available and name in produced_by) for n in nodes]
    users: dict[int, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        for name in set(node.input):
            if name not in available and name in produced_by:
                users[produced_by[name]].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered: list[onnx.NodeProto] = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(nodes[i])
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(ordered) != len(nodes):
        raise ValueError("graph rewrite left a cycle or a dangling input")
    return ordered


def _prune(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop nodes whose outputs nobody uses any more (e.g. the shape arithmetic of removed reshapes)."""
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output if o):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return kept[::-1]


def iter_tensors(
    model: onnx.ModelProto, names: Sequence[str], pixel_values: np.ndarray
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{name: value}`` for each image of ``pixel_values`` (one image per run)."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in existing
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, path)
        # Graph optimizations may fuse away the tensors we asked for; basic
        # level keeps every named intermediate value.
        session = create_session(path, optimization="basic")
        for image in pixel_values:
            values = session.run(list(names), {INPUT_NAME: image[None]})
            yield dict(zip(names, values, strict=True))


def channel_max_abs(value: np.ndarray) -> np.ndarray:
    """Per-channel (last axis) max |value| over every other axis (images, tokens)."""
    return np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)


def capture_max_abs(model: onnx.ModelProto, names: Sequence[str], pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |value| of each tensor over all images and tokens."""
    out: dict[str, np.ndarray] = {}
    for values in iter_tensors(model, names, pixel_values):
        for name, value in values.items():
            m = channel_max_abs(value)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out
