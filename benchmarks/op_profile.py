"""Per-operator time of an ONNX model under onnxruntime's profiler.

Answers "where do the milliseconds go" for a variant: the profile is the
evidence behind each graph pass we keep.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort


def profile_ops(model: Path, input_shape: tuple[int, ...], *, threads: int = 2, runs: int = 3) -> dict[str, float]:
    """Mean milliseconds per run spent in each op type (kernel time, not wall)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "prof")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
        session.run(None, {"pixel_values": x})  # warm-up (also profiled; excluded below)
        for _ in range(runs):
            session.run(None, {"pixel_values": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, list[float]] = defaultdict(list)
    run_index = -1
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("name") == "model_run":
            run_index += 1
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and run_index >= 0:
            per_op[event["args"]["op_name"]].append(event["dur"] / 1000.0)
    for op, durations in per_op.items():
        totals[op] = sum(durations) / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def format_profile(profiles: dict[str, dict[str, float]], top: int = 12) -> str:
    """A markdown table: op type x variant, in ms per image."""
    names = list(profiles)
    ops = sorted({op for p in profiles.values() for op in p},
                 key=lambda op: -max(p.get(op, 0.0) for p in profiles.values()))
    lines = ["| op | " + " | ".join(f"{n} (ms)" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for op in ops[:top]:
        lines.append(f"| {op} | " + " | ".join(f"{profiles[n].get(op, 0.0):.1f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(profiles[n].values()):.1f}**" for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-op onnxruntime profile of one or more ONNX models.")
    parser.add_argument("models", nargs="+", help="NAME=PATH pairs")
    parser.add_argument("--shape", default="1,3,512,512", help="input shape (default 1,3,512,512)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    profiles = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        profiles[name] = profile_ops(Path(path), shape, threads=args.threads, runs=args.runs)
    print(format_profile(profiles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
