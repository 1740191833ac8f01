"""The manipulation-score rule in the manifest: both forms, old bundles, and the one label check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepfake_edge import Detector
from deepfake_edge.bundle import Bundle
from deepfake_edge.decision import ScoreRule
from deepfake_edge.errors import BundleMismatchError, UnsupportedBundleError
from deepfake_edge.evaluate import write_threshold
from deepfake_edge.manifest import Manifest

from image_factory import mode_samples


def _edited(bundle: Path, tmp_path: Path, decision: dict[str, object]) -> Path:
    out = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["decision"] = decision
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_the_manifest_keeps_old_runtimes_reading_positive_label_bundles(binary_bundle: Path) -> None:
    data = json.loads((binary_bundle / "manifest.json").read_text())
    manifest = Manifest.from_dict(data)
    assert set(manifest.to_dict()["decision"]) == {"positive_label", "threshold", "chosen"}
    real = Manifest.from_dict({**data, "decision": {"real_label": "real"}})  # positive_label absent: none
    assert (real.decision.positive_label, real.decision.real_label) == (None, "real")
    assert Manifest.from_dict(real.to_dict()) == real
    with pytest.raises(UnsupportedBundleError, match="both positive_label and real_label"):
        Manifest.from_dict({**data, "decision": {"positive_label": "fake", "real_label": "real"}})
    with pytest.raises(UnsupportedBundleError, match="decision.real_label must be a string"):
        Manifest.from_dict({**data, "decision": {"real_label": 3}})


def test_an_old_bundle_predicts_as_before_plus_the_score(binary_bundle: Path, photos: list[tuple[str, bytes]]) -> None:
    detector = Detector.load(binary_bundle, "fp32")
    for prediction in detector.predict([data for _, data in photos[:4]]):
        line = prediction.to_dict()  # type: ignore[union-attr]
        assert set(line) == {"path", "label", "scores", "score"}
        assert line["score"] == line["scores"]["fake"]  # type: ignore[index]
        assert line["label"] == max(line["scores"], key=line["scores"].get)  # type: ignore[arg-type,union-attr]


def test_a_bundle_without_a_rule_has_no_score(binary_bundle: Path, tmp_path: Path,
                                              photos: list[tuple[str, bytes]]) -> None:
    bundle = _edited(binary_bundle, tmp_path, {"positive_label": None, "threshold": None})
    assert Bundle.open(bundle).rule is None
    prediction = Detector.load(bundle, "fp32").predict_one(photos[0][1])
    assert prediction.score is None and "score" not in prediction.to_dict()
    with pytest.raises(UnsupportedBundleError, match="re-export it with --positive-label or --real-label"):
        Bundle.open(bundle).require_rule("a video verdict")
    with pytest.raises(UnsupportedBundleError, match="a decision threshold needs"):
        write_threshold(bundle, 0.5, {"how": "test"})


def test_a_real_label_rule_scores_one_minus_p_real(binary_bundle: Path, tmp_path: Path,
                                                   photos: list[tuple[str, bytes]]) -> None:
    images = [data for _, data in photos[:4]]
    bundle = _edited(binary_bundle, tmp_path, {"positive_label": None, "real_label": "real", "score": "1 - P(real)"})
    for p in Detector.load(bundle, "fp32").predict(images):
        assert p.score == pytest.approx(1.0 - p.scores["real"], abs=1e-12)  # type: ignore[union-attr]
    # a threshold is written on the same score, and decides with it
    write_threshold(bundle, 0.4, {"how": "test"})
    assert json.loads((bundle / "manifest.json").read_text())["decision"]["real_label"] == "real"
    for p in Detector.load(bundle, "fp32").predict(images):
        assert p.label == ("fake" if 1.0 - p.scores["real"] >= 0.4 else "real")  # type: ignore[union-attr]
    missing = _edited(binary_bundle, tmp_path / "x", {"positive_label": None, "real_label": "authentic"})
    with pytest.raises(BundleMismatchError, match="label 'authentic', which is not among the model's labels"):
        Bundle.open(missing)


def test_three_label_decisions_follow_the_score() -> None:
    labels = ("Artificial", "Deepfake", "Real")
    rule = ScoreRule(labels, real_label="Real")
    probs = np.array([[0.30, 0.25, 0.45],   # score 0.55
                      [0.05, 0.15, 0.80],   # score 0.20
                      [0.10, 0.50, 0.40]])  # score 0.60
    np.testing.assert_allclose(rule.scores(probs), [0.55, 0.20, 0.60], atol=1e-15)
    assert rule.decide(probs, None).tolist() == [2, 2, 1]           # argmax
    assert rule.decide(probs, 0.5).tolist() == [0, 2, 1]            # manipulated: the likelier fake label
    assert rule.decide(probs, 0.58).tolist() == [2, 2, 1]
    assert rule.text == "1 - P(Real)"
    assert ScoreRule(labels, positive_label="Deepfake").decide(probs, 0.2).tolist() == [1, 2, 1]
    with pytest.raises(ValueError, match="exactly one"):
        ScoreRule(labels, positive_label="Deepfake", real_label="Real")


def test_samples_of_every_mode_get_a_score(binary_bundle: Path, photo_paths: list[Path]) -> None:
    detector = Detector.load(binary_bundle, "fp32")
    for prediction in detector.predict(list(mode_samples(photo_paths[0]).values())):
        assert prediction.score == prediction.scores["fake"]  # type: ignore[union-attr]
