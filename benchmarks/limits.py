"""This machine's limits for the model: measured GEMM peaks, the model's FLOPs, and the floor they set.

A speed-up over torch says little on its own: the same code is 2.4x torch on one
CPU and 4.2x on another. What a user can act on is how close each engine comes to
what the hardware can do at all. So:

* **peaks**: an fp32 GEMM (onnxruntime ``MatMul``, MLAS sgemm) and an int8 GEMM
  (``MatMulInteger``, u8 x s8, the VNNI/AMX dot product the int8 variants use),
  square ``size``, through onnxruntime with the benchmark's thread count (numpy's
  BLAS would need its own thread settings, and is not what any engine runs);
* **FLOPs** of one image, from the architecture: the weight GEMMs (q, k, v, out,
  fc1, fc2, patch embedding) and the attention matmuls (QK^T and AV);
* **floors**: the time those FLOPs take at the measured peaks, for the precisions
  the variants compute in. Softmax, GELU, LayerNorm and memory traffic come on top,
  so no engine reaches a floor; the distance says how much is left.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

__all__ = ["PRECISION", "machine_limits", "measure_peaks", "model_flops", "place_rows", "render_limits", "time_floors"]

# How each variant computes: weight GEMMs and attention. int8-ov runs attention in bf16 where the
# CPU has it; no bf16 peak is measured here, so its floor is the fp32-attention one (it may beat it).
PRECISION: dict[str, tuple[str, str]] = {
    "fp32": ("fp32", "fp32"), "fp16": ("fp32", "fp32"), "int4": ("int8", "fp32"),
    "int8": ("int8", "fp32"), "int8-ort": ("int8", "fp32"), "int8-static": ("int8", "fp32"),
    "int8-ov": ("int8", "fp32"),
}


def _gemm_session(op: str, size: int, threads: int) -> tuple[Any, dict[str, np.ndarray]]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a: np.ndarray
    b: np.ndarray
    if op == "MatMul":
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        a_type, out_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:
        a = rng.integers(0, 256, (size, size), dtype=np.uint8)
        b = rng.integers(-128, 128, (size, size), dtype=np.int8)
        a_type, out_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", a_type, [size, size])],
        [helper.make_tensor_value_info("y", out_type, [size, size])],
        initializer=[numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(),
                                   sess_options=options, providers=["CPUExecutionProvider"])
    return session, {"a": a}


def measure_peaks(threads: int, *, size: int = 2048, repeats: int = 7) -> dict[str, Any]:
    """Median GFLOP/s (fp32) and GOP/s (int8) of a ``size``-cube GEMM on ``threads`` threads."""
    peaks: dict[str, Any] = {"threads": threads, "size": size, "repeats": repeats}
    for key, op in (("fp32_gflops", "MatMul"), ("int8_gops", "MatMulInteger")):
        session, feeds = _gemm_session(op, size, threads)
        session.run(None, feeds)  # warm-up: thread pool, packing of B
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
        peaks[key] = 2 * size**3 / statistics.median(times) / 1e9
    return peaks


def model_flops(architecture: dict[str, Any]) -> dict[str, float]:
    """FLOPs of one image through the vision tower (multiply-add = 2), by kind of work."""
    hidden, mlp = architecture["hidden_size"], architecture["intermediate_size"]
    layers = architecture["num_hidden_layers"]
    patch, image = architecture["patch_size"], architecture["image_size"]
    tokens = (image // patch) ** 2
    weight = 2 * tokens * (4 * hidden * hidden + 2 * hidden * mlp) * layers + 2 * tokens * hidden * 3 * patch * patch
    attention = 2 * 2 * tokens * tokens * hidden * layers
    return {"weight_gemm": float(weight), "attention": float(attention), "tokens": float(tokens)}


def time_floors(flops: dict[str, float], peaks: dict[str, Any]) -> dict[str, float]:
    """Seconds per image for each (weight GEMM, attention) precision pair at the measured peaks."""
    rate = {"fp32": peaks["fp32_gflops"] * 1e9, "int8": peaks["int8_gops"] * 1e9}
    return {f"{w}+{a}": flops["weight_gemm"] / rate[w] + flops["attention"] / rate[a]
            for w, a in (("fp32", "fp32"), ("int8", "fp32"), ("int8", "int8"))}


def place_rows(rows: list[dict[str, Any]], flops: dict[str, float], peaks: dict[str, Any]) -> list[dict[str, Any]]:
    """Each batch-1 engine row against the limits: achieved rate, fraction of peak, distance from its floor."""
    floors = time_floors(flops, peaks)
    machine_floor = min(floors.values())
    total = flops["weight_gemm"] + flops["attention"]
    placed = []
    for row in rows:
        if row["status"] != "ok" or row["batch_size"] != 1 or not row.get("latency_ms"):
            continue
        seconds = row["latency_ms"]["p50"] / 1e3
        weights, attention = PRECISION.get(row["variant"], ("fp32", "fp32"))
        own = floors[f"{weights}+{attention}"]
        peak = peaks["int8_gops"] if weights == "int8" else peaks["fp32_gflops"]
        placed.append({
            "label": row["label"], "variant": row["variant"], "latency_s": seconds,
            "achieved_gflops": total / seconds / 1e9,
            "fraction_of_peak": total / seconds / 1e9 / peak,
            "precision": f"{weights} weight GEMMs, {attention} attention",
            "floor_s": own, "vs_floor": seconds / own, "vs_machine_floor": seconds / machine_floor,
        })
    return placed


def machine_limits(threads: int, architecture: dict[str, Any] | None,
                   rows: list[dict[str, Any]] | None = None, *, size: int = 2048) -> dict[str, Any]:
    """Peaks, FLOPs, floors and (given bench rows) each engine's place: the ``limits`` part of results.json."""
    peaks = measure_peaks(threads, size=size)
    if architecture is None:  # a hub checkpoint not on disk: its geometry is unknown
        return {"peaks": peaks}
    flops = model_flops(architecture)
    return {"peaks": peaks, "flops": flops, "floors": time_floors(flops, peaks),
            "engines": place_rows(rows or [], flops, peaks)}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 10 else f"{ms:.2g}"  # the tiny --quick model's floors are microseconds


def render_limits(limits: dict[str, Any]) -> list[str]:
    """The markdown section: peaks, floors, and (when engines ran) each engine's place."""
    peaks = limits["peaks"]
    if "flops" not in limits:
        return [(f"fp32 {peaks['fp32_gflops']:,.0f} GFLOP/s, int8 {peaks['int8_gops']:,.0f} GOP/s "
                 f"({peaks['threads']} threads); the model's geometry is unknown, so no floor."), ""]
    flops, floors = limits["flops"], limits["floors"]
    lines = [
        (f"Measured with {peaks['threads']} threads on {peaks['size']}³ GEMMs through onnxruntime: "
         f"**fp32 {peaks['fp32_gflops']:,.0f} GFLOP/s**, **int8 {peaks['int8_gops']:,.0f} GOP/s** "
         f"({peaks['int8_gops'] / peaks['fp32_gflops']:.1f}× fp32). One image is "
         f"{flops['weight_gemm'] / 1e9:,.3g} GFLOP of weight GEMMs and {flops['attention'] / 1e9:,.3g} GFLOP of "
         f"attention ({flops['tokens']:,.0f} tokens)."),
        "",
        "| Compute (weight GEMMs + attention) | Floor (ms) |",
        "|---|---:|",
        *(f"| {key.replace('+', ' + ')} | {_ms(value)} |" for key, value in floors.items()),
        "",
    ]
    if limits.get("engines"):
        lines += [
            ("A floor counts only the GEMM FLOPs at the measured peaks; softmax, GELU, LayerNorm and memory "
             "traffic come on top, so 1.0× is out of reach. Fraction of peak = all FLOPs ÷ time ÷ the peak "
             "of the engine's weight-GEMM precision."),
            "",
            ("| Engine | Model p50 (ms) | Compute | Fraction of peak | Its floor (ms) | vs its floor | "
             "vs machine floor |"),
            "|---|---:|---|---:|---:|---:|---:|",
            *((f"| {e['label']} | {_ms(e['latency_s'])} | {e['precision']} | {e['fraction_of_peak']:.0%} | "
               f"{_ms(e['floor_s'])} | {e['vs_floor']:.2f}× | {e['vs_machine_floor']:.2f}× |")
              for e in limits["engines"]),
            "",
        ]
    return lines
