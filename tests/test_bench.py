"""``deepfake-edge bench --quick`` end to end, and the pieces whose behaviour the numbers rest on.

The smoke test runs the real command once (tiny random model, every engine in
its own process) and then checks the results against independent references:
percentiles recomputed with the ``statistics`` module, ratios recomputed from
the raw samples, the torch row's prediction recomputed with transformers, the
footprint against ``importlib.metadata``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("torch", reason="the benchmark needs the [bench] extra (torch, transformers, optimum)")

from deepfake_edge.export import DEFAULT_VARIANTS  # noqa: E402 - its recipes need the extra

CLI = [sys.executable, "-m", "deepfake_edge.cli"]
# Optimum runs the variants a Hugging Face user would have; deepfake-edge runs every variant the default export
# builds (int8-ov joins them where OpenVINO is installed).
ENGINE_KEYS = {("torch", "fp32"), ("optimum", "fp32"), ("optimum", "int8"),
               *(("deepfake-edge", variant) for variant in DEFAULT_VARIANTS)}
QuickRun = tuple[Path, dict[str, Any]]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    root = tmp_path_factory.mktemp("bench")
    out = root / "results"
    proc = subprocess.run([*CLI, "bench", "--quick", "--out", str(out), "--cache-dir", str(root / "cache"),
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| Engine |" in proc.stdout  # the table is printed as well as written
    return out, json.loads((out / "results.json").read_text(encoding="utf-8"))


def _p95(samples: list[float]) -> float:
    # statistics' "inclusive" method is the linear interpolation results.json documents
    return statistics.quantiles(samples, n=100, method="inclusive")[94] if len(samples) > 1 else samples[0]


def _by_key(results: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(r["engine"], r["variant"], r["batch_size"]): r for r in results["rows"]}


def test_quick_run_is_complete(quick_run: QuickRun) -> None:
    """Every engine row ran and every output file is there (how long --quick takes is the benchmark's to say)."""
    out, results = quick_run
    assert results["elapsed_s"] > 0
    assert results["schema"] == "deepfake-edge-bench" and results["schema_version"] == 1
    assert results["settings"]["quick"] is True
    batch = results["settings"]["batch_size"]
    assert set(_by_key(results)) == {(e, v, b) for e, v in ENGINE_KEYS for b in (1, batch)}
    errors = [r["error"] for r in results["rows"]]
    assert all(r["status"] == "ok" for r in results["rows"]) and not any(errors), errors
    assert [r for r in results["rows"] if r["baseline"]] == [r for r in results["rows"] if r["engine"] == "torch"]
    for name in ("results.md", "results.png", "inputs/bench.jpg", "logs/torch-fp32.log"):
        assert (out / name).is_file(), name
    # this machine's limits, and every batch-1 engine placed against them
    limits = results["limits"]
    assert limits["peaks"]["fp32_gflops"] > 0 and limits["peaks"]["int8_gops"] > 0
    assert sorted(e["label"] for e in limits["engines"]) == sorted(r["label"] for r in results["rows"]
                                                                    if r["batch_size"] == 1)
    assert "## This machine's limits" in (out / "results.md").read_text()


def test_random_weights_are_labelled_everywhere(quick_run: QuickRun) -> None:
    out, results = quick_run
    assert results["model"]["random_weights"] is True
    assert results["weights_note"] == "random weights, speed only"
    assert "random weights, speed only" in results["model"]["description"]
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "random weights, speed only" in markdown.splitlines()[2]  # right under the title
    assert "accuracy" not in json.dumps(results["rows"]).lower()


def test_machine_and_inputs_are_described(quick_run: QuickRun) -> None:
    out, results = quick_run
    machine = results["machine"]
    for name in ("torch", "transformers", "onnxruntime", "numpy", "pillow"):
        assert machine["libraries"][name] == metadata.version(name)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: the flags line of the first CPU
        flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split()
        assert ("avx512_vnni" in machine["isa_flags"]) == ("avx512_vnni" in flags)
        assert ("avx2" in machine["isa_flags"]) == ("avx2" in flags)
    assert machine["usable_cores"] >= 1 and results["settings"]["threads"] == machine["usable_cores"]
    jpeg = results["inputs"]["jpeg"]
    assert results["command"][:3] == ["deepfake-edge", "bench", "--quick"]
    with Image.open(out / "inputs" / "bench.jpg") as im:
        assert im.size == (jpeg["width"], jpeg["height"]) == (4000, 3000)
        assert im.format == "JPEG"


def test_summaries_and_ratios_recomputed_from_raw_samples(quick_run: QuickRun) -> None:
    _, results = quick_run
    settings = results["settings"]
    rows = _by_key(results)
    for (engine, variant, batch), row in rows.items():
        samples = row["samples_ms"]
        assert len(samples["latency"]) == (settings["runs"] if batch == 1 else settings["batch_runs"])
        assert all(t > 0 for values in samples.values() for t in values)
        for key, metric in (("latency", "latency_ms"), ("e2e", "e2e_ms"), ("preprocess", "preprocess_ms")):
            if key not in samples:
                continue
            assert row[metric]["p50"] == pytest.approx(statistics.median(samples[key]), rel=1e-6, abs=1e-3)
            assert row[metric]["p95"] == pytest.approx(_p95(samples[key]), rel=1e-6, abs=1e-3)
        seconds = sum(samples["latency"]) / 1000
        assert row["throughput_ips"] == pytest.approx(batch * len(samples["latency"]) / seconds, rel=1e-6)
        assert row["peak_rss_mb"] > 10
        base = rows[("torch", "fp32", batch)]
        ratios = row["vs_baseline"]
        med = statistics.median
        base_samples = base["samples_ms"]
        speedup = med(base_samples["latency"]) / med(samples["latency"])
        assert ratios["latency_speedup"] == pytest.approx(speedup, rel=1e-6)
        assert ratios["throughput_ratio"] == pytest.approx(row["throughput_ips"] / base["throughput_ips"], rel=1e-6)
        assert ratios["rss_ratio"] == pytest.approx(row["peak_rss_mb"] / base["peak_rss_mb"], rel=1e-6)
        if batch == 1:
            assert ratios["e2e_speedup"] == pytest.approx(med(base_samples["e2e"]) / med(samples["e2e"]), rel=1e-6)
            assert ratios["preprocess_speedup"] == pytest.approx(
                med(base_samples["preprocess"]) / med(samples["preprocess"]), rel=1e-6)
            assert ratios["cold_start_speedup"] == pytest.approx(base["cold_start_s"] / row["cold_start_s"], rel=1e-6)
            # the cold start runs from the spawn, so it covers loading and the first prediction
            assert row["cold_start_s"] > row["load_s"] + row["first_prediction_s"] > 0
            assert row["peak_rss_mb"] >= row["loaded_peak_rss_mb"]
        else:
            assert row["peak_rss_mb"] >= rows[(engine, variant, 1)]["peak_rss_mb"]  # batch work comes after batch 1


def test_markdown_table_shows_the_rows_ratios(quick_run: QuickRun) -> None:
    out, results = quick_run
    markdown = (out / "results.md").read_text(encoding="utf-8")
    batch1 = markdown.split("## Batch 1", 1)[1].split("## Batch", 1)[0]
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in batch1.splitlines() if line.startswith("| ") and "---" not in line}
    for row in results["rows"]:
        if row["batch_size"] != 1:
            continue
        name = f"{row['label']} **(baseline)**" if row["baseline"] else row["label"]
        cells = table[name]
        samples = row["samples_ms"]
        base = next(r for r in results["rows"] if r["baseline"] and r["batch_size"] == 1)
        speedup = statistics.median(base["samples_ms"]["latency"]) / statistics.median(samples["latency"])
        assert cells[2] == f"{speedup:.2f}×"
        assert cells[7] == f"{row['peak_rss_mb'] / base['peak_rss_mb']:.2f}×"


def test_predictions_match_transformers(quick_run: QuickRun) -> None:
    """Every engine ran the same model: check each one's first prediction against the model card's code."""
    import torch
    from transformers import SiglipForImageClassification, SiglipImageProcessor

    out, results = quick_run
    checkpoint = results["model"]["checkpoint"]
    model = SiglipForImageClassification.from_pretrained(checkpoint).eval()
    processor = SiglipImageProcessor.from_pretrained(checkpoint)
    with Image.open(out / "inputs" / "bench.jpg") as im:
        inputs = processor(images=im.convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model(**inputs).logits, dim=1)[0].tolist()
    for row in results["rows"]:
        if row["batch_size"] != 1:
            continue
        tolerance = 1e-4 if row["variant"] == "fp32" else 0.05  # int8 is an approximation of fp32
        assert row["scores_on_bench_jpeg"] == pytest.approx(expected, abs=tolerance), row["label"]
        assert row["max_abs_dp_vs_baseline"] == pytest.approx(
            max(abs(a - b) for a, b in zip(row["scores_on_bench_jpeg"], expected, strict=True)), abs=1e-5)


def test_footprint_counts_the_dependency_closures(quick_run: QuickRun) -> None:
    _, results = quick_run
    footprint = results["footprint"]
    runtime, torch_stack = footprint["deepfake_edge"]["packages"], footprint["torch_transformers"]["packages"]
    assert {"numpy", "pillow", "onnxruntime"} <= set(runtime) and not {"torch", "transformers"} & set(runtime)
    assert {"torch", "transformers", "pillow", "numpy"} <= set(torch_stack)
    # torch's own size, summed independently from its RECORD
    dist = metadata.distribution("torch")
    files = [Path(str(dist.locate_file(f))) for f in dist.files or []]
    record = sum(path.stat().st_size for path in files if path.exists())
    assert torch_stack["torch"] == pytest.approx(record / 1e6, abs=0.01)
    assert footprint["deepfake_edge"]["total_mb"] < footprint["torch_transformers"]["total_mb"]


def test_chart_is_a_readable_png(quick_run: QuickRun) -> None:
    out, _ = quick_run
    with Image.open(out / "results.png") as im:
        assert im.format == "PNG"
        assert im.width >= 1200 and im.height >= 500


def test_engine_that_cannot_load_reports_why(binary_bundle: Path, tmp_path: Path) -> None:
    """A worker that dies during start-up becomes a WorkerError carrying the exception line from its log."""
    from deepfake_edge.benchmarks.inputs import make_inputs
    from deepfake_edge.benchmarks.workers import EngineSpec, WorkerError, WorkerProcess

    inputs = make_inputs(tmp_path / "inputs", binary_bundle, size=(64, 48))
    spec = EngineSpec("deepfake-edge", "bf16-missing", "deepfake-edge bf16-missing", "model_bf16.onnx")
    with pytest.raises(WorkerError, match=r"UnsupportedBundleError: .*no variant 'bf16-missing'"):
        WorkerProcess.start(spec, checkpoint="unused", bundle=binary_bundle, threads=1, jpeg=inputs.jpeg,
                            pixel_values=inputs.pixel_values, log=tmp_path / "worker.log", timeout=120)


def test_existing_bundle_uses_its_recorded_checkpoint(
    binary_bundle: Path, binary_checkpoint: Path, tmp_path: Path
) -> None:
    from deepfake_edge.benchmarks.models import prepare_model

    model = prepare_model(model=None, bundle=binary_bundle, architecture="tiny", cache_dir=tmp_path, rebuild=False,
                          log=lambda _message: None)
    assert Path(model.checkpoint) == binary_checkpoint.resolve()
    assert model.random_weights is False  # a user's checkpoint is never labelled as a speed-only model


def test_missing_extra_is_a_clean_exit_3() -> None:
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Block())
from deepfake_edge.cli import main
sys.exit(main(["bench", "--quick"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "pip install 'deepfake-edge[bench]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("option", "value"), [("--runs", "0"), ("--batch-size", "1"), ("--warmup", "-1"),
                                               ("--threads", "many")])
def test_bad_option_values_are_usage_errors(option: str, value: str) -> None:
    """Exit code 2 with argparse's message, before anything is built or run."""
    proc = subprocess.run([*CLI, "bench", option, value], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"argument {option}: expected" in proc.stderr and "Traceback" not in proc.stderr
