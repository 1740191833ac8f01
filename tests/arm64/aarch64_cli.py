"""``deepfake-edge predict`` on aarch64 against x86 results for the same files.

The predictions run in subprocesses, as users run the command; the exit-code checks call the same
``main`` in-process, because every emulated start-up costs tens of seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepfake_edge.cli import main
from deepfake_edge.extras import importable
from deepfake_edge.labels import softmax

CLI = [sys.executable, "-m", "deepfake_edge.cli"]
TIMEOUT_S = 600  # emulated start-up alone takes seconds
FOLDERS = ("modes", "photos")  # every file but the 12 MP JPEG, which the preprocessing test covers
SCORE_ATOL = 1e-5  # fp32 logits agree to ~1e-5 across CPUs (the parity check measures it), softmax shrinks it


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], check=False, capture_output=True, text=True, timeout=TIMEOUT_S)


def _x86_scores(reference: dict[str, Any], x86_logits: dict[str, np.ndarray], variant: str) -> dict[str, np.ndarray]:
    spec = reference["bundles"]["binary"]
    return dict(zip(spec["images"], softmax(x86_logits[f"binary/{variant}"]), strict=True))


def _rows(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def bundle(reference_dir: Path, reference: dict[str, Any]) -> Path:
    return reference_dir / reference["bundles"]["binary"]["dir"]


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_predict_folders_match_x86(
    variant: str, bundle: Path, reference_dir: Path, reference: dict[str, Any], x86_logits: dict[str, np.ndarray]
) -> None:
    folders = [reference_dir / "images" / f for f in FOLDERS]
    proc = _run("predict", bundle, *folders, "--variant", variant, "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    expected = _x86_scores(reference, x86_logits, variant)
    labels = ("fake", "real")
    rows = _rows(proc)
    assert len(rows) == len([name for name in expected if name.split("/")[0] in FOLDERS])
    for row in rows:
        name = Path(row["path"]).relative_to(reference_dir / "images").as_posix()
        got = np.array([row["scores"][label] for label in labels])
        np.testing.assert_allclose(got, expected[name], atol=SCORE_ATOL, err_msg=name)
        assert row["label"] == labels[int(expected[name].argmax())], name


def test_predict_reports_failures_and_keeps_going(bundle: Path, reference_dir: Path, tmp_path: Path) -> None:
    photo = reference_dir / "images" / "modes" / "RGB.jpg"
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(photo.read_bytes()[:200])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    proc = _run("predict", bundle, photo, corrupt, tmp_path / "missing.png", notes, photo)
    assert proc.returncode == 1
    expected = [None, "ImageDecodeError", "ImageReadError", "ImageDecodeError", None]
    assert [r.get("error") for r in _rows(proc)] == expected
    assert "3 of 5 inputs failed" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_engine_names_its_extra(
    bundle: Path, reference: dict[str, Any], reference_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The OpenVINO variant on a base install: exit 3 with the pip command, no traceback."""
    spec = reference["bundles"]["binary"]
    if "int8-ov" not in spec["variants"]:
        pytest.skip(f"the reference bundle has no int8-ov variant: {spec['unavailable'].get('int8-ov')}")
    if importable("openvino"):
        pytest.skip("OpenVINO is installed here: this checks a base install")
    image = reference_dir / "images" / "modes" / "RGB.png"
    assert main(["predict", str(bundle), str(image), "--variant", "int8-ov"]) == 3
    assert "pip install 'deepfake-edge[openvino]'" in capsys.readouterr().err


def test_bad_bundle_is_a_clean_error(tmp_path: Path, reference_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tmp_path), str(reference_dir / "images" / "modes" / "RGB.png")]) == 4
    assert "manifest" in capsys.readouterr().err


def test_help_explains_predict(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "JSON" in out and "--variant" in out
