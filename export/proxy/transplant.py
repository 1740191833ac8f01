"""The transplant: a SigLIP vision tower carrying DINOv2's weights, and the checks that it reproduces them.

A DINOv2 encoder layer is a SigLIP encoder layer plus two per-channel
LayerScale vectors, so the backbone fits a SigLIP vision tower:

* each LayerScale vector is folded into the linear layer right before it
  (``attention.output.dense`` -> ``out_proj``, ``mlp.fc2`` -> ``fc2``): a per
  output-channel scale of a Linear is exactly a row scale of its weight and bias;
* the 37x37 patch position grid is interpolated bicubically to 16x16 (224/14),
  which is what the ONNX graph itself does at run time for a 224 px input;
* the CLS token (and its position embedding) is dropped: SigLIP has none;
* ``backbone.layernorm`` becomes ``post_layernorm``.

:func:`check_transplant` compares the result with the original ONNX graph
wherever the two architectures coincide, and raises if they disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ProxyBuildError, TransplantCheckError
from .dinov2 import (
    HIDDEN_SIZE,
    IMAGE_SIZE,
    INTERMEDIATE_SIZE,
    LAYER_NORM_EPS,
    NUM_HEADS,
    NUM_LAYERS,
    PATCH_SIZE,
    DinoV2Graph,
    run_onnx_intermediates,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    from PIL import Image
    from transformers import (
        SiglipConfig,
        SiglipForImageClassification,
        SiglipImageProcessor,
    )

    from ..sample_images import NamedImage

# DINOv2 was trained with ImageNet statistics, not SigLIP's 0.5/0.5. Other proxies ("siglip") see
# inputs normalized as SigLIP checkpoints do: real weights still, a different activation spread.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
NORMALIZATIONS: dict[str, tuple[list[float], list[float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}

ID2LABEL = {0: "fake", 1: "real"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}

# Transplant acceptance thresholds (relative L2 error vs the ONNX reference).
# float32 with a different op order (fused SDPA, LayerNorm kernel) lands at ~1e-6;
# a wrong mapping (q/k swapped, transposed W, unfolded LayerScale) is >1e-1.
MAX_REL_ERROR = 1e-4
# A photo and its mirror image must look alike to a real backbone (random weights
# or a scrambled transplant do not get there reliably).
MIN_MIRROR_COSINE = 0.9


def make_config(image_size: int = IMAGE_SIZE) -> SiglipConfig:
    """A SiglipConfig whose vision tower has DINOv2-small's shape at ``image_size`` px (a multiple of 14)."""
    from transformers import SiglipConfig

    vision = {
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_channels": 3,
        "patch_size": PATCH_SIZE,
        "image_size": image_size,
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


def make_image_processor(image_size: int = IMAGE_SIZE, normalization: str = "imagenet") -> SiglipImageProcessor:
    """SigLIP's plain squash-resize pipeline with DINOv2's (ImageNet) normalization, or ``NORMALIZATIONS``' other."""
    from transformers import SiglipImageProcessor

    mean, std = NORMALIZATIONS[normalization]
    return SiglipImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=3,  # PIL bicubic
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


def interpolate_patch_positions(table: np.ndarray, grid: int = IMAGE_SIZE // PATCH_SIZE) -> np.ndarray:
    """[1, 37*37, D] -> [grid*grid, D], bicubic (a=-0.75, half-pixel, no antialias).

    That is exactly what HF Dinov2's ``interpolate_pos_encoding`` and the ONNX graph's
    Resize do for a 224 px input, so the transplant sees the same positions.
    """
    import torch

    d = table.shape[-1]
    side = round(table.shape[1] ** 0.5)
    src = torch.from_numpy(table).reshape(1, side, side, d).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(src, size=(grid, grid), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(grid * grid, d).contiguous().numpy()


def siglip_state_dict(src: dict[str, np.ndarray], image_size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """Map DINOv2 tensors to SiglipForImageClassification names (classifier excluded)."""
    out: dict[str, np.ndarray] = {}
    vm = "vision_model"
    out[f"{vm}.embeddings.patch_embedding.weight"] = src["backbone.embeddings.patch_embeddings.projection.weight"]
    out[f"{vm}.embeddings.patch_embedding.bias"] = src["backbone.embeddings.patch_embeddings.projection.bias"]
    out[f"{vm}.embeddings.position_embedding.weight"] = interpolate_patch_positions(
        src["backbone.embeddings.patch_position_embeddings"], image_size // PATCH_SIZE
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


def transplant(graph: DinoV2Graph, *, seed: int = 0, image_size: int = IMAGE_SIZE) -> SiglipForImageClassification:
    """A SiglipForImageClassification with every backbone tensor taken from the graph.

    The classifier is zeroed here (fitted later); ``strict=True`` proves no parameter
    was left at its random initialisation.
    """
    import torch
    from transformers import SiglipForImageClassification

    torch.manual_seed(seed)  # construction draws random init; make even that reproducible
    model = SiglipForImageClassification(make_config(image_size)).eval()
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        for k, v in siglip_state_dict(graph.weights, image_size).items()
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


# -- checks ------------------------------------------------------------------------------------
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
