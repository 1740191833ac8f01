"""SmoothQuant-style scaling folded into the LayerNorms that feed linear layers.

ViT LayerNorm outputs carry a few channels that are 10-100x larger than the
rest (the LayerNorm gain amplifies them). Quantizing such an activation with
one scale per token wastes most of the 8 bits on those channels. SmoothQuant
(Xiao et al., 2023) divides each input channel ``j`` by ``s_j`` and multiplies
the matching weight row by ``s_j``: the product is unchanged in exact
arithmetic, but the activation becomes flat and the weight absorbs the range,
which per-channel weight quantization tolerates much better::

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

The division is folded into the LayerNorm's gain and bias, so the fp32 graph
keeps exactly the same ops and only its constants change.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .graph_capture import capture_max_abs
from .per_token_int8 import quantizable_matmuls

DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class SmoothedLayerNorm:
    name: str
    consumers: tuple[str, ...]
    max_scale: float


def _smoothable(model: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, list[onnx.NodeProto]]]:
    """LayerNorm output name -> (LayerNorm node, its consumers), when every consumer is a constant-B MatMul."""
    matmuls = {node.name for node in quantizable_matmuls(model)}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in model.graph.output}
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in constants}
    out = {}
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 3 or not set(node.input[1:3]) <= constants:
            continue
        users = consumers[node.output[0]]
        if users and node.output[0] not in graph_outputs and all(u.name in matmuls for u in users):
            out[node.output[0]] = (node, users)
    return out


def activation_ranges(model: onnx.ModelProto, calibration: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel max |x| of every smoothable LayerNorm output, over ``calibration`` (NCHW).

    Computed once and reused for every ``alpha`` tried: smoothing changes only
    constants, and the scales depend on these ranges and the weights alone.
    """
    targets = _smoothable(model)
    return capture_max_abs(model, list(targets), calibration) if targets else {}


def smooth_layernorms(
    model: onnx.ModelProto, calibration: np.ndarray | dict[str, np.ndarray], *, alpha: float = DEFAULT_ALPHA
) -> tuple[onnx.ModelProto, list[SmoothedLayerNorm]]:
    """Return a copy of ``model`` with smoothing scales folded in.

    ``calibration`` is NCHW images, or the result of :func:`activation_ranges`.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    targets = _smoothable(model)
    if not targets:
        return model, []
    act_max = calibration if isinstance(calibration, dict) else capture_max_abs(model, list(targets), calibration)
    inits = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            uses[name] += 1

    identity = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}

    def private(node: onnx.NodeProto, index: int) -> str:
        """The exporter deduplicates equal constants (e.g. every LayerNorm's
        initial gain of ones), sharing one initializer directly or through
        ``Identity`` nodes; give ``node`` its own copy before scaling it."""
        name = node.input[index]
        while name in identity:
            name = identity[name]
        if name != node.input[index] or uses[name] > 1:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[name]), f"{name}/smoothed/{node.name}")
            model.graph.initializer.append(copy)
            inits[copy.name] = model.graph.initializer[-1]
            uses[node.input[index]] -= 1
            uses[copy.name] = 1
            node.input[index] = copy.name
        return node.input[index]

    done: list[SmoothedLayerNorm] = []
    for tensor, (ln, users) in targets.items():
        weights = [numpy_helper.to_array(inits[u.input[1]]) for u in users]
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)  # per input channel (row of W [K, N])
        x_max = act_max[tensor]
        scale = np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
        scale = np.clip(scale, 1e-2, 1e2).astype(np.float32)
        for index in (1, 2):
            name = private(ln, index)
            value = numpy_helper.to_array(inits[name]).astype(np.float32)
            inits[name].CopyFrom(numpy_helper.from_array((value / scale).astype(np.float32), name))
        for user, weight in zip(users, weights, strict=True):
            name = private(user, 1)
            inits[name].CopyFrom(numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), name))
        done.append(SmoothedLayerNorm(ln.name, tuple(u.name for u in users), float(scale.max() / scale.min())))
    return model, done

