"""Tiny random SigLIP and ViT classifiers, described as data and built in-process (no network).

Odd image sizes, non-default mean/std and a 3-label set make hard-coded
512 / 0.5 / two-label assumptions fail. Importing this module needs no torch;
building a checkpoint does (the ``[export]`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TinySpec:
    name: str
    image_size: int
    patch_size: int
    labels: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int
    head_scale: float  # makes the random head's logits decisive, so int8 label checks mean something
    hidden_act: str  # both GELU forms torch exports (tanh and erf), for the graph fusions
    arch: str = "siglip"  # or "vit" (ViTForImageClassification + ViTImageProcessor)
    # export_bundle keyword arguments (the label rule, for label sets the vocabulary cannot decide)
    export_options: dict[str, str] = field(default_factory=dict)

    def processor_settings(self) -> dict[str, Any]:
        """The image processor's keyword arguments the checkpoint is saved with."""
        return {"size": {"height": self.image_size, "width": self.image_size}, "resample": self.resample,
                "image_mean": list(self.mean), "image_std": list(self.std)}


TINY_SPECS = {
    # the deepfake label set, odd size, SigLIP's default normalisation
    "binary": TinySpec("binary", 45, 9, ("fake", "real"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 3, 8.0,
                       "gelu_pytorch_tanh"),
    # another label set, another size, ImageNet normalisation, bilinear resize
    # 'edited' is in neither label vocabulary: the export is told that P(fake) is the score
    "ternary": TinySpec("ternary", 33, 11, ("real", "fake", "edited"), (0.485, 0.456, 0.406),
                        (0.229, 0.224, 0.225), 2, 8.0, "gelu", export_options={"positive_label": "fake"}),
}

#: The label sets and architectures of the detector family (tests/test_family.py), none spelled 'fake'.
FAMILY_SPECS = {
    "fake-real": TinySpec("fake-real", 45, 9, ("Fake", "Real"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 3, 8.0,
                          "gelu_pytorch_tanh"),
    "realism-deepfake": TinySpec("realism-deepfake", 36, 9, ("Realism", "Deepfake"), (0.5, 0.5, 0.5),
                                 (0.5, 0.5, 0.5), 3, 8.0, "gelu_pytorch_tanh"),
    "three-class": TinySpec("three-class", 33, 11, ("Artificial", "Deepfake", "Real"), (0.5, 0.5, 0.5),
                            (0.5, 0.5, 0.5), 3, 8.0, "gelu_pytorch_tanh"),
    # ViTImageProcessor's defaults: bilinear, mean/std 0.5; ViT's GELU is erf
    "vit": TinySpec("vit", 40, 8, ("Real", "Fake"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 2, 8.0, "gelu",
                    arch="vit"),
}


def build_tiny_checkpoint(spec: TinySpec, out_dir: Path, seed: int = 0) -> Path:
    """Save a random ``SiglipForImageClassification`` (or ``ViTForImageClassification``) and its
    processor into ``out_dir``."""
    import torch
    from transformers import SiglipImageProcessor, ViTImageProcessor

    # One thread while initializing: with several, the patch embedding's init came out different
    # in its last bits (5e-6) in about one process in five, enough to move the tiny int8's held-out
    # max |dP| across its 0.03 budget (0.0274 or 0.0300) and make the budget test flaky.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _tiny_model(spec, seed)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir)
    processor = ViTImageProcessor if spec.arch == "vit" else SiglipImageProcessor
    processor(**spec.processor_settings()).save_pretrained(out_dir)
    return out_dir


def _tiny_model(spec: TinySpec, seed: int) -> Any:
    import torch
    from transformers import SiglipConfig, SiglipForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    labels = {"id2label": dict(enumerate(spec.labels)), "label2id": {label: i for i, label in enumerate(spec.labels)}}
    if spec.arch == "vit":
        vit = ViTForImageClassification(ViTConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            patch_size=spec.patch_size, image_size=spec.image_size, hidden_act=spec.hidden_act, **labels)).eval()
        with torch.no_grad():
            vit.classifier.weight.mul_(spec.head_scale)
        return vit
    config = SiglipConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "patch_size": spec.patch_size, "image_size": spec.image_size, "hidden_act": spec.hidden_act,
        },
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4},
        id2label=dict(enumerate(spec.labels)),
        label2id={label: i for i, label in enumerate(spec.labels)},
    )
    model = SiglipForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(spec.head_scale)
    return model
