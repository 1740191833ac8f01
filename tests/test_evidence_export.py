"""The exported ``patch_logits`` against torch, computed here from the checkpoint (not from the manifest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

torch = pytest.importorskip("torch", reason="the torch reference needs the [export] extra")
transformers = pytest.importorskip("transformers", reason="the torch reference needs the [export] extra")

from deepfake_edge import Detector  # noqa: E402
from deepfake_edge.manifest import Manifest  # noqa: E402


@pytest.mark.parametrize("spec", ["binary", "ternary"])
def test_fp32_patch_logits_are_torch_classifier_of_last_hidden_state(
        spec: str, fixture_dir: object, evaluation_images: list[Image.Image]) -> None:
    checkpoint = fixture_dir.checkpoint(spec)  # type: ignore[attr-defined]
    bundle = fixture_dir.bundle(spec)  # type: ignore[attr-defined]
    detector = Detector.load(bundle, "fp32")
    pixels = detector.preprocess(evaluation_images[:6])
    model = transformers.SiglipForImageClassification.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        hidden = model.vision_model(pixel_values=torch.from_numpy(pixels)).last_hidden_state
        expected = model.classifier(hidden).numpy()
        expected_logits = model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
    session = ort.InferenceSession(str(Path(bundle) / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, patches = session.run(["logits", "patch_logits"], {"pixel_values": pixels})
    assert patches.shape == expected.shape
    np.testing.assert_allclose(patches, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(patches.astype(np.float64).mean(axis=1), logits, atol=1e-5, rtol=0)


def test_every_variant_records_its_maps_fidelity(variants_bundle: Path) -> None:
    manifest = Manifest.read(variants_bundle / "manifest.json")
    assert manifest.validation["fp32_vs_torch_max_abs_patch_logit_diff"] <= 1e-4
    for name, variant in manifest.variants.items():
        if name == "fp32":
            continue
        record = variant.fidelity["evidence"]  # type: ignore[index]
        assert record["token_mean_vs_logits_max_abs_diff"] <= 1e-5
        assert -1.0 <= record["pearson_r_min"] <= record["pearson_r_mean"] <= 1.0
        assert 0.0 <= record["top_iou_min"] <= record["top_iou_mean"] <= 1.0
        assert record["images"] == len(manifest.validation["image_names"])
    assert manifest.variants["int8-ort"].recipe["logits"] == "ReduceMean(patch_logits)"
