"""Detector behaviour: scores vs torch, batch invariance, error reporting, thresholds.

Sharing one Detector between threads is tested in test_concurrency.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge import (
    BatchError,
    Detector,
    Failure,
    ImageDecodeError,
    ImageReadError,
    Prediction,
    UnsupportedInputError,
)

from references import References
from tiny_models import TINY_SPECS


@pytest.fixture(scope="module")
def images(evaluation_images: list[Image.Image]) -> list[Image.Image]:
    return evaluation_images


def test_scores_are_torch_softmax(any_bundle: tuple[str, Path, Path], images: list[Image.Image],
                                  reference: References) -> None:
    name, _, bundle = any_bundle
    spec = TINY_SPECS[name]
    pixel_values = np.stack([reference.pixel_values(spec.processor_settings(), image) for image in images])
    expected = reference.probabilities(name, pixel_values)
    detector = Detector.load(bundle, "fp32")
    results = detector.predict(images, batch_size=3)
    labels = list(spec.labels)
    assert list(detector.labels) == labels
    for result, row in zip(results, expected, strict=True):
        assert isinstance(result, Prediction)
        assert list(result.scores) == labels
        assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-9)
        assert np.array([result.scores[label] for label in labels]) == pytest.approx(row, abs=1e-5)
        assert result.label == labels[int(row.argmax())]


@pytest.mark.parametrize("variant", ["fp32", "int8", "int8-ort", "int8-static"])
def test_batch_invariance(variants_bundle: Path, images: list[Image.Image], variant: str) -> None:
    """An image's scores must not depend on the other images in its batch.

    Variants with a run-time activation range over the whole batch (int8-ort)
    are fed one image at a time, so they must match exactly; the others match
    up to float rounding of batched kernels.
    """
    detector = Detector.load(variants_bundle, variant)
    per_image = not detector.variant.batch_invariant
    assert per_image == (variant == "int8-ort")
    alone = [detector.predict_one(image).scores for image in images]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    for batch_size in (2, 5, len(images)):
        shuffled = detector.predict([images[i] for i in order], batch_size=batch_size)
        for position, index in enumerate(order):
            got = shuffled[position]
            assert isinstance(got, Prediction)
            for label, p in alone[index].items():
                if per_image:
                    assert got.scores[label] == p, "per-tensor dynamic int8 must run per image"
                else:
                    assert got.scores[label] == pytest.approx(p, abs=1e-6)


def test_bad_input_does_not_lose_the_batch(binary_bundle: Path, images: list[Image.Image], tmp_path: Path) -> None:
    detector = Detector.load(binary_bundle)
    truncated = io.BytesIO()
    images[0].save(truncated, "JPEG")
    inputs: list[object] = [images[0], b"not an image", images[1], truncated.getvalue()[:300], tmp_path / "missing.png",
                            12345, images[2]]
    with pytest.raises(BatchError) as info:
        detector.predict(inputs, batch_size=2)  # type: ignore[arg-type]
    results = info.value.results
    assert len(results) == len(inputs)
    kinds = [type(r).__name__ if isinstance(r, Prediction) else type(r.error).__name__ for r in results]
    assert kinds == ["Prediction", "ImageDecodeError", "Prediction", "ImageDecodeError", "ImageReadError",
                     "UnsupportedInputError", "Prediction"]
    assert len(info.value.failures) == 4
    returned = detector.predict(inputs, batch_size=2, on_error="return")  # type: ignore[arg-type]
    for got, expected in zip(returned, results, strict=True):
        assert type(got) is type(expected)
        if isinstance(got, Prediction):
            assert got.scores == expected.scores  # type: ignore[union-attr]
    missing = returned[4]
    assert isinstance(missing, Failure) and str(tmp_path / "missing.png") in str(missing.error)


def test_predict_one_raises_the_named_error(binary_bundle: Path) -> None:
    detector = Detector.load(binary_bundle)
    with pytest.raises(ImageDecodeError, match=r"<bytes #0>: not a recognised image format"):
        detector.predict_one(b"GIF89a but not really")
    with pytest.raises(ImageReadError, match="nope.jpg"):
        detector.predict_one("nope.jpg")
    with pytest.raises(UnsupportedInputError, match="float32"):
        detector.predict_one(np.zeros((4, 4, 3), np.float32))
    assert isinstance(UnsupportedInputError("x", "y"), TypeError)  # refines the built-in


def test_threshold_moves_the_decision(binary_bundle: Path, images: list[Image.Image]) -> None:
    base = Detector.load(binary_bundle, "fp32").predict(images)
    p_fake = np.array([r.scores["fake"] for r in base])  # type: ignore[union-attr]
    t = float(np.median(p_fake))
    thresholded = Detector.load(binary_bundle, "fp32", threshold=t).predict(images)
    for result, p in zip(thresholded, p_fake, strict=True):
        assert result.label == ("fake" if p >= t else "real")  # type: ignore[union-attr]


def test_empty_and_generator_inputs(binary_bundle: Path, images: list[Image.Image]) -> None:
    detector = Detector.load(binary_bundle)
    assert detector.predict([]) == []
    assert detector.preprocess([]).shape[0] == 0
    assert len(detector.predict(image for image in images[:3])) == 3
    assert len(detector.predict(images[0])) == 1  # a single image is accepted too
