"""The start-up and memory benchmark runs end to end (its figures are for benchmarks/, not for tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_startup_memory_benchmark_reports_every_figure(binary_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "deepfake_edge.benchmarks.startup_memory", "--bundle",
                           str(binary_bundle), "--runs", "1", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    tree = result["trees"]["this tree"]
    assert tree["variant"] == "int8"
    assert tree["cold_1080p_s"] > 0 and tree["warm_1080p_s"] > 0 and tree["first_start_empty_cache_s"] > 0
    # a predict process holds at least its imports and model: far more than nothing
    assert all(rss > 20 for rss in tree["peak_rss_mb"].values())
    assert "start-up overhead" in proc.stdout and "peak RSS, 12 MP JPEG" in proc.stdout
    assert (tmp_path / "work" / "12mp.jpg").is_file()


def test_first_answer_benchmark_times_a_real_server(binary_bundle: Path, tmp_path: Path) -> None:
    """``serve`` is started, answers one real classify request over loopback, and is stopped."""
    out = tmp_path / "first.json"
    proc = subprocess.run([sys.executable, "-m", "deepfake_edge.benchmarks.first_answer", "--bundle",
                           str(binary_bundle), "--runs", "1", "--timeout", "120", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["first_answer_s"] > 0 and result["samples_s"] == [result["first_answer_s"]]
    assert "first /v1/classify answer" in proc.stdout and "machine:" in proc.stdout
