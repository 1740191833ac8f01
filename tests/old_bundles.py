"""Bundles as exported before evidence maps: a copy whose model has no ``patch_logits`` output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deepfake_edge.bundle import sha256_file


def strip_evidence(bundle: Path, variant: str = "fp32") -> None:
    """In place: the file of ``variant`` without the output, and a manifest that lists that file
    alone (as variant "fp32", the default), with its new size and hash."""
    onnx = pytest.importorskip("onnx", reason="stripping the output from a model file needs onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    model_file = bundle / manifest["variants"][variant]["file"]
    model = onnx.load(model_file)
    kept = [o for o in model.graph.output if o.name != "patch_logits"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, model_file)
    fp32 = {**manifest["variants"][variant], "sha256": sha256_file(model_file), "bytes": model_file.stat().st_size}
    manifest.update(variants={"fp32": fp32}, default_variant="fp32")
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def old_copy(bundle: Path, into: Path, variant: str = "fp32") -> Path:
    """A copy of ``bundle`` at ``into``, stripped by :func:`strip_evidence`."""
    shutil.copytree(bundle, into)
    strip_evidence(into, variant)
    return into
