"""Detectors of the family: label sets other than 'fake', three classes, and ViT.

Each tiny random checkpoint (tests/tiny_models.py FAMILY_SPECS) is exported with no label flag (the
rule is read from its label names), then predicted, scanned, watched and evaluated. The references
are transformers + torch (logits, probabilities), sklearn (ROC AUC) and the rule written out here
from its definition, never ``ScoreRule`` itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="family tests export checkpoints: they need the [export] extra (torch)")
pytest.importorskip("av", reason="family tests scan videos: they need the [video] extra (PyAV)")

import transformers
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake_edge import Detector
from deepfake_edge.evaluate import evaluate_bundle
from deepfake_edge.export.sample_images import heldout_images, synthetic_images
from deepfake_edge.video import FrameResult, Sampling, ScanOptions, VideoSummary, scan
from deepfake_edge.video.alerts import Alert
from deepfake_edge.video.watch import LiveOptions, LiveSummary, watch

from live_servers import HttpFileServer, make_h264
from tiny_models import FAMILY_SPECS, TinySpec, build_tiny_checkpoint

#: What the export must infer from each label set, as the manifest records it.
EXPECTED_DECISION: dict[str, dict[str, Any]] = {
    "fake-real": {"positive_label": "Fake"},
    "realism-deepfake": {"positive_label": "Deepfake"},
    "three-class": {"positive_label": None, "real_label": "Real", "score": "1 - P(Real)"},
    "vit": {"positive_label": "Fake"},
}


def rule_score(spec: str, labels: tuple[str, ...], probs: np.ndarray) -> np.ndarray:
    """The manipulation score written out from its definition, per kind."""
    decision = EXPECTED_DECISION[spec]
    if decision.get("real_label"):
        return 1.0 - probs[:, labels.index(decision["real_label"])]
    return probs[:, labels.index(decision["positive_label"])]


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepfake_edge.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module", params=sorted(FAMILY_SPECS))
def kind(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[TinySpec, Path, Path]:
    """(spec, checkpoint, bundle): exported with fp32 and an untuned int8 on 8 calibration images,
    validated on 12 held-out images (fidelity is not what these tests are about)."""
    from deepfake_edge.export import export_bundle

    spec = FAMILY_SPECS[request.param]
    root = tmp_path_factory.mktemp(spec.name)
    checkpoint = build_tiny_checkpoint(spec, root / "checkpoint")
    export_bundle(str(checkpoint), root / "bundle", variants=("fp32", "int8"), calibration_limit=8, tune=False,
                  validation_images=heldout_images(synthetic=2)[:12], log=lambda _m: None)
    return spec, checkpoint, root / "bundle"


def _torch(spec: TinySpec, checkpoint: Path, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """transformers + torch on ``images``: logits and float64 probabilities."""
    model_class = "ViTForImageClassification" if spec.arch == "vit" else "SiglipForImageClassification"
    processor_class = "ViTImageProcessor" if spec.arch == "vit" else "SiglipImageProcessor"
    model = getattr(transformers, model_class).from_pretrained(checkpoint).eval()
    processor = getattr(transformers, processor_class).from_pretrained(checkpoint)
    pixel_values = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    return logits.numpy(), torch.softmax(logits.double(), -1).numpy()


def test_the_manifest_records_the_inferred_rule(kind: tuple[TinySpec, Path, Path]) -> None:
    spec, _, bundle = kind
    decision = json.loads((bundle / "manifest.json").read_text())["decision"]
    expected = EXPECTED_DECISION[spec.name]
    assert {k: decision.get(k) for k in expected} == expected
    if expected.get("positive_label"):  # readable by runtimes that predate real_label: no new keys
        assert set(decision) == {"positive_label", "threshold", "chosen"}


def test_fp32_matches_torch_and_the_score_is_the_rule(kind: tuple[TinySpec, Path, Path]) -> None:
    spec, checkpoint, bundle = kind
    images = [item.image for item in heldout_images(synthetic=4)[:16]]
    logits, probs = _torch(spec, checkpoint, images)
    detector = Detector.load(bundle, "fp32")
    ours = detector.logits(detector.preprocess(images))
    assert float(np.abs(ours - logits).max()) <= 1e-4
    predictions = detector.predict(images)
    scores = np.array([p.score for p in predictions])  # type: ignore[union-attr]
    np.testing.assert_allclose(scores, rule_score(spec.name, spec.labels, probs), atol=1e-5, rtol=0)
    # every other variant, and the one "auto" picks, reports the same rule
    auto = Detector.load(bundle, "auto")
    assert auto.choice is not None and auto.variant_name in ("int8", "fp32")
    for p in [*Detector.load(bundle, "int8").predict(images), *auto.predict(images[:2])]:
        assert p.score == pytest.approx(float(rule_score(spec.name, spec.labels, np.array(  # type: ignore[union-attr]
            [[p.scores[label] for label in spec.labels]]))[0]), abs=1e-12)  # type: ignore[union-attr]


def test_predict_lines_carry_the_score(kind: tuple[TinySpec, Path, Path], tmp_path: Path) -> None:
    spec, checkpoint, bundle = kind
    image = synthetic_images(1, seed=5)[0].image
    image.save(tmp_path / "a.png")
    run = _cli("predict", bundle, tmp_path / "a.png", "--variant", "fp32")
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout)
    _, probs = _torch(spec, checkpoint, [image])
    assert line["score"] == pytest.approx(float(rule_score(spec.name, spec.labels, probs)[0]), abs=1e-5)
    assert set(line["scores"]) == set(spec.labels)


def _frame_scores(spec: TinySpec, frames: list[FrameResult]) -> np.ndarray:
    return rule_score(spec.name, spec.labels, np.array([[f.scores[label] for label in spec.labels] for f in frames]))


def test_scan_summary_and_segments_use_the_score(kind: tuple[TinySpec, Path, Path], tmp_path: Path) -> None:
    spec, _, bundle = kind
    clip = make_h264(tmp_path / "clip.mp4", seconds=3, fps=10)
    first = list(scan(Detector.load(bundle, "fp32"), str(clip), ScanOptions(Sampling(fps=4))))
    frames = [i for i in first if isinstance(i, FrameResult)]
    assert len(frames) == 12
    expected = _frame_scores(spec, frames)
    np.testing.assert_allclose([f.score for f in frames], expected, atol=1e-12, rtol=0)
    # a threshold between the frames' scores, so segments are neither empty nor everything
    threshold = float(np.median(expected))
    detector = Detector.load(bundle, "fp32", threshold=threshold)
    items = list(scan(detector, str(clip), ScanOptions(Sampling(fps=4))))
    summary = items[-1]
    assert isinstance(summary, VideoSummary)
    assert summary.score == pytest.approx(float(expected.mean()), abs=1e-12)
    high = [f.time for f, s in zip(frames, expected, strict=True) if s >= threshold]
    in_segments = [f.time for f in frames if any(s.start <= f.time <= s.end for s in summary.segments)]
    assert in_segments == high and 0 < len(high) < len(frames)
    # the verdict: a manipulated label iff the aggregate score reaches the threshold
    manipulated = EXPECTED_DECISION[spec.name].get("real_label") or EXPECTED_DECISION[spec.name]["positive_label"]
    is_flagged = summary.label != manipulated if EXPECTED_DECISION[spec.name].get("real_label") else (
        summary.label == manipulated)
    assert is_flagged == (summary.score >= threshold)


def test_live_alerts_use_the_score(kind: tuple[TinySpec, Path, Path], tmp_path: Path) -> None:
    spec, _, bundle = kind
    make_h264(tmp_path / "live.mp4", seconds=3, fps=10)
    server = HttpFileServer(tmp_path)
    try:
        probe = [i for i in watch(Detector.load(bundle, "fp32"), [server.url("live.mp4")],
                                  LiveOptions(sampling=Sampling(fps=4), alert=(1, 1)))
                 if isinstance(i, FrameResult)]
        scores = _frame_scores(spec, probe)
        threshold = float(np.median(scores))
        items = list(watch(Detector.load(bundle, "fp32", threshold=threshold), [server.url("live.mp4")],
                           LiveOptions(sampling=Sampling(fps=4), alert=(1, 1))))
    finally:
        server.close()
    frames = [i for i in items if isinstance(i, FrameResult)]
    # the same sampled frames (times are wall-clock offsets, so they differ between the two watches)
    assert [f.scores for f in frames] == [f.scores for f in probe] and len(frames) == 12
    summary = items[-1]
    assert isinstance(summary, LiveSummary)
    ends = [i for i in items if isinstance(i, Alert) and i.event == "end"]
    assert summary.alerts == len(ends) > 0
    # rule 1/1: every frame scoring >= the threshold is in an alert, and no other
    high = [f.time for f, s in zip(frames, scores, strict=True) if s >= threshold]
    alerted = [f.time for f in frames if any(a.start <= f.time <= a.end for a in ends)]  # type: ignore[operator]
    assert alerted == high and 0 < len(high) < len(frames)
    for alert in ends:
        members = [s for f, s in zip(frames, scores, strict=True) if alert.start <= f.time <= alert.end]  # type: ignore[operator]
        assert alert.peak_score == pytest.approx(max(members), abs=1e-12)


def test_evaluate_roc_and_threshold_use_the_score(kind: tuple[TinySpec, Path, Path], tmp_path: Path) -> None:
    spec, checkpoint, exported = kind
    bundle = Path(shutil.copytree(exported, tmp_path / "bundle"))  # --write-threshold edits its manifest
    images = [item.image for item in synthetic_images(18, seed=11)]
    data = tmp_path / "data"
    truth = []
    for i, image in enumerate(images):
        label = spec.labels[i % len(spec.labels)]
        (data / label).mkdir(parents=True, exist_ok=True)
        image.save(data / label / f"{i:02d}.png")
        truth.append(label)
    ev = evaluate_bundle(bundle, data, variants=["fp32"], show_progress=False)
    order = [spec.labels.index(label) for label in truth]
    _, probs = _torch(spec, checkpoint, images)
    # the evaluation's images are listed by folder; put torch's answers in the same order
    by_path = {str(data / label / f"{i:02d}.png"): i for i, label in enumerate(truth)}
    index = [by_path[str(p)] for p in ev.scored.paths]
    reals = EXPECTED_DECISION[spec.name].get("real_label")
    positive = EXPECTED_DECISION[spec.name]["positive_label"]
    is_manipulated = np.array([(truth[i] != reals) if reals else (truth[i] == positive) for i in index])
    torch_scores = rule_score(spec.name, spec.labels, probs)[index]
    fp32 = ev.variants["fp32"]
    assert fp32.auc == pytest.approx(roc_auc_score(is_manipulated, torch_scores), abs=1e-9)
    assert sorted(order) == sorted(spec.labels.index(label) for label in truth)
    # --write-threshold stores a threshold on the same score; predict then decides with it
    run = _cli("evaluate", bundle, data, "--variants", "fp32", "--out", tmp_path / "report", "--write-threshold",
               "--no-plot", "--no-progress", "--target-fpr", "0.5")
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["bundle"]["score"] == (f"1 - P({reals})" if reals else f"P({positive})")
    threshold = json.loads((bundle / "manifest.json").read_text())["decision"]["threshold"]
    assert threshold == report["variants"]["fp32"]["operating_point"]["threshold"]
    decided = Detector.load(bundle, "fp32").predict(images)
    for p, s in zip(decided, rule_score(spec.name, spec.labels, probs), strict=True):
        flagged = (p.label != reals) if reals else (p.label == positive)  # type: ignore[union-attr]
        if abs(s - threshold) > 1e-6:
            assert flagged == (s >= threshold)
