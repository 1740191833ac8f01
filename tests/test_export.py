"""The export step: Optimum registration, fp32 parity with torch, int8 fidelity, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import SiglipForImageClassification, SiglipImageProcessor

from deepfake_edge import Detector
from deepfake_edge.bundle import sha256_file
from deepfake_edge.export.sample_images import heldout_images


def _torch_probs(checkpoint: Path, images: list) -> tuple[np.ndarray, np.ndarray]:
    model = SiglipForImageClassification.from_pretrained(checkpoint).eval()
    processor = SiglipImageProcessor.from_pretrained(checkpoint)
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    return logits.numpy(), torch.softmax(logits.double(), -1).numpy()


def test_optimum_now_knows_siglip_image_classification() -> None:
    from optimum.exporters.tasks import TasksManager

    import deepfake_edge.export.onnx_export  # noqa: F401 - registers the config

    tasks = TasksManager.get_supported_tasks_for_model_type("siglip", "onnx", library_name="transformers")
    assert "image-classification" in tasks
    assert "zero-shot-image-classification" in tasks  # Optimum's own registrations are untouched


def test_export_package_imports_without_its_heavy_libraries() -> None:
    """DEFAULT_MODEL (the CLI's help), the errors and the sample images need neither torch nor Optimum nor onnx."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "import deepfake_edge.export as export\n"
        "from deepfake_edge.export.sample_images import synthetic_images\n"
        "assert export.DEFAULT_MODEL and issubclass(export.ValidationError, export.ExportError)\n"
        "synthetic_images(2)\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'optimum', 'onnx') if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_bundle_layout_and_manifest(binary_bundle: Path) -> None:
    names = {p.name for p in binary_bundle.iterdir()}
    assert {"model.onnx", "model_int8.onnx", "config.json", "preprocessor_config.json", "manifest.json"} <= names
    manifest = json.loads((binary_bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["default_variant"] == "int8"
    for name, variant in manifest["variants"].items():
        path = binary_bundle / variant["file"]
        assert variant["sha256"] == sha256_file(path), name
        assert variant["bytes"] == path.stat().st_size
        assert variant["recipe"]["name"] == name
    fidelity = manifest["variants"]["int8"]["fidelity"]
    assert fidelity["images"] == manifest["validation"]["images"] > 10
    assert 0.0 <= fidelity["max_abs_dp"] <= 1.0 and fidelity["mean_abs_dp"] <= fidelity["max_abs_dp"]
    assert manifest["validation"]["fp32_vs_torch_max_abs_logit_diff"] <= 1e-4
    assert manifest["validation"]["preprocess_max_abs_diff"] == 0.0
    for package in ("onnx", "onnxruntime", "optimum", "transformers", "torch"):
        assert manifest["versions"][package], package
    assert json.loads((binary_bundle / "config.json").read_text())["id2label"] == {"0": "fake", "1": "real"}


def test_fp32_logits_match_torch(any_bundle: tuple[str, Path, Path]) -> None:
    _, checkpoint, bundle = any_bundle
    images = [item.image for item in heldout_images(synthetic=4)]
    expected_logits, _ = _torch_probs(checkpoint, images)
    detector = Detector.load(bundle, "fp32")
    ours = detector.logits(detector.preprocess(images))
    assert np.abs(ours - expected_logits).max() <= 1e-4


def test_int8_predictions_agree_with_fp32(any_bundle: tuple[str, Path, Path]) -> None:
    _, checkpoint, bundle = any_bundle
    images = [item.image for item in heldout_images(synthetic=8)]
    _, expected = _torch_probs(checkpoint, images)
    detector = Detector.load(bundle, "int8")
    results = detector.predict(images)
    probs = np.array([[r.scores[label] for label in detector.labels] for r in results])
    # A 32-wide random model is far noisier under int8 than a trained one (real
    # fidelity is measured on the real-weights proxy); the bound only catches a
    # broken quantization, the label check below is the real assertion.
    assert np.abs(probs - expected).max() < 0.25
    decisive = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2] > 0.3
    assert decisive.sum() >= len(images) // 2, "the tiny model should give decisive predictions"
    assert (probs.argmax(1) == expected.argmax(1))[decisive].all()


def test_export_refuses_non_siglip(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    from deepfake_edge.export import ExportError, export_bundle

    ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=37, image_size=32, patch_size=8)).save_pretrained(tmp_path / "vit")
    with pytest.raises(ExportError, match="model_type is 'vit'"):
        export_bundle(str(tmp_path / "vit"), tmp_path / "out", log=lambda _m: None)
    assert not (tmp_path / "out").exists()


def test_export_fails_loudly_when_parity_is_impossible(binary_checkpoint: Path, tmp_path: Path) -> None:
    from deepfake_edge.export import ValidationError, export_bundle

    with pytest.raises(ValidationError, match="differ from torch"):
        export_bundle(str(binary_checkpoint), tmp_path / "out", atol=0.0, variants=["fp32"], log=lambda _m: None)
    assert not (tmp_path / "out").exists(), "a failed export must not leave a bundle behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "staging directory left behind"
