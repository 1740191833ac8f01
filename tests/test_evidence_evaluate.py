"""``evaluate --evidence DIR``: overlays for exactly the false positives and negatives of the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from deepfake_edge import Detector
from deepfake_edge.export.sample_images import synthetic_images

from old_bundles import old_copy

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


def _labelled(root: Path, photo_paths: list[Path]) -> Path:
    """fake/: the shipped photos; real/: synthetic images (arbitrary for a random-weight model: both kinds of error)."""
    for label in ("fake", "real"):
        (root / label).mkdir(parents=True)
    for path in photo_paths:
        with Image.open(path) as image:
            image.convert("RGB").save(root / "fake" / f"{path.stem}.png")
    for item in synthetic_images(12, seed=3):
        item.image.save(root / "real" / f"{item.name}.png")
    return root


def test_evidence_for_every_misclassified_image(binary_bundle: Path, photo_paths: list[Path], tmp_path: Path) -> None:
    data = _labelled(tmp_path / "data", photo_paths)
    out, evidence = tmp_path / "out", tmp_path / "evidence"
    proc = subprocess.run([*CLI, "evaluate", str(binary_bundle), str(data), "--out", str(out), "--no-plot",
                           "--variants", "fp32", "--evidence", str(evidence)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    wrong = {r["path"]: r["true"] for r in report["images"] if r["predicted"]["fp32"] != r["true"]}
    index = json.loads((evidence / "index.json").read_text())
    assert index["variant"] == "fp32" and wrong, "the tiny model should get some images wrong"
    assert {e["path"] for e in index["errors"]} == set(wrong)
    detector = Detector.load(binary_bundle, "fp32")
    for entry in index["errors"]:
        kind = "false_negatives" if wrong[entry["path"]] == "fake" else "false_positives"
        assert entry["kind"] == kind and Path(entry["evidence"]).parent == evidence / kind
        expected = detector.predict_one(entry["path"], evidence=True)
        assert entry["hotspots"] == [h.to_dict() for h in expected.hotspots(3)]
        with Image.open(entry["evidence"]) as png, Image.open(entry["path"]) as original:
            assert png.width == original.width


def test_old_bundle_names_the_reexport(binary_bundle: Path, photo_paths: list[Path], tmp_path: Path) -> None:
    old = old_copy(binary_bundle, tmp_path / "old")
    data = _labelled(tmp_path / "data", photo_paths[:2])
    proc = subprocess.run([*CLI, "evaluate", str(old), str(data), "--out", str(tmp_path / "out"), "--no-plot",
                           "--evidence", str(tmp_path / "ev")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 4 and "re-export" in proc.stderr, proc.stderr
