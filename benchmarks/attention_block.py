"""One attention block, fp32 ``MultiHeadAttention`` against the 8-bit pass, timed side by side.

    python -m deepfake_edge.benchmarks.attention_block --tokens 1024 --heads 12 --head-size 64 --rounds 15

Speed only (random inputs). The candidates run interleaved in one process
(A B C A B C ...). Two figures are printed for each:

* the CPU time of one thread (``intra_op_num_threads=1``), which other
  processes on a shared box barely move;
* the wall time with ``--threads``, the figure a user sees on an idle box.

The mean |error| column compares each candidate's output with fp32's, on inputs
where K has channel offsets and V has a few loud channels, as in ViTs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from deepfake_edge.export.attention_int8 import quantize_attention


def mha_block(tokens: int, heads: int, head_size: int) -> onnx.ModelProto:
    width = heads * head_size
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, tokens, width]) for n in "qkv"]
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["out"], name="mha", domain="com.microsoft",
                            num_heads=heads, scale=head_size ** -0.5)
    graph = helper.make_graph([node], "attention", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                                                                          None)])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def block_inputs(tokens: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(1, tokens, width)) + rng.normal(size=(1, 1, width)) * 3
    q = 0.5 * k + rng.normal(size=(1, tokens, width))
    v = rng.normal(size=(1, tokens, width)) * (1 + 3 * (rng.random(width) < 0.02))
    return {"q": q.astype(np.float32), "k": k.astype(np.float32), "v": v.astype(np.float32)}


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # CPU time = work done
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def compare(models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray], rounds: int,
            threads: int) -> list[dict[str, float | str]]:
    """Interleaved rounds; per candidate: median one-thread CPU ms, median wall ms, mean |error| vs the first."""
    one = {name: _session(m, 1) for name, m in models.items()}
    many = {name: _session(m, threads) for name, m in models.items()}
    outputs = {name: s.run(None, feeds)[0] for name, s in one.items()}  # also warms up
    for s in many.values():
        s.run(None, feeds)
    cpu: dict[str, list[float]] = {name: [] for name in models}
    wall: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name in models:
            start = time.thread_time()
            one[name].run(None, feeds)
            cpu[name].append((time.thread_time() - start) * 1e3)
            start = time.perf_counter()
            many[name].run(None, feeds)
            wall[name].append((time.perf_counter() - start) * 1e3)
    reference = outputs[next(iter(models))]
    return [{"candidate": name, "cpu_ms": float(np.median(cpu[name])), "wall_ms": float(np.median(wall[name])),
             "mean_abs_error": float(np.abs(outputs[name] - reference).mean())} for name in models]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per image (default 1024: 512 px, patch 16)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the wall-time sessions (default 2)")
    args = parser.parse_args(argv)
    for option in ("tokens", "heads", "head_size", "rounds", "threads"):
        if getattr(args, option) < 1:
            parser.error(f"argument --{option.replace('_', '-')}: expected a positive integer")
    fp32 = mha_block(args.tokens, args.heads, args.head_size)
    models = {"fp32 MultiHeadAttention": fp32,
              "int8 QKᵀ, fp32 P·V": quantize_attention(fp32, pv_int8=False)[0],
              "int8 QKᵀ and P·V": quantize_attention(fp32)[0]}
    rows = compare(models, block_inputs(args.tokens, args.heads * args.head_size), args.rounds, args.threads)
    base = float(rows[0]["cpu_ms"])
    print(f"| candidate | 1-thread CPU ms | vs fp32 | {args.threads}-thread wall ms | mean abs error |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['candidate']} | {r['cpu_ms']:.2f} | {float(r['cpu_ms']) / base:.2f}x | {r['wall_ms']:.2f} | "
              f"{r['mean_abs_error']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
