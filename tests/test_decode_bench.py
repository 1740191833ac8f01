"""The exact-against-fast decoding benchmark runs end to end (its figures are for benchmarks/, not for tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image


def test_decode_benchmark_reports_every_part(binary_bundle: Path, photo_paths: list[Path], tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    with Image.open(photo_paths[0]) as photo:
        photo.convert("RGB").save(images / "small.png")
        photo.convert("RGB").resize((800, 600)).save(images / "large.jpg", quality=90)
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "deepfake_edge.benchmarks.decode", "--bundle", str(binary_bundle),
                           "--variants", "fp32", "--images", str(images), "--shipped", "1", "--runs", "1",
                           "--rss-runs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["speed"]["exact"]["decoded_size"] == [4000, 3000]
    assert result["speed"]["fast x2"]["decoded_size"] == [500, 375]  # 1/8: still >= 2 x the 45 px input
    assert all(mb > 20 for by_mode in result["peak_rss_mb"].values() for mb in by_mode.values())
    as_they_are = next(row for group, row in result["fidelity"].items() if group.endswith("as they are"))
    # the PNG is never drafted; the 800x600 JPEG is (at least 4 x the 45 px input)
    assert as_they_are["images"] == 2 and as_they_are["fast x2"]["tensor_max_abs_diff"] > 0
    large = next(row for group, row in result["fidelity"].items() if group.startswith("shipped"))
    assert large["images"] == 1 and 0 < large["fast x2"]["fp32"]["label_agreement"] <= 1
    assert "peak RSS of a new process, decode only" in proc.stdout
