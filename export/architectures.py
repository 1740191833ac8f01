"""The checkpoint families the export accepts, as data: model class, image processor, where the
encoder's geometry lives, and why the others are refused.

* ``siglip``: ``SiglipForImageClassification`` with ``SiglipImageProcessor``. Fixed-resolution SigLIP2
  checkpoints (``google/siglip2-base-patch16-512`` and the detectors fine-tuned from it) are saved
  with ``model_type`` ``siglip`` and load here unchanged.
* ``vit``: ``ViTForImageClassification`` with ``ViTImageProcessor`` (a CLS token, pooled by taking it).

``siglip2`` (``Siglip2ForImageClassification``) is the NaFlex model: it takes pre-cut patches of a
per-image number and shape (``pixel_values`` N x patches x 3*p*p, ``pixel_attention_mask``,
``spatial_shapes``) and resizes its position embeddings per image, so there is no fixed NCHW input
to export; Optimum 0.1.0 has no ONNX config for it either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optimum.exporters.onnx.model_configs import ViTOnnxConfig

from deepfake_edge.session import INPUT_NAME

__all__ = ["ARCHITECTURES", "REFUSED", "Architecture", "FixedSizeViTOnnxConfig", "encoder_geometry"]


class FixedSizeViTOnnxConfig(ViTOnnxConfig):
    """Optimum's ViT config with only the batch axis dynamic.

    Optimum's own makes height and width dynamic too; the graph then computes every attention
    reshape from ``Shape`` ops at run time, which the attention fusion (``fusions``) cannot match
    and the runtime cannot check at load. The position embeddings are fixed to the checkpoint's
    image size anyway (``interpolate_pos_encoding`` is off in the classifier's forward).
    """

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {INPUT_NAME: {0: "batch_size"}}


@dataclass(frozen=True)
class Architecture:
    model_class: str        # transformers class name
    processor_class: str    # the slow (PIL) image processor the runtime replicates
    encoder_config: str     # attribute of the config holding the encoder geometry ("" = the config itself)
    onnx_config: type | None = None  # passed to Optimum instead of its registered config for the model type
    # logits = classifier(mean of the patch tokens): the per-patch logits then decompose them exactly, so the
    # export adds the evidence maps' output. ViT classifies its CLS token: no such decomposition, no maps.
    mean_pooled: bool = True


ARCHITECTURES = {
    "siglip": Architecture("SiglipForImageClassification", "SiglipImageProcessor", "vision_config"),
    "vit": Architecture("ViTForImageClassification", "ViTImageProcessor", "", FixedSizeViTOnnxConfig,
                        mean_pooled=False),
}

#: model types refused with the reason.
REFUSED = {
    "siglip2": "Siglip2ForImageClassification is the NaFlex model (variable patch count and shape per image, "
               "position embeddings resized per image), which has no fixed-size NCHW input to export to ONNX; "
               "fixed-resolution SigLIP2 checkpoints saved as SiglipForImageClassification (model_type 'siglip') "
               "are supported",
}


def encoder_geometry(config: Any) -> tuple[int, int]:
    """(attention heads, hidden size) of the image encoder, for the graph fusions."""
    arch = ARCHITECTURES[config.model_type]
    encoder = getattr(config, arch.encoder_config) if arch.encoder_config else config
    return int(encoder.num_attention_heads), int(encoder.hidden_size)
