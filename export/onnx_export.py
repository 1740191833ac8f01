"""The fp32 export: load the checkpoint, export it with Optimum, prove it matches torch.

Optimum-onnx 0.1.0 registers ``siglip`` only for ``feature-extraction`` and
``zero-shot-image-classification``, so ``main_export(task="image-classification")``
refuses ``SiglipForImageClassification``. Importing this module adds the missing
task through Optimum's own registration API (``TasksManager.create_register``)
instead of forking its 2,800-line ``model_configs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import transformers
from optimum.exporters.onnx import onnx_export_from_model
from optimum.exporters.onnx.model_configs import ViTOnnxConfig
from optimum.exporters.tasks import TasksManager
from optimum.utils.normalized_config import NormalizedVisionConfig
from transformers import AutoConfig, SiglipForImageClassification, SiglipImageProcessor

from deepfake_edge.images import to_rgb
from deepfake_edge.preprocess import PreprocessConfig, preprocess
from deepfake_edge.session import INPUT_NAME

from .architectures import ARCHITECTURES, REFUSED
from .errors import ExportError, ValidationError
from .evidence import add_patch_logits, check_patch_logits, run_with_patches, torch_outputs
from .fidelity import spread_indices
from .sample_images import NamedImage

TASK = "image-classification"
MODEL_TYPE = "siglip"
DEFAULT_ATOL = 1e-4
# fp32 ONNX vs torch differs only by summation order (about 1e-6 on every image measured), so a few
# images spread over photos and synthetics prove 1e-4 parity; torch at 512 px costs about a second each.
DEFAULT_TORCH_IMAGES = 8


# -- the checkpoint ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    model: SiglipForImageClassification  # or another class of ``architectures.ARCHITECTURES``
    processor: SiglipImageProcessor
    source: dict[str, Any]  # {"model": id or absolute path, "revision": commit or None}


def load_checkpoint(model_id_or_path: str, *, revision: str | None = None) -> Checkpoint:
    """Load model and image processor, refusing a model type ``architectures.ARCHITECTURES`` lacks.

    A local directory is used as is; anything else is treated as a hub id, which
    needs network access (or the local HF cache) the first time.
    """
    local = Path(model_id_or_path)
    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    try:
        config = AutoConfig.from_pretrained(model_id_or_path, **kwargs)
    except OSError as exc:
        where = "local directory" if local.is_dir() else "hub id (is the network or HF cache available?)"
        raise ExportError(f"{model_id_or_path}: cannot load the model config as a {where}: {exc}") from exc
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        supported = ", ".join(f"{a.model_class} (model_type {t!r})" for t, a in ARCHITECTURES.items())
        reason = f": {REFUSED[config.model_type]}" if config.model_type in REFUSED else ""
        raise ExportError(f"{model_id_or_path}: model_type is {config.model_type!r}{reason}; deepfake-edge "
                          f"exports {supported}")
    model = getattr(transformers, arch.model_class).from_pretrained(model_id_or_path, **kwargs).eval()
    # The slow PIL processor class: what the model card runs (and what the runtime replicates bit for bit).
    processor = getattr(transformers, arch.processor_class).from_pretrained(model_id_or_path, **kwargs)
    source = {
        "model": str(local.resolve()) if local.is_dir() else model_id_or_path,
        "revision": getattr(model.config, "_commit_hash", None) or revision,
    }
    return Checkpoint(model=model, processor=processor, source=source)


# -- Optimum's missing config ----------------------------------------------------------------
class SiglipVisionNormalizedConfig(NormalizedVisionConfig):
    """Reads the vision geometry from ``config.vision_config``.

    ``SiglipConfig`` nests the tower's settings; the dummy-input generator asks
    for ``image_size`` and ``num_channels`` at the top level, which would silently
    fall back to defaults (224) and trace the wrong geometry.
    """

    IMAGE_SIZE = "vision_config.image_size"
    NUM_CHANNELS = "vision_config.num_channels"


@TasksManager.create_register("onnx")(MODEL_TYPE, TASK)
class SiglipForImageClassificationOnnxConfig(ViTOnnxConfig):
    """``pixel_values`` (dynamic batch) -> ``logits``; the attention-pool head is unused."""

    NORMALIZED_CONFIG_CLASS = SiglipVisionNormalizedConfig
    # Optimum validates against torch at this tolerance; we run our own, stricter
    # validation on real images afterwards (see ``validate_export``).
    ATOL_FOR_VALIDATION = 1e-4

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        # Only the batch axis is dynamic: position embeddings are fixed to the
        # checkpoint's image size, so a dynamic height/width would be a lie.
        return {INPUT_NAME: {0: "batch_size"}}


def ensure_registered() -> None:
    """Importing this module registers the config; this makes that explicit."""
    supported = TasksManager.get_supported_tasks_for_model_type(MODEL_TYPE, "onnx", library_name="transformers")
    if TASK not in supported:  # pragma: no cover - would mean Optimum changed its registry layout
        raise RuntimeError(f"could not register the ONNX {TASK} config for {MODEL_TYPE}")


# -- export ----------------------------------------------------------------------------------
def export_fp32(checkpoint: Checkpoint, out_dir: Path, *, opset: int | None = None) -> Path:
    """Write ``model.onnx``, ``config.json`` and ``preprocessor_config.json`` into ``out_dir``.

    Optimum's own validation runs on random dummy inputs; we skip it because
    :func:`validate_export` checks parity on real photos with a stricter tolerance.
    """
    ensure_registered()
    custom = ARCHITECTURES[checkpoint.model.config.model_type].onnx_config
    onnx_export_from_model(
        checkpoint.model,
        out_dir,
        task=TASK,
        opset=opset,
        do_validation=False,
        preprocessors=[checkpoint.processor],
        custom_onnx_configs={"model": custom(checkpoint.model.config, task=TASK)} if custom else None,
    )
    checkpoint.processor.save_pretrained(out_dir)
    model = out_dir / "model.onnx"
    if not model.is_file():
        raise ExportError(f"Optimum did not write {model}")
    if any(p.name.endswith((".onnx_data", ".data")) for p in out_dir.iterdir()):
        raise ExportError("the model exported with external weight data (>2 GB), which bundles do not support yet")
    if ARCHITECTURES[checkpoint.model.config.model_type].mean_pooled:
        onnx.save(add_patch_logits(onnx.load(model)), model)  # the evidence maps' output (see .evidence)
    return model


# -- validation against torch ----------------------------------------------------------------
def reference_pixel_values(checkpoint: Checkpoint, images: list[NamedImage]) -> np.ndarray:
    """What the model card's code feeds the model: the transformers processor's output."""
    rgb = [to_rgb(item.image) for item in images]
    return np.asarray(checkpoint.processor(images=rgb, return_tensors="np")["pixel_values"], dtype=np.float32)


def validate_export(
    checkpoint: Checkpoint,
    onnx_path: Path,
    preprocessor_config: Path,
    images: list[NamedImage],
    *,
    atol: float = DEFAULT_ATOL,
    batch_size: int = 4,
    torch_images: int | None = DEFAULT_TORCH_IMAGES,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray | None]:
    """Check preprocessing (must be bit-exact, all images), fp32 logits and patch logits (within ``atol``;
    None for a model without evidence maps).

    The fp32 logits are compared with torch on ``torch_images`` of the images,
    spread evenly over the list (None: all). Returns the record for the manifest,
    the reference pixel values, and the fp32 ONNX logits and patch logits of every
    image (one image per run). The fidelity step reuses them, so every variant sees
    the very same tensors and fp32 runs only once.
    """
    reference = reference_pixel_values(checkpoint, images)
    config = PreprocessConfig.from_file(preprocessor_config)
    ours = np.stack([preprocess(to_rgb(item.image), config) for item in images])
    pre_diff = float(np.abs(ours - reference).max())
    if pre_diff != 0.0:
        worst = images[int(np.abs(ours - reference).reshape(len(images), -1).max(axis=1).argmax())].name
        raise ValidationError(
            f"numpy preprocessing differs from transformers' {type(checkpoint.processor).__name__} by {pre_diff:g} "
            f"(worst image: {worst}); the runtime would not see what the model card's code sees"
        )
    fp32_logits, patches = run_with_patches(onnx_path, reference)
    checked = spread_indices(len(images), torch_images)
    expected, expected_patches = torch_outputs(checkpoint, reference[checked], batch_size,
                                               patches_too=patches is not None)
    per_image = np.abs(fp32_logits[checked] - expected).max(axis=1)
    if patches is not None and expected_patches is not None:  # a model with evidence maps (see .evidence)
        per_image = np.maximum(per_image, np.abs(patches[checked] - expected_patches).max(axis=(1, 2)))
    names = [images[i].name for i in checked]
    record = {
        "images": len(images),
        "torch_images": len(checked),
        "atol": atol,
        "preprocess_max_abs_diff": pre_diff,
        "fp32_vs_torch_max_abs_logit_diff": float(per_image.max()),
        "fp32_vs_torch_worst_image": names[int(per_image.argmax())],
        "fp32_vs_torch_max_abs_patch_logit_diff": (
            None if patches is None or expected_patches is None
            else float(np.abs(patches[checked] - expected_patches).max())),
    }
    if per_image.max() > atol:
        bad = [f"{names[i]}: {per_image[i]:.3g}" for i in np.argsort(-per_image)[:5] if per_image[i] > atol]
        raise ValidationError(
            f"fp32 ONNX logits or patch logits differ from torch by up to {per_image.max():.3g} (> atol {atol:g}) on "
            f"{int((per_image > atol).sum())} of {len(checked)} images: " + "; ".join(bad)
        )
    if patches is not None:
        record["fp32_patch_logits"] = check_patch_logits("fp32", fp32_logits, patches, [item.name for item in images])
    return record, reference, fp32_logits, patches
