"""The int8 recipes' tuning: one fp32 statistics pass, GPTQ, and the effort levels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the recipes need the [export] extra (torch, transformers, onnx)")

import onnx

from deepfake_edge import Detector
from deepfake_edge.export.sample_images import heldout_images


def _reference_gptq(weight: np.ndarray, hessian: np.ndarray, block: int = 128, damp: float = 0.01) -> np.ndarray:
    """GPTQ as written in the paper's reference code (Frantar et al., Algorithm 1), rows = input channels."""
    w = weight.astype(np.float64).copy()
    scale = np.abs(weight).max(axis=0) / 127.0
    h = hessian.astype(np.float64).copy()
    h[np.diag_indices(len(h))] += damp * np.mean(np.diag(h))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros_like(w)
    for i1 in range(0, len(w), block):
        i2 = min(i1 + block, len(w))
        chunk = w[i1:i2].copy()
        errors = np.zeros_like(chunk)
        for i in range(i2 - i1):
            q[i1 + i] = np.clip(np.rint(chunk[i] / scale), -127, 127) * scale
            errors[i] = (chunk[i] - q[i1 + i]) / hinv[i1 + i, i1 + i]
            chunk[i:] -= np.outer(hinv[i1 + i, i1 + i:i2], errors[i])
        w[i2:] -= hinv[i1:i2, i2:].T @ errors
    return np.clip(np.rint(q / scale), -127, 127).astype(np.int8)


def test_gptq_matches_the_reference_algorithm_and_beats_rounding() -> None:
    from deepfake_edge.export.quantize import quantize_weight
    from deepfake_edge.export.tuning import gptq_int8

    rng = np.random.default_rng(0)
    # correlated input channels of unequal size, as in a transformer: where GPTQ has error to move around
    mixing = rng.standard_normal((200, 200)) * rng.uniform(0.1, 5.0, 200)
    x = (rng.standard_normal((2048, 200)) @ mixing).astype(np.float32)
    hessian = x.T @ x / len(x)
    weight = (rng.standard_normal((200, 96)) * 0.05).astype(np.float32)
    q, scale = gptq_int8(weight, hessian)
    expected = _reference_gptq(weight, hessian)
    assert (q == expected).mean() >= 0.999  # summation order may flip a rare exact tie
    assert np.allclose(scale, np.abs(weight).max(axis=0) / 127.0)

    def output_error(w_q: np.ndarray, s: np.ndarray) -> float:
        return float(np.linalg.norm(x @ (w_q.astype(np.float32) * s) - x @ weight))

    assert output_error(q, scale) < 0.9 * output_error(*quantize_weight(weight))


@pytest.fixture(scope="module")
def fp32_model(binary_bundle: Path) -> onnx.ModelProto:
    return onnx.load(binary_bundle / "model.onnx")


@pytest.fixture(scope="module")
def calibration(binary_bundle: Path) -> np.ndarray:
    return Detector.load(binary_bundle, "fp32").preprocess([item.image for item in heldout_images(synthetic=2)][:6])


def test_one_statistics_pass_gives_what_each_pass_gave(fp32_model: onnx.ModelProto, calibration: np.ndarray,
                                                       binary_bundle: Path) -> None:
    """Logits, LayerNorm ranges and Hessians equal separate measurements, for the plain and the smoothed graph."""
    from deepfake_edge.export.calibration import TOKENS_PER_IMAGE, collect_statistics
    from deepfake_edge.export.fidelity import run_per_image
    from deepfake_edge.export.fusions import fuse_graph
    from deepfake_edge.export.graph import capture_max_abs, iter_tensors
    from deepfake_edge.export.quantize import quantizable_matmuls
    from deepfake_edge.export.tuning import smooth_layernorms, smoothable_layernorms

    # Tiny models have fewer tokens than TOKENS_PER_IMAGE: no subsampling, so X^T X is exact.
    stats = collect_statistics(fp32_model, calibration)
    assert np.abs(stats.reference - run_per_image(binary_bundle / "model.onnx", calibration)).max() < 1e-5
    norms = sorted(n.output[0] for n in fp32_model.graph.node if n.op_type == "LayerNormalization")
    expected_ranges = capture_max_abs(fp32_model, norms, calibration)
    assert set(stats.ranges) == set(norms) and set(smoothable_layernorms(fp32_model)) <= set(norms)
    for name in norms:
        np.testing.assert_allclose(stats.ranges[name], expected_ranges[name], rtol=1e-6)

    # The recipes smooth the fused graph: the statistics must name its MatMuls and LayerNorms too.
    config = json.loads((binary_bundle / "config.json").read_text())["vision_config"]
    fused = fuse_graph(fp32_model, config["num_attention_heads"], config["hidden_size"])[0]
    nodes = quantizable_matmuls(fused)
    assert {n.name for n in nodes} == set(stats.hessians) and set(smoothable_layernorms(fused)) <= set(norms)

    smoothed, layernorms = smooth_layernorms(fused, stats.ranges, alpha=0.65)
    scales = {node: ln.scale for ln in layernorms for node in ln.consumers}
    assert scales, "nothing was smoothed"
    derived = {n.name: stats.hessian(n.name, scales.get(n.name)) for n in nodes}
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    inputs = sorted({n.input[0] for n in quantizable_matmuls(smoothed)})
    for values in iter_tensors(smoothed, inputs, calibration):
        for name, value in values.items():
            x = value.reshape(-1, value.shape[-1]).astype(np.float64)
            assert len(x) <= TOKENS_PER_IMAGE  # no subsampling
            sums[name] = sums.get(name, 0) + x.T @ x
            rows[name] = rows.get(name, 0) + len(x)
    for node in quantizable_matmuls(smoothed):
        measured = sums[node.input[0]] / rows[node.input[0]]
        np.testing.assert_allclose(derived[node.name], measured, rtol=2e-3, atol=1e-5 * np.abs(measured).max())


def _recipe(bundle: Path, variant: str) -> dict:
    return json.loads((bundle / "manifest.json").read_text())["variants"][variant]["recipe"]


@pytest.mark.parametrize("effort", ["fast", "default", "thorough"])
def test_effort_levels_search_as_documented(effort: str, binary_checkpoint: Path, tmp_path: Path) -> None:
    from deepfake_edge.export import export_bundle
    from deepfake_edge.export.effort import ALPHAS, DEFAULT_ALPHA, EFFORTS
    from deepfake_edge.extras import importable

    variants = ["fp32", "int8", *(["int8-ov"] if importable("openvino") else [])]
    out = tmp_path / "bundle"
    lines: list[str] = []
    export_bundle(str(binary_checkpoint), out, variants=variants, calibration_limit=40, effort=effort,
                  torch_images=3, log=lines.append)
    int8 = _recipe(out, "int8")
    assert int8["effort"] == effort and int8["tune"] is True
    tried = int8["smoothing_search"]
    if effort == "fast":
        assert tried == [] and int8["smoothing_alpha"] == DEFAULT_ALPHA and int8["weight_rounding"] == "gptq"
    else:
        assert [t["alpha"] for t in tried] == list(EFFORTS[effort].alphas)
        assert set(EFFORTS[effort].alphas) <= set(ALPHAS) and (effort == "default" or EFFORTS[effort].alphas == ALPHAS)
        assert {t["images"] for t in tried} == {20 if effort == "default" else 40}
        # ranked against the tuning target (half the budget): geometric mean of the p99 and mean ratios
        best = min(tried, key=lambda t: (t["boundary_p99_abs_dp"] / 0.01 * t["boundary_mean_abs_dp"] / 0.00125) ** 0.5
                   + (1 - t["agreement_beyond_margin"]) / 0.005)
        assert int8["smoothing_alpha"] == best["alpha"]
    assert int8["calibration_fidelity"]["images"] == 40  # the budget is always judged on every image
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"]["torch_images"] == 3 and manifest["validation"]["images"] > 3
    if "int8-ov" in variants:
        ov = _recipe(out, "int8-ov")
        assert ov["effort"] == effort and ov["calibration_fidelity"]["images"] == 40
        if effort == "thorough":
            assert len(ov["smoothing_search"]) == len(ALPHAS)
        else:  # takes int8's alpha without scoring alphas again
            assert ov["smoothing_search"] == [] and ov["smoothing_alpha"] == int8["smoothing_alpha"]
            assert any("chosen by the previous recipe" in line for line in lines)


def test_unknown_effort_is_refused_before_exporting(binary_checkpoint: Path, tmp_path: Path) -> None:
    from deepfake_edge.export import ExportError, export_bundle

    with pytest.raises(ExportError, match="unknown effort 'quick'"):
        export_bundle(str(binary_checkpoint), tmp_path / "b", effort="quick", log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_flips_count_against_a_variant_only_beyond_the_margin() -> None:
    """Hand-made logits: P(fake) = sigmoid(z0 - z1); fp32 0.51 -> 0.49 is a coin toss, 0.60 -> 0.40 is damage."""
    from deepfake_edge.export.fidelity import FLIP_MARGIN, FidelityBudget, compare

    def logit(p: float) -> float:
        return float(np.log(p / (1 - p)))

    fp32 = np.array([[logit(p), 0.0] for p in (0.51, 0.60, 0.9, 0.1)] + [[logit(0.3), 0.0]] * 196)
    near_only = fp32.copy()
    near_only[0, 0] = logit(0.49)
    both = near_only.copy()
    both[1, 0] = logit(0.40)
    names = [f"img{i}" for i in range(len(fp32))]
    budget = FidelityBudget(max_abs_dp=1.0, mean_abs_dp=1.0)

    near = compare(fp32, near_only, names, ("fake", "real"), "fake")
    assert (near["flips"], near["flips_within_margin"], near["flip_margin"]) == (1, 1, FLIP_MARGIN)
    assert near["label_agreement"] == pytest.approx(0.995) and near["agreement_beyond_margin"] == 1.0
    assert budget.misses(near) == []
    far = compare(fp32, both, names, ("fake", "real"), "fake")
    assert (far["flips"], far["flips_within_margin"]) == (2, 1) and far["agreement_beyond_margin"] == 0.995
    assert FidelityBudget(min_agreement=0.999, max_abs_dp=1.0, mean_abs_dp=1.0).misses(far)
    deltas = np.abs(1 / (1 + np.exp(-both[:, 0])) - 1 / (1 + np.exp(-fp32[:, 0])))
    assert far["p99_abs_dp"] == pytest.approx(float(np.percentile(deltas, 99)))
