"""Evidence maps at run time: exact against the model's own logits, placed on the original image, drawn.

The margin's mean is compared with the log-odds recomputed from the reported probabilities, the
hotspot boxes with PIL's own EXIF transpose of a marked image, the old-bundle refusal with a bundle
whose model lost the output: none of these references is our evidence code.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from deepfake_edge import Detector, Prediction, UnsupportedBundleError
from deepfake_edge.evidence import (
    EVIDENCE_OUTPUT,
    Evidence,
    evidence_overlay,
    grid_shape,
    hotspots,
    margins,
)

from old_bundles import old_copy


@pytest.fixture(scope="module")
def images(evaluation_images: list[Image.Image]) -> list[Image.Image]:
    return evaluation_images[:6]


def _predictions(detector: Detector, images: list[Image.Image], **kwargs: object) -> list[Prediction]:
    results = detector.predict(images, batch_size=4, **kwargs)  # type: ignore[arg-type]
    assert all(isinstance(r, Prediction) for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("variant", ["fp32", "int8", "int8-ort", "int8-static"])
def test_map_averages_to_the_images_own_margin(variants_bundle: Path, images: list[Image.Image],
                                               variant: str) -> None:
    """mean(evidence) = log P(fake) - log P(real), recomputed from the reported scores (two labels)."""
    detector = Detector.load(variants_bundle, variant)
    plain = _predictions(detector, images)
    with_maps = _predictions(detector, images, evidence=True)
    cfg = detector.bundle.preprocess
    for a, b in zip(plain, with_maps, strict=True):
        assert a.evidence is None and a.scores == b.scores and a.label == b.label  # nothing else changes
        assert b.evidence is not None and b.evidence.dtype == np.float32
        rows, cols = b.evidence.shape
        assert rows * cols == (cfg.height // 9) * (cfg.width // 9)  # the binary spec's patch size is 9
        log_odds = np.log(b.scores["fake"]) - np.log(b.scores["real"])
        assert float(b.evidence.astype(np.float64).mean()) == pytest.approx(log_odds, abs=1e-4)


def test_three_labels_use_the_mean_of_the_others(any_bundle: tuple[str, Path, Path],
                                                 images: list[Image.Image]) -> None:
    name, _, bundle = any_bundle
    detector = Detector.load(bundle, "fp32")
    positive = detector.positive_label
    assert positive is not None, f"{name}: the tiny bundle has no positive label"
    for result in _predictions(detector, images, evidence=True):
        log_p = np.log(np.array([result.scores[label] for label in detector.labels]))
        others = [log_p[i] for i, label in enumerate(detector.labels) if label != positive]
        # log-probabilities differ from the logits by one shared constant, which the linear margin cancels
        expected = log_p[detector.labels.index(positive)] - np.mean(others)
        assert result.evidence is not None
        assert float(result.evidence.astype(np.float64).mean()) == pytest.approx(expected, abs=1e-4)


def test_margins_formula() -> None:
    z = np.array([[[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]]])
    np.testing.assert_allclose(margins(z, ("fake", "real", "edited"), "fake"), [[2.0 - (-0.25), 0.0 - 2.0]])
    np.testing.assert_allclose(margins(z[..., :2], ("real", "fake"), "fake"), [[-3.0, 1.0]])
    with pytest.raises(ValueError, match="not among the labels"):
        margins(z, ("a", "b", "c"), "fake")
    assert grid_shape(1024, 512, 512) == (32, 32) and grid_shape(6, 20, 30) == (2, 3)


def test_without_evidence_only_logits_are_fetched(binary_bundle: Path, images: list[Image.Image]) -> None:
    detector = Detector.load(binary_bundle, "fp32")
    asked: list[list[str]] = []

    class Recording:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def get_outputs(self) -> object:
            return self.inner.get_outputs()  # type: ignore[attr-defined]

        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            asked.append(list(names))
            return self.inner.run(names, feeds)  # type: ignore[attr-defined, no-any-return]

    detector.session = Recording(detector.session)  # type: ignore[assignment]
    detector.predict(images)
    assert asked and all(names == ["logits"] for names in asked)
    asked.clear()
    detector.predict(images, evidence=True)
    assert asked and all(names == ["logits", EVIDENCE_OUTPUT] for names in asked)


def _marked(size: tuple[int, int], box: tuple[float, float, float, float], orientation: int) -> Image.Image:
    """A black image of the stored ``size`` with the cell ``box`` white, tagged with ``orientation``."""
    image = Image.new("L", size, 0)
    image.paste(255, tuple(round(v) for v in box))  # type: ignore[arg-type]
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_hotspot_boxes_follow_the_squash_and_the_exif_orientation(orientation: int) -> None:
    """The top cell's box equals where PIL's exif_transpose puts that cell of the stored image."""
    grid = np.zeros((3, 4), np.float32)
    grid[0, 3] = 2.0  # stored layout: top row, last column
    grid[2, 1] = 1.0
    size = (120, 60)  # stored width x height: cells of 30 x 20 pixels after un-squashing
    evidence = Evidence(grid, size, orientation)
    top, second = hotspots(evidence, 2)
    assert (top.margin, second.margin) == (2.0, 1.0)
    stored_box = (3 * 30, 0, 4 * 30, 20)
    upright = ImageOps.exif_transpose(_marked(size, stored_box, orientation))
    assert upright is not None
    assert top.box == pytest.approx(upright.getbbox(), abs=1e-6)
    assert upright.size == evidence.upright_size()


def test_prediction_hotspots_on_a_rotated_photo(binary_bundle: Path, images: list[Image.Image]) -> None:
    """A JPEG with EXIF orientation 6 (shown rotated 90 degrees): boxes lie within the displayed size."""
    rgb = images[0].convert("RGB").resize((80, 50))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    detector = Detector.load(binary_bundle, "fp32")
    result = detector.predict_one(buffer.getvalue(), evidence=True)
    assert (result.image_size, result.orientation) == ((80, 50), 6)
    spots = result.hotspots(5)
    assert [s.margin for s in spots] == sorted((s.margin for s in spots), reverse=True)
    assert spots[0].margin == pytest.approx(float(result.evidence.max()))  # type: ignore[union-attr]
    for spot in spots:
        x0, y0, x1, y1 = spot.box
        assert 0 <= x0 < x1 <= 50 and 0 <= y0 < y1 <= 80  # upright: 50 wide, 80 high


def test_overlay_colours_the_top_cell_and_states_its_scale(binary_bundle: Path, images: list[Image.Image]) -> None:
    detector = Detector.load(binary_bundle, "fp32")
    image = images[1].convert("RGB").resize((90, 72))
    result = detector.predict_one(image, evidence=True)
    overlay = evidence_overlay(result, image)
    assert overlay.width == 90 and overlay.height > 72  # the legend strip below the picture
    top = result.hotspots(1)[0]
    x0, y0, x1, y1 = (round(v) for v in top.box)
    before = np.asarray(image, np.float64)[y0:y1, x0:x1]
    after = np.asarray(overlay, np.float64)[y0:y1, x0:x1]
    if top.margin > 0:  # toward fake: redder than the photo there
        assert (after[..., 0] - after[..., 2]).mean() > (before[..., 0] - before[..., 2]).mean()
    assert np.abs(after - before).mean() > 1.0
    legend = np.asarray(overlay)[72:]
    assert (legend < 128).any()  # the numbers of the scale are printed


@pytest.mark.parametrize("variant", ["fp32", "int8", "int8-static"])
def test_logits_are_bit_identical_without_the_branch(variants_bundle: Path, tmp_path: Path,
                                                     images: list[Image.Image], variant: str) -> None:
    """The patch_logits branch leaves the logits path alone: the same file without that output (what
    the export wrote before) gives the very same bits. int8-ort pools its logits from the patch
    logits instead (see docs/evidence.md), so it is not among these."""
    old = old_copy(variants_bundle, tmp_path / "old", variant)
    before = Detector.load(old, "fp32")
    after = Detector.load(variants_bundle, variant)
    assert not before.has_evidence and after.has_evidence
    pixels = after.preprocess(images)
    assert np.array_equal(before.logits(pixels), after.logits(pixels))
    assert np.array_equal(before.logits(pixels), after.logits_and_evidence(pixels)[0])


def test_old_bundle_still_predicts_but_refuses_evidence(binary_bundle: Path, tmp_path: Path,
                                                        images: list[Image.Image]) -> None:
    old = old_copy(binary_bundle, tmp_path / "old")
    detector = Detector.load(old, "fp32")
    assert not detector.has_evidence
    new = Detector.load(binary_bundle, "fp32")
    assert [r.scores for r in _predictions(detector, images)] == [r.scores for r in _predictions(new, images)]
    with pytest.raises(UnsupportedBundleError, match=r"no 'patch_logits' output.*re-export"):
        detector.predict(images, evidence=True)
    proc = subprocess.run([sys.executable, "-m", "deepfake_edge.cli", "predict", str(old), "--variant", "fp32",
                           "--evidence", str(tmp_path / "ev"), str(_saved(images[0], tmp_path))],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "re-export" in proc.stderr and not proc.stdout


def _saved(image: Image.Image, directory: Path, name: str = "photo.png") -> Path:
    path = directory / name
    image.convert("RGB").save(path)
    return path


def test_predict_cli_writes_overlays_and_hotspots(binary_bundle: Path, tmp_path: Path,
                                                  images: list[Image.Image]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [_saved(images[2].resize((64, 40)), tmp_path / "a"), _saved(images[3], tmp_path / "b"),
             tmp_path / "broken.png"]
    paths[2].write_bytes(b"not an image")
    out = tmp_path / "evidence"
    proc = subprocess.run([sys.executable, "-m", "deepfake_edge.cli", "predict", str(binary_bundle),
                           "--variant", "fp32", "--evidence", str(out), *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr  # the broken file fails, the others are reported
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "error" in lines[2] and "evidence" not in lines[2]
    written = [Path(line["evidence"]) for line in lines[:2]]
    assert [p.name for p in written] == ["photo.evidence.png", "photo-2.evidence.png"]  # same stem, two files
    detector = Detector.load(binary_bundle, "fp32")
    for line, path, picture in zip(lines[:2], paths, written, strict=False):
        expected = detector.predict_one(path, evidence=True)
        assert line["hotspots"] == [h.to_dict() for h in expected.hotspots(3)]
        with Image.open(picture) as png, Image.open(path) as original:
            assert png.width == original.width and png.height > original.height
    assert "--evidence DIR" in subprocess.run([sys.executable, "-m", "deepfake_edge.cli", "predict", "--help"],
                                              capture_output=True, text=True, timeout=60, check=True).stdout
