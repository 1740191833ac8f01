"""Quantization recipes: each builds a loadable variant with recorded fidelity; graph passes keep parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the recipes need the [export] extra (torch, transformers, onnx)")

import onnx
from transformers import SiglipForImageClassification, SiglipImageProcessor

from deepfake_edge import Detector
from deepfake_edge.export.sample_images import gate_images, heldout_images
from deepfake_edge.session import INPUT_NAME, OUTPUT_NAME

ALL_RECIPES = ["fp32", "int8", "int8-ort", "int8-static", "int8-ov", "int4", "fp16"]


@pytest.fixture(scope="session")
def full_bundle(binary_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deepfake_edge.export import export_bundle

    out = tmp_path_factory.mktemp("full") / "bundle"
    export_bundle(str(binary_checkpoint), out, variants=ALL_RECIPES, calibration_limit=12, log=lambda _m: None)
    return out


def _torch_logits(checkpoint: Path, images: list) -> np.ndarray:
    model = SiglipForImageClassification.from_pretrained(checkpoint).eval()
    processor = SiglipImageProcessor.from_pretrained(checkpoint)
    with torch.no_grad():
        return model(**processor(images=images, return_tensors="pt")).logits.numpy()


def test_every_recipe_builds_a_loadable_variant_with_fidelity(full_bundle: Path, binary_checkpoint: Path) -> None:
    manifest = json.loads((full_bundle / "manifest.json").read_text())
    assert set(manifest["variants"]) == set(ALL_RECIPES)
    images = [item.image for item in gate_images()]  # the export's default validation set
    expected = torch.softmax(torch.from_numpy(_torch_logits(binary_checkpoint, images)).double(), -1).numpy()
    budgets = manifest["validation"]["fidelity_budget"]
    for name in ALL_RECIPES:
        entry = manifest["variants"][name]
        assert entry["recipe"]["name"] == name and entry["recipe"]["description"]
        detector = Detector.load(full_bundle, name)
        probs = np.array([[r.scores[label] for label in detector.labels] for r in detector.predict(images)])
        if name == "fp32":
            assert np.abs(probs - expected).max() <= 1e-5
            continue
        fidelity = entry["fidelity"]
        assert fidelity["images"] == manifest["validation"]["images"] == len(images)
        assert 0.0 <= fidelity["mean_abs_dp"] <= fidelity["max_abs_dp"] <= 1.0
        assert fidelity["boundary_max_abs_dp"] >= 0.0
        if name in budgets and budgets[name]["met_on_held_out"]:
            limits = budgets[name]["budget"]
            assert fidelity["p99_abs_dp"] <= limits["p99_abs_dp"], name
            assert fidelity["mean_abs_dp"] <= limits["mean_abs_dp"], name
        # the recorded fidelity (|dP| of the positive label vs fp32 ONNX, one image per run) holds
        # against torch; 1e-5 covers fp32 ONNX vs torch and batched vs single runs
        fake = detector.labels.index("fake")
        assert np.abs(probs[:, fake] - expected[:, fake]).max() <= fidelity["max_abs_dp"] + 1e-5, name
    int8 = manifest["variants"]["int8"]["recipe"]
    assert int8["attention_fused"] == 2  # the tiny model has 2 layers
    for name in ("int8", "int8-static", "int4"):  # GELUs fused, whatever the recipe
        assert manifest["variants"][name]["recipe"]["gelu_fused"] == 2, name
    static = onnx.load(full_bundle / manifest["variants"]["int8-static"]["file"])
    producers = {o: n.op_type for n in static.graph.node for o in n.output}
    weight_matmuls = [n for n in static.graph.node
                      if n.op_type == "MatMul" and producers.get(n.input[1]) == "DequantizeLinear"]
    assert len(weight_matmuls) == 2 * 6, "every linear layer, fc2 included, has int8 weights and activations"
    assert all(producers.get(n.input[0]) == "DequantizeLinear" for n in weight_matmuls)
    assert manifest["variants"]["int8-static"]["recipe"]["attention_fused"] == 2  # attention left fp32, then fused
    assert int8["quantized_matmuls"] + len(int8["excluded_nodes"]) == 2 * 6
    assert {"calibration_fidelity", "smoothing_alpha", "budget"} <= set(int8) and int8["tune"] is True
    assert set(manifest["validation"]["fidelity_budget"]) == {"int8", "int8-ort", "int8-static", "int8-ov"}
    # every variant names its engine; int8-ov's weights are int8 in the file, for OpenVINO to run
    assert {n: v.get("backend", "onnxruntime") for n, v in manifest["variants"].items()} == {
        n: ("openvino" if n == "int8-ov" else "onnxruntime") for n in ALL_RECIPES}
    assert manifest["variants"]["int8-ov"]["backend_options"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "64"
    assert "backend" not in manifest["variants"]["int8"]  # onnxruntime entries stay readable by older runtimes
    ov_model = onnx.load(full_bundle / manifest["variants"]["int8-ov"]["file"])
    int8_weights = [i for i in ov_model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) == 2 * 6


def test_sizes_shrink(full_bundle: Path) -> None:
    manifest = json.loads((full_bundle / "manifest.json").read_text())
    size = {name: v["bytes"] for name, v in manifest["variants"].items()}
    # tiny models are dominated by graph overhead, so only the ordering is checked here;
    # the base-512 sizes are in the README.
    assert size["int4"] < size["fp32"] and size["fp16"] < size["fp32"]


def test_strict_fails_on_an_impossible_budget(binary_checkpoint: Path, tmp_path: Path) -> None:
    from deepfake_edge.export import FidelityBudget, FidelityBudgetError, export_bundle

    impossible = FidelityBudget(min_agreement=1.0, p99_abs_dp=0.0, mean_abs_dp=0.0, max_abs_dp=0.0)
    with pytest.raises(FidelityBudgetError,
                       match=r"int8 misses its fidelity budget on the held-out images.*p99 \|dP\|"):
        export_bundle(str(binary_checkpoint), tmp_path / "b", variants=["fp32", "int8"], budget=impossible,
                      strict=True, calibration_limit=6, log=lambda _m: None)
    assert not (tmp_path / "b").exists()
    # without --strict the same export succeeds and says so loudly
    messages: list[str] = []
    export_bundle(str(binary_checkpoint), tmp_path / "b", variants=["fp32", "int8"], budget=impossible,
                  calibration_limit=6, log=messages.append)
    assert any("WARNING: int8 misses its fidelity budget" in m for m in messages)
    # the export's last word names what auto runs instead, and why
    assert "variant auto on this machine: fp32" in messages[-1] and "int8: missed" in messages[-1], messages[-1]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    record = manifest["validation"]["fidelity_budget"]["int8"]
    assert record["met_on_held_out"] is False and record["judged_on"] == "held_out"
    assert record["met_tuning_target_on_calibration"] is False
    excluded = manifest["variants"]["int8"]["recipe"]["excluded_nodes"]
    assert excluded, "the sensitivity search should have kept layers fp32"


def test_strict_cli_exit_code(binary_checkpoint: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_edge.cli", "export", str(binary_checkpoint), str(tmp_path / "b"),
         "--strict", "--budget-max-dp", "0", "--calibration-limit", "4"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 4
    assert "misses its fidelity budget" in proc.stderr and "Traceback" not in proc.stderr


def test_no_tune_cli_flag_skips_the_search_and_says_so(binary_checkpoint: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_edge.cli", "export", str(binary_checkpoint), str(tmp_path / "b"),
         "--no-tune", "--variants", "fp32,int8", "--calibration-limit", "4"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    recipe = json.loads((tmp_path / "b" / "manifest.json").read_text())["variants"]["int8"]["recipe"]
    assert recipe["tune"] is False and recipe["weight_rounding"] == "nearest" and recipe["smoothing_alpha"] == 0.5
    assert "smoothing alpha=" not in proc.stderr  # no candidate was scored


def _session_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def test_graph_fusions_and_smoothing_keep_fp32_parity(any_bundle: tuple[str, Path, Path]) -> None:
    from deepfake_edge.export.fusions import fuse_attention, fuse_gelu
    from deepfake_edge.export.tuning import smooth_layernorms

    _, checkpoint, bundle = any_bundle
    images = [item.image for item in heldout_images(synthetic=2)][:10]
    expected = _torch_logits(checkpoint, images)
    detector = Detector.load(bundle, "fp32")
    x = detector.preprocess(images)
    model = onnx.load(bundle / "model.onnx")
    vision = SiglipForImageClassification.from_pretrained(checkpoint).config.vision_config
    fused, count = fuse_attention(model, vision.num_attention_heads)
    assert count == 2
    attention = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(attention) == 2 and all(len(n.input) == 4 for n in attention)  # q/k/v biases absorbed
    assert not any(n.op_type == "Softmax" for n in fused.graph.node)
    assert np.abs(_session_logits(fused, x) - expected).max() <= 1e-4
    # GELU: tanh form in "binary" (FastGelu), erf form in "ternary" (BiasGelu), fc1 bias absorbed
    gelu_fused, gelus = fuse_gelu(fused, vision.num_attention_heads, vision.hidden_size)
    gelu_op = "FastGelu" if "tanh" in vision.hidden_act else "BiasGelu"
    assert gelus == 2 and sum(n.op_type == gelu_op for n in gelu_fused.graph.node) == 2
    assert all(len(n.input) == 2 for n in gelu_fused.graph.node if n.op_type == gelu_op)
    assert not any(n.op_type in ("Tanh", "Erf") for n in gelu_fused.graph.node)
    assert np.abs(_session_logits(gelu_fused, x) - expected).max() <= 1e-4
    smoothed, done = smooth_layernorms(gelu_fused, x[:4], alpha=0.5)
    assert len(done) == 4  # layer_norm1 -> q/k/v and layer_norm2 -> fc1, in both layers
    assert np.abs(_session_logits(smoothed, x) - expected).max() <= 1e-4


def test_per_token_matmul_matches_a_numpy_reference() -> None:
    """One MatMul+Add rewritten; compared with per-token/per-channel int8 arithmetic done in numpy."""
    from onnx import TensorProto, helper, numpy_helper

    from deepfake_edge.export.quantize import quantize_per_token

    rng = np.random.default_rng(0)
    k, n = 48, 20
    w = rng.normal(size=(k, n)).astype(np.float32)
    b = rng.normal(size=(n,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), helper.make_node("Add", ["mm", "b"], ["logits"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 7, k])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    quantized, done = quantize_per_token(model)
    assert [d.name for d in done] == ["mm"]
    x = rng.normal(size=(3, 7, k)).astype(np.float32) * rng.uniform(0.1, 10, size=(3, 7, 1)).astype(np.float32)
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    # independent reference: symmetric per-token activations, per-column weights
    a_scale = np.abs(x).max(-1, keepdims=True) / 127
    w_scale = np.abs(w).max(0) / 127
    reference = (np.rint(x / a_scale) * a_scale) @ (np.rint(w / w_scale) * w_scale) + b
    assert np.abs(got - reference).max() < 1e-3 * np.abs(reference).max()
    # and per-token scales make each row independent of the others in the batch
    alone = session.run(None, {"x": x[1:2]})[0]
    np.testing.assert_array_equal(alone[0], got[1])


def test_one_sided_inputs_are_quantized_centred() -> None:
    """A GELU output feeding a MatMul gets a per-token zero point: compared with numpy's centred int8 arithmetic,
    and closer to fp32 than the symmetric quantization the same graph gets with ``centre=False``."""
    from onnx import TensorProto, helper, numpy_helper

    from deepfake_edge.export.graph import MS_DOMAIN
    from deepfake_edge.export.quantize import quantize_per_token

    rng = np.random.default_rng(1)
    k, n = 64, 24
    w = rng.normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["g"], domain=MS_DOMAIN, name="gelu"),
         helper.make_node("MatMul", ["g", "w"], ["y"], name="mm")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 9, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS_DOMAIN, 1)])
    x = (rng.normal(size=(2, 9, k)) * rng.uniform(0.5, 4, size=(2, 9, 1))).astype(np.float32)
    gelu = ort.InferenceSession(helper.make_model(helper.make_graph(
        graph.node[:1], "gelu", graph.input, [helper.make_tensor_value_info("g", TensorProto.FLOAT, None)]),
        opset_imports=model.opset_import).SerializeToString(), providers=["CPUExecutionProvider"])
    g = gelu.run(None, {"x": x})[0].astype(np.float64)
    assert g.min() > -0.2 and g.max() > 1  # one-sided, as GELU outputs are

    def run(centre: bool) -> np.ndarray:
        quantized, done = quantize_per_token(model, centre=centre)
        assert [d.name for d in done] == ["mm"]
        ops = {node.op_type for node in quantized.graph.node}
        assert ("ReduceMin" in ops) is centre
        session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    w_scale = np.abs(w).max(0) / 127
    w_dq = np.rint(w / w_scale) * w_scale
    hi, lo = g.max(-1, keepdims=True), g.min(-1, keepdims=True)
    scale = np.maximum(hi - lo, np.abs(hi + lo)) / 254
    shift = np.rint((hi + lo) / 2 / scale) * scale
    reference = (np.clip(np.rint((g - shift) / scale), -128, 127) * scale + shift) @ w_dq
    centred, symmetric, exact = run(True), run(False), g @ w_dq  # the activations' error alone
    assert np.abs(centred - reference).max() < 1e-4 * np.abs(reference).max()
    assert np.abs(centred - exact).mean() < 0.7 * np.abs(symmetric - exact).mean()


def test_keep_fp32_leaves_the_most_sensitive_matmuls_unquantized(binary_checkpoint: Path, tmp_path: Path) -> None:
    from deepfake_edge.export import export_bundle

    manifest = export_bundle(str(binary_checkpoint), tmp_path / "b", variants=["fp32", "int8"], keep_fp32=3,
                             calibration_limit=6, log=lambda _m: None)
    recipe = manifest.variants["int8"].recipe
    assert len(recipe["excluded_nodes"]) >= 3
    assert recipe["quantized_matmuls"] == 12 - len(recipe["excluded_nodes"])
    model = onnx.load(tmp_path / "b" / "model_int8.onnx")
    fp32_matmuls = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    assert set(recipe["excluded_nodes"]) <= fp32_matmuls


def test_calibration_directory_is_used_and_recorded(binary_checkpoint: Path, photo_paths: list[Path],
                                                    tmp_path: Path) -> None:
    from PIL import Image

    from deepfake_edge.export import export_bundle

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, path in enumerate(photo_paths[:3]):
        with Image.open(path) as im:
            im.convert("RGB").save(calib / f"c{i}.jpg")
    (calib / "notes.txt").write_text("not an image: skipped, not fatal")
    manifest = export_bundle(str(binary_checkpoint), tmp_path / "b", variants=["fp32", "int8"], calibration_dir=calib,
                             log=lambda _m: None)
    assert manifest.validation["calibration_source"] == str(calib)
    assert sorted(manifest.validation["calibration_image_names"]) == ["c0.jpg", "c1.jpg", "c2.jpg"]
    assert manifest.variants["int8"].recipe["calibration_images"] == 3


@pytest.fixture
def without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the OpenVINO extra look uninstalled (everything else stays importable)."""
    import deepfake_edge.extras as extras

    real = extras.importable
    monkeypatch.setattr(extras, "importable", lambda module: module != "openvino" and real(module))


@pytest.mark.usefixtures("without_openvino")
def test_openvino_variant_without_the_extra_is_a_clear_error(full_bundle: Path) -> None:
    """Loading int8-ov where OpenVINO is not installed names the extra to install; other variants still load."""
    from deepfake_edge.errors import ExtraNotInstalledError

    with pytest.raises(ExtraNotInstalledError, match="openvino"):
        Detector.load(full_bundle, "int8-ov")
    assert Detector.load(full_bundle, "int8").variant_name == "int8"


@pytest.mark.usefixtures("without_openvino")
def test_exporting_int8_ov_without_openvino_fails_before_exporting(binary_checkpoint: Path, tmp_path: Path) -> None:
    from deepfake_edge.errors import ExtraNotInstalledError
    from deepfake_edge.export import export_bundle

    with pytest.raises(ExtraNotInstalledError, match="openvino"):
        export_bundle(str(binary_checkpoint), tmp_path / "b", variants=["fp32", "int8-ov"], log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_a_bundle_cannot_set_arbitrary_openvino_options(full_bundle: Path, tmp_path: Path) -> None:
    """Only how-to-compute options pass; anything else (e.g. CACHE_DIR, which writes to disk) is refused."""
    import shutil

    from deepfake_edge.errors import BundleError

    bundle = tmp_path / "b"
    shutil.copytree(full_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["variants"]["int8-ov"]["backend_options"]["CACHE_DIR"] = str(tmp_path / "cache")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="CACHE_DIR"):
        Detector.load(bundle, "int8-ov")
    assert not (tmp_path / "cache").exists()


def test_openvino_compiled_blob_is_cached_checked_and_rebuilt(full_bundle: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    from deepfake_edge import model_cache
    from deepfake_edge.manifest import MANIFEST_NAME, Manifest
    from deepfake_edge.openvino_session import OpenVINOSession

    monkeypatch.setenv("DEEPFAKE_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_cache, "RACY_SECONDS", 0.0)
    spec = Manifest.read(full_bundle / MANIFEST_NAME).variants["int8-ov"]
    x = Detector.load(full_bundle, "fp32").preprocess([item.image for item in heldout_images(synthetic=2)][:4])
    plain = OpenVINOSession(full_bundle / spec.file, threads=2, options=spec.backend_options)  # no cache at all
    expected = np.concatenate([plain.run([OUTPUT_NAME], {INPUT_NAME: image[None]})[0] for image in x])

    def logits() -> np.ndarray:
        return Detector.load(full_bundle, "int8-ov").logits(x)

    np.testing.assert_array_equal(logits(), expected)
    (entry,) = (tmp_path / "cache" / "openvino").iterdir()
    blobs = [p for p in entry.iterdir() if p.name != "record.json"]
    assert blobs, "OpenVINO wrote no compiled blob"
    np.testing.assert_array_equal(logits(), expected)  # from the blob
    blob = max(blobs, key=lambda p: p.stat().st_size)
    original = blob.read_bytes()
    time.sleep(0.01)
    with blob.open("r+b") as fp:  # damage the blob, keep its size and mtime
        fp.seek(len(original) // 2)
        fp.write(bytes([original[len(original) // 2] ^ 0xFF]))
    os.utime(blob, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns))
    damaged = blob.read_bytes()
    assert model_cache.cached_directory("openvino", entry.name) is None
    np.testing.assert_array_equal(logits(), expected)  # recompiled, not the damaged blob
    (rebuilt,) = (tmp_path / "cache" / "openvino").iterdir()
    assert model_cache.cached_directory("openvino", rebuilt.name) == rebuilt  # a fresh, intact entry
    assert (rebuilt / blob.name).read_bytes() != damaged
