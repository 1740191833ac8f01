"""Load the transformers checkpoint to export: a hub id or a ``save_pretrained`` directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, SiglipForImageClassification, SiglipImageProcessor

from .errors import ExportError

DEFAULT_MODEL = "prithivMLmods/deepfake-detector-model-v1"


@dataclass(frozen=True)
class Checkpoint:
    model: SiglipForImageClassification
    processor: SiglipImageProcessor
    source: dict[str, Any]  # {"model": id or absolute path, "revision": commit or None}


def load_checkpoint(model_id_or_path: str, *, revision: str | None = None) -> Checkpoint:
    """Load model and image processor, refusing anything that is not a SigLIP classifier.

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
    if config.model_type != "siglip":
        raise ExportError(
            f"{model_id_or_path}: model_type is {config.model_type!r}; deepfake-edge exports "
            "SiglipForImageClassification checkpoints (model_type 'siglip')"
        )
    model = SiglipForImageClassification.from_pretrained(model_id_or_path, **kwargs).eval()
    # use_fast=False: the slow PIL processor is what the model card runs (and what
    # the runtime replicates bit for bit).
    processor = SiglipImageProcessor.from_pretrained(model_id_or_path, **kwargs)
    source = {
        "model": str(local.resolve()) if local.is_dir() else model_id_or_path,
        "revision": getattr(model.config, "_commit_hash", None) or revision,
    }
    return Checkpoint(model=model, processor=processor, source=source)
