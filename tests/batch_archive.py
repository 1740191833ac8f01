"""An archive folder for the batch tests, and the reference the batch output must equal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from deepfake_edge import Detector, Prediction

from image_factory import mode_samples


def build_archive(root: Path, photo: Path) -> list[Path]:
    """Good images in a folder and a sub-folder, plus corrupt, truncated and empty files; returns every input."""
    samples = mode_samples(photo)
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, (name, data) in enumerate(samples.items()):
        (root / ("nested" if i % 3 == 0 else ".") / name).write_bytes(data)
    shutil.copy(photo, root / "nested" / "deeper" / f"photo{photo.suffix}")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG " * 10)
    (root / "nested" / "truncated.jpg").write_bytes(samples["RGB.jpg"][:300])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.md").write_text("not an image: never an input\n")
    (root / ".hidden.png").write_bytes(samples["RGB.png"])  # hidden: skipped, like predict does
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".png", ".jpg", ".gif"}
                  and not p.name.startswith("."))


def assert_same_as_predict(table: pa.Table, bundle: Path, variant: str, inputs: list[Path], *,
                           from_bytes: bool = False) -> None:
    """One row per input, and each row equal to ``Detector.predict`` on the same file.

    ``from_bytes``: the rows were decoded from the files' bytes, whose messages
    may word a few errors differently ("empty input" for "empty file").
    """
    rows = {row["path"]: row for row in table.to_pylist()}
    assert table.num_rows == len(rows) == len(inputs), "exactly one row per input"
    assert set(rows) == {str(p) for p in inputs}
    detector = Detector.load(bundle, variant)
    exact = not detector.variant.batch_invariant  # run per image, so bit-identical
    expected = detector.predict([str(p) for p in inputs], on_error="return")
    failed = 0
    for reference in expected:
        row = rows[reference.source]
        assert row["variant"] == variant and row["model_sha256"] == detector.variant.sha256
        if isinstance(reference, Prediction):
            assert row["error"] is None and row["message"] is None
            assert row["label"] == reference.label
            assert list(row["scores"]) == list(detector.labels)
            for label, p in reference.scores.items():
                assert row["scores"][label] == (p if exact else pytest.approx(p, abs=1e-6))
        else:
            failed += 1
            assert row["label"] is None and row["scores"] is None
            assert row["error"] == type(reference.error).__name__
            if from_bytes:
                assert row["message"].startswith(f"{reference.source}: ")
            else:
                assert row["message"] == str(reference.error)
    assert failed >= 3, "the archive's corrupt, truncated and empty files must fail"
