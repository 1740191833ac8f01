"""8-bit attention (export/attention_int8.py): the K-mean shift is exact, the int8 arithmetic is what it claims."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

onnx = pytest.importorskip("onnx", reason="the graph passes need the [export] extra (onnx)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deepfake_edge.export.attention_int8 import (  # noqa: E402
    attention_precision,
    center_keys,
    quantize_attention,
)

HEADS, TOKENS, HEAD_SIZE = 3, 20, 8
WIDTH = HEADS * HEAD_SIZE
SCALE = HEAD_SIZE ** -0.5


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _mha_model(bias: np.ndarray) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, TOKENS, WIDTH]) for n in "qkv"]
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v", "bias"], ["out"], name="mha",
                            domain="com.microsoft", num_heads=HEADS, scale=SCALE)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(bias, "bias")])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _inputs(rng: np.random.Generator, batch: int = 2) -> dict[str, np.ndarray]:
    # K with large per-channel offsets (the outliers the mean shift removes), V with a few loud channels
    k = rng.normal(size=(batch, TOKENS, WIDTH)) + rng.normal(size=(1, 1, WIDTH)) * 6
    q = 0.7 * k + rng.normal(size=(batch, TOKENS, WIDTH))
    v = rng.normal(size=(batch, TOKENS, WIDTH)) * np.where(rng.random(WIDTH) < 0.1, 8.0, 1.0) + rng.normal(size=WIDTH)
    return {"q": q.astype(np.float32), "k": k.astype(np.float32), "v": v.astype(np.float32)}


def _heads(x: np.ndarray) -> np.ndarray:  # [N, T, C] -> [N, H, T, D]
    return x.reshape(x.shape[0], TOKENS, HEADS, HEAD_SIZE).transpose(0, 2, 1, 3)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, int8: bool) -> np.ndarray:
    """float64 attention; ``int8``: the SageAttention arithmetic the pass claims, done in numpy."""
    qh, kh, vh = _heads(q.astype(np.float64)), _heads(k.astype(np.float64)), _heads(v.astype(np.float64))
    if int8:
        kh = kh - kh.mean(axis=2, keepdims=True)
        q_s = np.abs(qh).max(-1, keepdims=True) / 127
        k_s = np.abs(kh).max(-1, keepdims=True) / 127
        qh, kh = np.rint(qh / q_s) * q_s, np.rint(kh / k_s) * k_s
    p = _softmax(qh @ kh.transpose(0, 1, 3, 2) * SCALE)
    v_mean = np.zeros((v.shape[0], 1, WIDTH))
    if int8:
        v_mean = v.astype(np.float64).mean(axis=1, keepdims=True)  # V centred, its mean added back at the end
        centred = v - v_mean
        v_s = np.abs(centred).max(axis=1, keepdims=True) / 127  # per channel, over tokens
        vh = _heads(np.rint(centred / v_s) * v_s)
        p_s = p.max(-1, keepdims=True) / 255
        p = np.rint(p / p_s) * p_s
    out = p @ vh
    return out.transpose(0, 2, 1, 3).reshape(q.shape[0], TOKENS, WIDTH) + v_mean


def test_int8_attention_matches_its_numpy_arithmetic_and_stays_close_to_fp32() -> None:
    rng = np.random.default_rng(0)
    bias = rng.normal(size=3 * WIDTH).astype(np.float32)
    model = _mha_model(bias)
    feeds = _inputs(rng)
    q, k, v = (feeds[n] + b for n, b in zip("qkv", np.split(bias, 3), strict=True))
    fp32 = _run(model, feeds)
    np.testing.assert_allclose(fp32, _numpy_attention(q, k, v, int8=False), atol=1e-4)  # the reference is right

    quantized, count = quantize_attention(model)
    assert count == 1 and attention_precision(quantized) == "int8" and attention_precision(model) == "fp32"
    got = _run(quantized, feeds)
    scale = np.abs(fp32).max()
    # the pass does what it says (up to round-half-even ties and fp32 accumulation) ...
    assert np.abs(got - _numpy_attention(q, k, v, int8=True)).max() < 0.002 * scale
    # ... and that stays close to fp32 attention
    assert np.abs(got - fp32).max() < 0.05 * scale and np.abs(got - fp32).mean() < 0.005 * scale
    # per-image scales: an image's result does not depend on the rest of its batch
    alone = _run(quantized, {n: x[1:2] for n, x in feeds.items()})
    np.testing.assert_allclose(alone[0], got[1], atol=1e-5 * scale)


def test_without_the_key_mean_shift_the_outlier_channels_cost_precision() -> None:
    """Why K is centred: quantizing the raw K (its big channel offsets included) is measurably worse."""
    rng = np.random.default_rng(1)
    feeds = _inputs(rng)
    q, k, v = feeds["q"], feeds["k"], feeds["v"]
    exact = _numpy_attention(q, k, v, int8=False)
    qh, kh = _heads(q.astype(np.float64)), _heads(k.astype(np.float64))
    errors = {}
    for centred in (True, False):
        kk = kh - kh.mean(axis=2, keepdims=True) if centred else kh
        q_s, k_s = np.abs(qh).max(-1, keepdims=True) / 127, np.abs(kk).max(-1, keepdims=True) / 127
        s = (np.rint(qh / q_s) * q_s) @ (np.rint(kk / k_s) * k_s).transpose(0, 1, 3, 2) * SCALE
        out = (_softmax(s) @ _heads(v.astype(np.float64))).transpose(0, 2, 1, 3).reshape(exact.shape)
        errors[centred] = np.abs(out - exact).mean()
    assert errors[True] < 0.5 * errors[False]


def test_key_mean_shift_is_exact_in_fp32_on_a_tiny_siglip(binary_bundle: Path) -> None:
    from deepfake_edge import Detector
    from deepfake_edge.export.fusions import fuse_attention
    from deepfake_edge.export.sample_images import heldout_images

    detector = Detector.load(binary_bundle, "fp32")
    x = detector.preprocess([item.image for item in heldout_images(synthetic=2)][:6])
    fp32 = onnx.load(binary_bundle / "model.onnx")
    fused, count = fuse_attention(fp32, 4)
    assert count == 2
    centred, shifted = center_keys(fused)
    assert shifted == 2 and sum(n.op_type == "ReduceMean" for n in centred.graph.node) >= 2
    reference = _run(fp32, {"pixel_values": x})  # the validated fp32 export, not our graph
    np.testing.assert_allclose(_run(centred, {"pixel_values": x}), reference, atol=1e-5)


def test_int8_attention_on_the_tiny_int8_model_replaces_every_fp32_attention(binary_bundle: Path) -> None:
    from deepfake_edge import Detector
    from deepfake_edge.export.sample_images import heldout_images

    int8 = onnx.load(binary_bundle / "model_int8.onnx")
    before = Counter(n.op_type for n in int8.graph.node)
    quantized, count = quantize_attention(int8)
    ops = Counter(n.op_type for n in quantized.graph.node)
    heads, layers = 4, 2
    assert count == layers and before["MultiHeadAttention"] == layers and ops["MultiHeadAttention"] == 0
    # per head: one int8 GEMM for Q Kᵀ and one for P V, next to the weight GEMMs already there
    assert ops["MatMulIntegerToFloat"] == before["MatMulIntegerToFloat"] + 2 * heads * layers
    assert ops["Softmax"] == heads * layers and ops["Split"] == 6 * layers
    # a layer named in ``exclude`` keeps its fp32 attention
    partial, partial_count = quantize_attention(int8, exclude=["dfe_mha_0"])
    assert partial_count == 1 and [n.name for n in partial.graph.node if n.op_type == "MultiHeadAttention"] == [
        "dfe_mha_0"]
    detector = Detector.load(binary_bundle, "fp32")
    x = detector.preprocess([item.image for item in heldout_images(synthetic=2)][:8])
    logits_fp32_attention = _run(int8, {"pixel_values": x})
    logits = _run(quantized, {"pixel_values": x})
    assert np.abs(logits - logits_fp32_attention).max() < 0.05 * np.abs(logits_fp32_attention).max()
    assert (logits.argmax(-1) == logits_fp32_attention.argmax(-1)).mean() >= 0.85
