"""Teach Optimum's ONNX exporter that ``siglip`` supports ``image-classification``.

optimum-onnx 0.1.0 registers ``siglip`` only for ``feature-extraction`` and
``zero-shot-image-classification``, so ``main_export(task="image-classification")``
refuses ``SiglipForImageClassification``. We add the missing task through
Optimum's own registration API (``TasksManager.create_register``) instead of
forking its 2,800-line ``model_configs.py``.
"""

from __future__ import annotations

from optimum.exporters.onnx.model_configs import ViTOnnxConfig
from optimum.exporters.tasks import TasksManager
from optimum.utils.normalized_config import NormalizedVisionConfig

TASK = "image-classification"
MODEL_TYPE = "siglip"


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
    # validation on real images afterwards (see ``validate.py``).
    ATOL_FOR_VALIDATION = 1e-4

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        # Only the batch axis is dynamic: position embeddings are fixed to the
        # checkpoint's image size, so a dynamic height/width would be a lie.
        return {"pixel_values": {0: "batch_size"}}


def ensure_registered() -> None:
    """Importing this module registers the config; this makes that explicit."""
    supported = TasksManager.get_supported_tasks_for_model_type(MODEL_TYPE, "onnx", library_name="transformers")
    if TASK not in supported:  # pragma: no cover - would mean Optimum changed its registry layout
        raise RuntimeError(f"could not register the ONNX {TASK} config for {MODEL_TYPE}")
