"""What gets benchmarked: a real checkpoint, or a SigLIP architecture with random weights.

Random weights are for speed only: latency and memory depend on the
architecture, not on the values, but every accuracy-like number would be
meaningless, so results made from them are labelled ``RANDOM_LABEL`` everywhere.

torch and transformers are imported inside functions: the orchestrator only
needs them while it builds or exports a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepfake_edge.bundle import Bundle
from deepfake_edge.errors import BundleError

__all__ = ["ARCHITECTURES", "RANDOM_LABEL", "Architecture", "ModelUnderTest", "export_fingerprint", "prepare_model"]

RANDOM_LABEL = "random weights, speed only"
# At 512 px every image costs seconds of torch and ONNX time during the export.
SPEED_ONLY_VALIDATION_IMAGES = 4
SPEED_ONLY_CALIBRATION_IMAGES = 8


@dataclass(frozen=True)
class Architecture:
    """A SigLIP vision tower plus a 2-label head (fake/real)."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int


ARCHITECTURES: dict[str, Architecture] = {
    # The seed model's vision tower: about 93.5 M parameters, 1024 tokens.
    "siglip-base-patch16-512": Architecture("siglip-base-patch16-512", 768, 12, 12, 3072, 16, 512),
    # For --quick / CI smoke runs: same graph structure, seconds to export and run.
    "tiny": Architecture("tiny", 64, 2, 4, 128, 16, 64),
}


@dataclass(frozen=True)
class ModelUnderTest:
    """The checkpoint the torch/Optimum side loads and the bundle the runtime loads."""

    checkpoint: str  # local save_pretrained dir or hub id
    bundle: Path
    random_weights: bool
    description: str
    architecture: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "bundle": str(self.bundle),
            "random_weights": self.random_weights,
            "weights": RANDOM_LABEL if self.random_weights else "trained checkpoint",
            "description": self.description,
            "architecture": self.architecture,
        }


def build_random_checkpoint(arch: Architecture, out_dir: Path, *, seed: int = 0) -> Path:
    """Write a ``SiglipForImageClassification`` with random weights plus its image processor."""
    import torch
    from transformers import SiglipConfig, SiglipForImageClassification, SiglipImageProcessor
    from transformers.image_utils import PILImageResampling

    torch.manual_seed(seed)
    config = SiglipConfig(
        vision_config={
            "hidden_size": arch.hidden_size,
            "num_hidden_layers": arch.num_hidden_layers,
            "num_attention_heads": arch.num_attention_heads,
            "intermediate_size": arch.intermediate_size,
            "patch_size": arch.patch_size,
            "image_size": arch.image_size,
            # The classifier reads mean-pooled patch tokens; the attention-pool
            # head would only add unused weights to the torch side.
            "vision_use_head": False,
        },
        # The classifier never runs the text tower; keep it small so the
        # checkpoint is about the size of the real vision-only weights.
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4},
        id2label={0: "fake", 1: "real"},
        label2id={"fake": 0, "real": 1},
    )
    model = SiglipForImageClassification(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    # The siglip-base-patch16-512 processor: bicubic resize, mean = std = 0.5.
    SiglipImageProcessor(
        size={"height": arch.image_size, "width": arch.image_size}, resample=PILImageResampling.BICUBIC,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(out_dir)
    (out_dir / "bench-architecture.json").write_text(json.dumps(asdict(arch), indent=2) + "\n", encoding="utf-8")
    return out_dir


def _usable_bundle(path: Path) -> bool:
    try:
        Bundle.open(path)
    except BundleError:
        return False
    return True


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def export_fingerprint() -> str:
    """A short hash of the export package's source: a cached bundle is reused only by the same export code."""
    import deepfake_edge.export  # light: its heavy modules load on first use

    root = Path(deepfake_edge.export.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def prepare_model(
    *,
    model: str | None,
    bundle: Path | None,
    architecture: str,
    cache_dir: Path,
    rebuild: bool,
    log: Callable[[str], None],
) -> ModelUnderTest:
    """Resolve what to benchmark, building and exporting into ``cache_dir`` when needed.

    * ``bundle`` given: use it as is; the torch side loads ``model``, or else the
      checkpoint the bundle's manifest says it was exported from.
    * ``model`` given: export it into ``cache_dir``, reused on later runs by the
      same export code (see :func:`export_fingerprint`) unless ``rebuild``.
    * neither: build ``architecture`` with random weights (seed 0) and export it.
    """
    if bundle is not None:
        opened = Bundle.open(bundle)  # a broken bundle fails here with its own message
        source = model or str(opened.manifest.source.get("model") or "")
        if not source:
            raise BundleError(f"{bundle / 'manifest.json'}: no source model recorded; pass --model for the torch side")
        random_weights = _is_random_checkpoint(source)
        return ModelUnderTest(source, bundle, random_weights, _describe(source, random_weights),
                              _architecture_of(source))

    if model is not None:
        root = cache_dir / f"model-{_slug(model)}"
        checkpoint = model
        random_weights = _is_random_checkpoint(model)
    else:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}")
        root = cache_dir / f"random-{architecture}"
        checkpoint_dir = root / "checkpoint"
        marker = checkpoint_dir / "bench-architecture.json"  # written last: its presence means complete
        wanted = asdict(ARCHITECTURES[architecture])
        if rebuild or not marker.is_file() or json.loads(marker.read_text(encoding="utf-8")) != wanted:
            log(f"building {architecture} with random weights ({RANDOM_LABEL}) in {checkpoint_dir}")
            build_random_checkpoint(ARCHITECTURES[architecture], checkpoint_dir)
        checkpoint = str(checkpoint_dir)
        random_weights = True
    bundle_dir = root / f"bundle-{export_fingerprint()}"
    if rebuild or not _usable_bundle(bundle_dir):
        from deepfake_edge.export import export_bundle, quiet_third_party_logs

        quiet_third_party_logs()
        log(f"exporting {checkpoint} to {bundle_dir}")
        if random_weights:
            # Speed only: a few validation and calibration images, and no calibration-driven
            # int8 tuning (same graph and speed; the fidelity it buys means nothing here).
            export_bundle(checkpoint, bundle_dir, overwrite=True, validation_images=_speed_only_validation(),
                          calibration_limit=SPEED_ONLY_CALIBRATION_IMAGES, tune=False,
                          log=lambda message: log("  " + message.strip()))
        else:
            export_bundle(checkpoint, bundle_dir, overwrite=True, log=lambda message: log("  " + message.strip()))
    else:
        log(f"reusing the bundle exported earlier in {bundle_dir} (--rebuild to export again)")
    return ModelUnderTest(checkpoint, bundle_dir, random_weights, _describe(checkpoint, random_weights),
                          _architecture_of(checkpoint))


def _speed_only_validation() -> list[Any]:
    """A few photos to validate a random-weights export on, instead of the default ~44 images.

    The export still checks fp32 ONNX against torch, but fidelity figures of
    random weights mean nothing, and the default set costs minutes at 512 px on 2 cores.
    """
    from deepfake_edge.export.sample_images import photos, synthetic_images

    return photos("heldout", augment=False)[:SPEED_ONLY_VALIDATION_IMAGES] or synthetic_images(
        SPEED_ONLY_VALIDATION_IMAGES)


def _is_random_checkpoint(checkpoint: str) -> bool:
    return (Path(checkpoint) / "bench-architecture.json").is_file()


def _architecture_of(checkpoint: str) -> dict[str, Any] | None:
    """The vision tower's geometry from the checkpoint's config.json (None for a hub id not on disk)."""
    config_path = Path(checkpoint) / "config.json"
    if not config_path.is_file():
        return None
    vision = json.loads(config_path.read_text(encoding="utf-8")).get("vision_config", {})
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size", "image_size")
    return {key: vision.get(key) for key in keys}


def _describe(checkpoint: str, random_weights: bool) -> str:
    marker = Path(checkpoint) / "bench-architecture.json"
    if random_weights and marker.is_file():
        name = json.loads(marker.read_text(encoding="utf-8")).get("name", "SigLIP")
        return f"{name} architecture, {RANDOM_LABEL}"
    return checkpoint
