"""``deepfake-edge evaluate``: every figure checked against scikit-learn, the threshold against ``predict``.

The references are scikit-learn's ``classification_report``, ``confusion_matrix``,
``roc_curve`` and ``roc_auc_score``, the ``Detector``'s own scores, and the real
``deepfake-edge predict`` CLI before and after ``--write-threshold``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn", reason="evaluate's figures are checked against scikit-learn ([test] extra)")
pytest.importorskip("torch", reason="the labelled images are the [export] extra's shipped photos")

from sklearn.metrics import classification_report as sk_report
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from deepfake_edge import Detector, Failure, ImageDecodeError
from deepfake_edge.evaluate import (
    DatasetError,
    ScoredImages,
    classification_report,
    evaluate_bundle,
    evaluate_scores,
    roc_auc,
    roc_curve,
    scan_labelled_folder,
    threshold_at_fpr,
    write_threshold,
)
from deepfake_edge.export.sample_images import photos, synthetic_images

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def _nullable(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _sk_threshold(is_positive: np.ndarray, scores: np.ndarray, target: float) -> tuple[float, float, float] | None:
    """(threshold, fpr, recall) from scikit-learn's full ROC: best recall within the target, highest threshold."""
    fpr, tpr, thresholds = sk_roc_curve(is_positive, scores, drop_intermediate=False)
    allowed = np.flatnonzero(fpr <= target)
    best = tpr[allowed].max()
    if best == 0:
        return None
    i = allowed[tpr[allowed] == best][0]
    return float(thresholds[i]), float(fpr[i]), float(tpr[i])


# -- the metrics, on random data with many ties -------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_classification_report_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ("fake", "real", "edited", "a-much-longer-label-name")[: 2 + seed % 3] if seed % 4 else ("fake", "real")
    n = int(rng.integers(5, 300))
    y_true = rng.integers(0, len(names), n)
    # mostly right, sometimes a class is never predicted or never present
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, len(names), n))
    if seed % 5 == 0:
        y_pred[y_pred == 1] = 0
    if seed % 6 == 1:
        y_true[y_true == len(names) - 1] = 0
    present = sorted(set(y_true) | set(y_pred))
    ours = classification_report(y_true, y_pred, names)
    kwargs = {"labels": present, "target_names": [names[i] for i in present], "zero_division": 0.0}
    # zero_division=0.0 gives the numbers of sklearn's default ("warn") without the warning
    assert ours.to_text(4) == sk_report(y_true, y_pred, digits=4, **kwargs)
    assert ours.to_text(2) == sk_report(y_true, y_pred, digits=2, **kwargs)
    assert ours.to_dict() == sk_report(y_true, y_pred, output_dict=True, **kwargs)


@pytest.mark.parametrize("seed", range(12))
def test_roc_and_threshold_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(4, 400))
    is_positive = rng.random(n) < rng.uniform(0.1, 0.9)
    is_positive[:2] = [True, False]
    scores = np.clip(rng.normal(0.35 + 0.3 * is_positive, 0.25), 0, 1)
    if seed % 2:
        scores = np.round(scores, 1)  # heavy ties, including exact 0.0 and 1.0
    for drop in (True, False):
        fpr, tpr, thresholds = sk_roc_curve(is_positive, scores, drop_intermediate=drop)
        ours = roc_curve(is_positive, scores, drop_intermediate=drop)
        np.testing.assert_array_equal(ours.fpr, fpr)
        np.testing.assert_array_equal(ours.tpr, tpr)
        np.testing.assert_array_equal(ours.thresholds, thresholds)
    assert roc_auc(roc_curve(is_positive, scores)) == pytest.approx(roc_auc_score(is_positive, scores), abs=1e-12)

    negatives, positives = scores[~is_positive], scores[is_positive]
    for target in (0.0, 0.01, 0.05, 0.2, 0.5, 1.0):
        point = threshold_at_fpr(is_positive, scores, target)
        expected = _sk_threshold(is_positive, scores, target)
        if expected is None:
            assert point is None
            continue
        assert point is not None
        assert (point.threshold, point.fpr, point.recall) == expected
        # the definitions, on the data itself
        assert (negatives >= point.threshold).mean() == point.fpr <= target
        assert (positives >= point.threshold).mean() == point.recall
        # no other observed score does better within the target
        for t in np.unique(scores):
            if (negatives >= t).mean() <= target:
                assert (positives >= t).mean() <= point.recall


def test_variant_comparison_and_disagreements(tmp_path: Path) -> None:
    labels = ("fake", "real")
    probs_fp32 = np.array([[0.9, 0.1], [0.4, 0.6], [0.55, 0.45], [0.2, 0.8]])
    probs_int8 = np.array([[0.85, 0.15], [0.52, 0.48], [0.5, 0.5], [0.21, 0.79]])
    scored = ScoredImages(paths=("a", "b", "c", "d"), true=np.array([0, 1, 0, 1]),
                          probs={"fp32": probs_fp32, "int8": probs_int8}, failures=())
    dataset = scan_labelled_folder(_tiny_folder(tmp_path), labels)
    ev = evaluate_scores(scored, dataset, labels, variant_files={"fp32": "m.onnx", "int8": "q.onnx"},
                         positive_label="fake", decision_threshold=None, default_variant="int8", bundle_dir=tmp_path)
    cmp = ev.comparisons["int8"]
    # image b flips to fake under int8; c ties at 0.5 and np.argmax picks the first label, fake
    assert (cmp.reference, cmp.images, cmp.agreeing) == ("fp32", 4, 3)
    dp = np.abs(probs_int8[:, 0] - probs_fp32[:, 0])
    assert cmp.max_abs_dp == dp.max() and cmp.mean_abs_dp == pytest.approx(dp.mean())
    assert cmp.worst_image == "b"
    assert [(d.path, d.true, d.labels, d.scores) for d in ev.disagreements] == [
        ("b", "real", {"fp32": "real", "int8": "fake"}, {"fp32": 0.4, "int8": 0.52})
    ]
    # a bundle threshold changes the decision the report describes, as in Detector
    with_threshold = evaluate_scores(scored, dataset, labels, variant_files={"fp32": "m", "int8": "q"},
                                     positive_label="fake", decision_threshold=0.5, default_variant="int8",
                                     bundle_dir=tmp_path)
    assert with_threshold.variants["fp32"].predicted.tolist() == [0, 1, 0, 1]
    assert with_threshold.variants["int8"].predicted.tolist() == [0, 0, 0, 1]


# -- the labelled folder --------------------------------------------------------------

def _tiny_folder(root: Path) -> Path:
    for label in ("fake", "real"):
        (root / "data" / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "data" / label / "x.png")
    return root / "data"


def _save_labelled(root: Path, groups: dict[str, list[Image.Image]]) -> Path:
    for label, images in groups.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            image.save(root / label / f"{label}-{i:02d}.jpg", quality=92)
    return root


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory, photo_paths: list[Path]) -> Path:
    """fake/: the shipped real photos (files as shipped, in a nested folder, plus crops); real/: synthetic images.

    The labels are arbitrary for a random-weight model; this way round the tiny
    model's ROC has more than one non-trivial point.
    """
    root = tmp_path_factory.mktemp("labelled")
    (root / "fake" / "originals").mkdir(parents=True)
    for path in photo_paths:
        shutil.copy(path, root / "fake" / "originals" / path.name)
    crops = [item.image for item in photos("heldout") if "#" in item.name]
    return _save_labelled(root, {"fake": crops, "real": [item.image for item in synthetic_images(24, seed=3)]})


def test_scan_matches_labels_case_insensitively(tmp_path: Path) -> None:
    for name in ("Fake", "REAL", ".ipynb_checkpoints"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "Fake" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "REAL" / "b.webp")
    (tmp_path / "REAL" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("loose file")
    dataset = scan_labelled_folder(tmp_path, ("fake", "real"))
    assert [(p.path.name, p.label) for p in dataset.images] == [("a.png", "fake"), ("b.webp", "real")]
    assert sorted(p.name for p in dataset.ignored) == ["README.md", "notes.txt"]


def test_folder_matching_no_label_is_a_clear_error(tmp_path: Path, binary_bundle: Path) -> None:
    for name in ("fake", "real", "deepfakes"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "a.png")
    with pytest.raises(DatasetError, match="'deepfakes' match no label.*'fake', 'real'"):
        scan_labelled_folder(tmp_path, ("fake", "real"))
    proc = _run("evaluate", binary_bundle, tmp_path, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "'deepfakes' match no label" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    (empty / "fake").mkdir(parents=True)
    with pytest.raises(DatasetError, match="hold no image files"):
        scan_labelled_folder(empty, ("fake", "real"))
    with pytest.raises(DatasetError, match="not a directory"):
        scan_labelled_folder(tmp_path / "missing", ("fake", "real"))


# -- end to end --------------------------------------------------------------------------

def _expected_scores(bundle: Path, variant: str, paths: list[str]) -> np.ndarray:
    """The Detector's scores, in batches of 8 like evaluate's default (fp32 results move ~1e-6 with batching)."""
    detector = Detector.load(bundle, variant)
    results = detector.predict(paths, batch_size=8)
    return np.array([[r.scores[label] for label in detector.labels] for r in results if not isinstance(r, Failure)])


def test_cli_report_matches_sklearn(binary_bundle: Path, labelled_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run("evaluate", binary_bundle, labelled_dir, "--out", out, "--target-fpr", "0.75")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    labels = report["bundle"]["labels"]
    images = report["images"]
    files = sorted(p for p in labelled_dir.rglob("*") if p.is_file())
    assert sorted(Path(r["path"]) for r in images) == files
    y_true = np.array([labels.index(r["true"]) for r in images])
    assert [r["true"] for r in images] == [Path(r["path"]).relative_to(labelled_dir).parts[0] for r in images]
    is_fake = y_true == labels.index("fake")
    assert report["data"]["images_per_label"] == {"fake": int(is_fake.sum()), "real": int((~is_fake).sum())}

    for variant in ("fp32", "int8"):
        section = report["variants"][variant]
        probs = np.array([[r["scores"][variant][label] for label in labels] for r in images])
        # the scores are the Detector's, image by image
        np.testing.assert_array_equal(probs, _expected_scores(binary_bundle, variant, [r["path"] for r in images]))
        y_pred = probs.argmax(axis=1)
        assert [labels.index(r["predicted"][variant]) for r in images] == y_pred.tolist()
        present = sorted(set(y_true) | set(y_pred))
        kwargs = {"labels": present, "target_names": [labels[i] for i in present], "zero_division": 0.0}
        text = sk_report(y_true, y_pred, digits=4, **kwargs)
        assert section["classification_report_text"] == text
        assert text in proc.stdout  # the terminal shows the model card's exact layout
        assert section["classification_report"] == sk_report(y_true, y_pred, output_dict=True, **kwargs)
        assert section["confusion_matrix"]["matrix"] == sk_confusion(y_true, y_pred, labels=range(len(labels))).tolist()
        scores = probs[:, labels.index("fake")]
        assert section["roc_auc"] == pytest.approx(roc_auc_score(is_fake, scores), abs=1e-12)
        fpr, tpr, thresholds = sk_roc_curve(is_fake, scores)
        assert section["roc_curve"] == {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": _nullable(thresholds)}
        point = section["operating_point"]
        expected = _sk_threshold(is_fake, scores, 0.75)
        assert expected is not None and (point["threshold"], point["fpr"], point["recall"]) == expected
        assert (scores[~is_fake] >= point["threshold"]).mean() == point["fpr"] <= 0.75
        shown = re.findall(r"threshold for FPR <= 75.00 %: P\(fake\) >= (\S+)", proc.stdout)
        assert float(shown[list(report["variants"]).index(variant)]) == pytest.approx(point["threshold"], rel=1e-5)

    fp32 = np.array([r["scores"]["fp32"]["fake"] for r in images])
    int8 = np.array([r["scores"]["int8"]["fake"] for r in images])
    cmp = report["comparisons"]["int8"]
    agree = [r["predicted"]["fp32"] == r["predicted"]["int8"] for r in images]
    assert cmp["agreeing"] == sum(agree) and cmp["label_agreement"] == sum(agree) / len(images)
    assert cmp["max_abs_dp"] == np.abs(int8 - fp32).max()
    assert cmp["mean_abs_dp"] == pytest.approx(np.abs(int8 - fp32).mean(), abs=1e-15)
    disagreeing = [r["path"] for r, a in zip(images, agree, strict=True) if not a]
    assert [d["path"] for d in report["disagreements"]] == disagreeing
    with Image.open(out / "roc.png") as png:
        assert png.format == "PNG" and png.size[0] > 600


def test_any_bundle_library_api(any_bundle: tuple[str, Path, Path], tmp_path: Path) -> None:
    """3+ labels: one folder per label; ROC is the positive label against the rest."""
    _, _, bundle = any_bundle
    labels = Detector.load(bundle, "fp32").labels
    pool = [item.image for item in photos("heldout")] + [item.image for item in synthetic_images(12, seed=9)]
    root = _save_labelled(tmp_path / "data", {label: pool[i :: len(labels)] for i, label in enumerate(labels)})
    ev = evaluate_bundle(bundle, root, variants=["int8", "fp32"], target_fpr=0.5, show_progress=False)
    assert list(ev.variants) == ["int8", "fp32"] and ev.reference == "fp32"
    y_true = ev.scored.true
    for variant, result in ev.variants.items():
        probs = ev.scored.probs[variant]
        np.testing.assert_array_equal(probs, _expected_scores(bundle, variant, list(ev.scored.paths)))
        y_pred = probs.argmax(axis=1)
        present = sorted(set(y_true) | set(y_pred))
        assert result.report.to_text() == sk_report(y_true, y_pred, labels=present, digits=4, zero_division=0.0,
                                                    target_names=[labels[i] for i in present])
        fake = y_true == labels.index("fake")
        assert result.auc == pytest.approx(roc_auc_score(fake, probs[:, labels.index("fake")]), abs=1e-12)


def test_write_threshold_changes_predict(binary_bundle: Path, labelled_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(binary_bundle, bundle)  # never edit the shared session bundle
    before_manifest = json.loads((bundle / "manifest.json").read_text())
    before = [json.loads(line) for line in _run("predict", bundle, labelled_dir, "-r").stdout.splitlines()]
    assert len(before) == sum(1 for p in labelled_dir.rglob("*") if p.is_file())
    assert all(r["label"] == max(r["scores"], key=r["scores"].get) for r in before)  # argmax

    target = 0.75
    proc = _run("evaluate", bundle, labelled_dir, "--out", tmp_path / "out", "--target-fpr", target,
                "--write-threshold", "--no-plot")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    threshold = manifest["decision"]["threshold"]

    # the reference: scikit-learn's ROC on the scores predict printed (the default variant)
    is_fake = np.array([Path(r["path"]).relative_to(labelled_dir).parts[0] == "fake" for r in before])
    scores = np.array([r["scores"]["fake"] for r in before])
    expected = _sk_threshold(is_fake, scores, target)
    assert expected is not None and threshold == expected[0]
    chosen = manifest["decision"]["chosen"]
    assert (chosen["achieved_fpr"], chosen["recall"]) == expected[1:]
    assert chosen["target_fpr"] == target and chosen["variant"] == manifest["default_variant"]
    assert chosen["images"] == len(before) and Path(chosen["data_dir"]) == labelled_dir.resolve()
    assert datetime.fromisoformat(chosen["chosen_at"]).tzinfo is not None
    assert {k: v for k, v in manifest.items() if k != "decision"} == {
        k: v for k, v in before_manifest.items() if k != "decision"}
    assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in binary_bundle.iterdir())  # no temp file
    assert (bundle / "manifest.json").stat().st_mode == (binary_bundle / "manifest.json").stat().st_mode

    after = [json.loads(line) for line in _run("predict", bundle, labelled_dir, "-r").stdout.splitlines()]
    assert [r["scores"] for r in after] == [r["scores"] for r in before]
    assert [r["label"] for r in after] == ["fake" if r["scores"]["fake"] >= threshold else "real" for r in after]
    assert [r["label"] for r in after] != [r["label"] for r in before]  # the threshold is not argmax here
    flagged = np.array([r["label"] == "fake" for r in after])
    assert flagged[~is_fake].mean() == chosen["achieved_fpr"] <= target
    assert flagged[is_fake].mean() == chosen["recall"]
    override_run = _run("predict", bundle, labelled_dir, "-r", "--threshold", "0")
    override = [json.loads(x) for x in override_run.stdout.splitlines()]
    assert {r["label"] for r in override} == {"fake"}  # --threshold still wins over the manifest


def test_threshold_not_found_writes_nothing(binary_bundle: Path, labelled_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(binary_bundle, bundle)
    manifest = (bundle / "manifest.json").read_bytes()
    # target 0: the top-scored images include a real one, so no threshold flags a fake without a false positive
    proc = _run("evaluate", bundle, labelled_dir, "--out", tmp_path / "out", "--target-fpr", "0",
                "--write-threshold", "--no-plot", "--variants", "int8")
    assert proc.returncode == 1
    assert "no threshold written" in proc.stderr and "none on this data" in proc.stdout
    assert (bundle / "manifest.json").read_bytes() == manifest
    with pytest.raises(ValueError, match="within"):
        write_threshold(bundle, 1.5, {})


def test_unreadable_image_is_counted_not_fatal(binary_bundle: Path, labelled_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(labelled_dir, data)
    first = sorted((data / "real").iterdir())[0]
    (data / "real" / "truncated.jpg").write_bytes(first.read_bytes()[:300])
    (data / "real" / "notes.txt").write_text("not an image, never attempted")
    code = (  # also proves the evaluation itself stays torch- and sklearn-free
        "import sys, json\n"
        "from deepfake_edge.cli import main\n"
        f"rc = main(['evaluate', {str(binary_bundle)!r}, {str(data)!r}, '--out', {str(tmp_path / 'out')!r}, "
        "'--no-plot', '--no-progress'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'optimum', 'onnx', 'sklearn') if m in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    status = json.loads(proc.stdout.splitlines()[-1])
    assert status == {"rc": 1, "heavy": []}, proc.stderr
    assert "unreadable images (1, not scored):" in proc.stdout and "truncated.jpg: ImageDecodeError" in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [Path(f["path"]).name for f in report["data"]["unreadable"]] == ["truncated.jpg"]
    assert report["data"]["unreadable"][0]["error"] == ImageDecodeError.__name__
    assert report["data"]["scored"] == report["data"]["images"] - 1 == len(report["images"])
    assert [Path(p).name for p in report["data"]["ignored_files"]] == ["notes.txt"]
    assert report["variants"]["fp32"]["classification_report"]["weighted avg"]["support"] == len(report["images"])


def test_without_matplotlib_the_png_is_skipped(binary_bundle: Path, labelled_dir: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # makes 'import matplotlib' fail, as without the extra
        "from deepfake_edge.cli import main\n"
        f"raise SystemExit(main(['evaluate', {str(binary_bundle)!r}, {str(labelled_dir)!r}, "
        f"'--out', {str(tmp_path)!r}, '--variants', 'int8', '--no-progress']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "roc.png skipped" in proc.stderr and "pip install 'deepfake-edge[evaluate]'" in proc.stderr
    assert (tmp_path / "report.json").is_file() and not (tmp_path / "roc.png").exists()


def test_help_and_bad_arguments(binary_bundle: Path, labelled_dir: Path) -> None:
    helped = _run("evaluate", "--help")
    assert helped.returncode == 0 and "--target-fpr" in helped.stdout and "--write-threshold" in helped.stdout
    bad = _run("evaluate", binary_bundle, labelled_dir, "--target-fpr", "2")
    assert bad.returncode == 2 and "expected a number within [0, 1]" in bad.stderr
    unknown = _run("evaluate", binary_bundle, labelled_dir, "--variants", "fp32,fp16")
    assert unknown.returncode == 4 and "no variant 'fp16'" in unknown.stderr and "Traceback" not in unknown.stderr
