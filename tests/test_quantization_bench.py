"""``python -m deepfake_edge.benchmarks.quantization latency --quick``: every CPU recipe through the bench harness.

Speed figures of a tiny random model mean nothing, so nothing here is about
time: the command must run end to end, time every variant (and the extra int8
graphs it adds) in ``deepfake-edge bench``'s worker processes, and the extra
graph must be what its name says, checked on the ONNX file itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import onnx

CPU_VARIANTS = ["fp32", "int8", "int8-ort", "int8-static", "int8-ov", "int4", "int8-unfused", "int8-att8"]


def _ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


def test_latency_quick_times_every_recipe_through_the_bench_harness(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_edge.benchmarks.quantization", "latency", "--quick", "--threads", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "latency.json").read_text())
    rows = {row["engine"]: row for row in result["rows"]}
    assert set(rows) == {"torch fp32 eager (transformers)", *(f"deepfake-edge {v}" for v in CPU_VARIANTS)}
    assert all(row["status"] == "ok" for row in rows.values()), rows
    assert rows["deepfake-edge fp32"]["speedup_vs_ort_fp32"] == 1.0
    assert "| deepfake-edge int8-unfused |" in proc.stdout
    bench = json.loads(Path(result["bench_results"]).read_text())
    assert bench["command"][:3] == ["python", "-m", "deepfake_edge.benchmarks.quantization"]
    assert {r["engine"] for r in bench["rows"]} == {"torch", "deepfake-edge"}  # Optimum is not part of this table
    assert set(result["profiles"]) == {"fp32", "int8-ort", "int8 unfused", "int8", "int8 att8"}

    bundle = tmp_path / "tiny-bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "int8-mixed" not in manifest["variants"]  # only made when a proxy bundle kept MatMuls in fp32
    fused = _ops(bundle / manifest["variants"]["int8"]["file"])
    unfused = _ops(bundle / manifest["variants"]["int8-unfused"]["file"])
    # same quantized linear layers (2 layers x 6), attention and GELU left unfused in the extra graph
    assert fused["MatMulIntegerToFloat"] == unfused["MatMulIntegerToFloat"] == 12
    assert fused["MultiHeadAttention"] == 2 and unfused["MultiHeadAttention"] == 0 and unfused["Softmax"] == 2
    assert fused["FastGelu"] + fused["BiasGelu"] == 2 and unfused["FastGelu"] + unfused["BiasGelu"] == 0
    assert manifest["variants"]["int8"]["recipe"]["tune"] is False
    # 8-bit attention: no fp32 MultiHeadAttention left, two int8 GEMMs per head (tiny: 4 heads x 2 layers)
    att8 = _ops(bundle / manifest["variants"]["int8-att8"]["file"])
    assert att8["MultiHeadAttention"] == 0 and att8["MatMulIntegerToFloat"] == 12 + 2 * 4 * 2
    assert manifest["variants"]["int8-att8"]["recipe"]["attention"] == "int8"
    assert manifest["variants"]["int8"]["recipe"]["attention"] == "fp32"
