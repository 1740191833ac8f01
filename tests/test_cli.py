"""The ``deepfake-edge`` command end to end, in subprocesses (as users run it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from deepfake_edge import Detector
from deepfake_edge.cli import SUBCOMMANDS

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory, photo_paths: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "nested").mkdir()
    for i, path in enumerate(photo_paths[:4]):
        with Image.open(path) as im:
            im.convert("RGB").save(root / f"photo{i}.jpg")
    with Image.open(photo_paths[4]) as im:
        im.convert("RGB").save(root / "nested" / "deep.png")
    (root / "notes.txt").write_text("not an image, and not picked up from a folder")
    return root


def test_predict_folder_json_lines(binary_bundle: Path, image_dir: Path) -> None:
    proc = _run("predict", binary_bundle, image_dir, "--variant", "fp32", "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == [f"photo{i}.jpg" for i in range(4)]
    detector = Detector.load(binary_bundle, "fp32")
    for row in rows:
        expected = detector.predict_one(row["path"])
        assert row["label"] == expected.label
        assert row["scores"] == pytest.approx(expected.scores, abs=1e-9)  # batched vs single: float rounding only
    recursive = _run("predict", binary_bundle, image_dir, "--recursive")
    assert recursive.returncode == 0
    assert len(recursive.stdout.splitlines()) == 5


def test_predict_reports_failures_and_keeps_going(binary_bundle: Path, image_dir: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes((image_dir / "photo0.jpg").read_bytes()[:200])
    proc = _run("predict", binary_bundle, image_dir / "photo0.jpg", corrupt, tmp_path / "missing.png",
                image_dir / "notes.txt", image_dir / "photo1.jpg")
    assert proc.returncode == 1
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [("label" in r, r.get("error")) for r in rows] == [
        (True, None), (False, "ImageDecodeError"), (False, "ImageReadError"), (False, "ImageDecodeError"), (True, None)
    ]
    assert "Traceback" not in proc.stderr
    assert "3 of 5 inputs failed" in proc.stderr


def test_predict_threshold_option(binary_bundle: Path, image_dir: Path) -> None:
    low = [json.loads(x) for x in _run("predict", binary_bundle, image_dir, "--threshold", "0").stdout.splitlines()]
    high = [json.loads(x) for x in _run("predict", binary_bundle, image_dir, "--threshold", "1").stdout.splitlines()]
    assert {r["label"] for r in low} == {"fake"}
    assert all(r["label"] == ("fake" if r["scores"]["fake"] >= 1.0 else "real") for r in high)


def test_bad_bundle_is_a_clean_error(tmp_path: Path, image_dir: Path) -> None:
    proc = _run("predict", tmp_path, image_dir)
    assert proc.returncode == 4
    assert "manifest" in proc.stderr and "Traceback" not in proc.stderr


def test_export_without_extra_prints_install_hint(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # makes 'import torch' fail, as without the extra
        "from deepfake_edge.cli import main\n"
        f"raise SystemExit(main(['export', 'some/model', {str(tmp_path / 'b')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "pip install 'deepfake-edge[export]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_every_command() -> None:
    """Every subcommand in the registry is listed by the top-level help and explains itself (works without extras)."""
    top = _run("--help")
    assert top.returncode == 0, top.stderr
    for command in SUBCOMMANDS:
        assert command in top.stdout, command
        proc = _run(command, "--help")
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        assert proc.stdout.startswith(f"usage: deepfake-edge {command}"), command
        assert len(proc.stdout) > 300, f"{command} --help says too little: {proc.stdout!r}"
        assert "Traceback" not in proc.stderr, command
