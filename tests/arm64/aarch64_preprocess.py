"""Preprocessing on aarch64 is bit-identical to transformers' ``SiglipImageProcessor`` run on x86.

PIL's resampling is integer fixed-point and the rescale/normalize steps are single IEEE
operations, so nothing may differ between CPUs: the comparison is exact, not approximate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepfake_edge import Detector, PreprocessConfig
from deepfake_edge.images import load_rgb
from deepfake_edge.preprocess import preprocess

BUNDLES = ("binary", "ternary")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_detector_preprocess_matches_x86_transformers(
    bundle: str, reference_dir: Path, reference: dict[str, Any], expected_pixels: dict[str, np.ndarray]
) -> None:
    """Every image file through the public path, with each bundle's own preprocessor config."""
    spec = reference["bundles"][bundle]
    detector = Detector.load(reference_dir / spec["dir"], "fp32")
    for image in spec["images"]:
        ours = detector.preprocess(reference_dir / "images" / image)[0]
        np.testing.assert_array_equal(ours, expected_pixels[f"bundle/{bundle}/{image}"], err_msg=f"{bundle}/{image}")


def test_every_processor_setting_matches_x86_transformers(
    reference_dir: Path, reference: dict[str, Any], expected_pixels: dict[str, np.ndarray]
) -> None:
    """Non-square sizes, no rescale, no normalize, no resize, Lanczos, scalar mean/std, a 12 MP JPEG."""
    checked = 0
    for setting, spec in reference["settings"].items():
        config = PreprocessConfig.from_dict(spec["config"])
        for image in spec["images"]:
            ours = preprocess(load_rgb(reference_dir / "images" / image), config)
            assert ours.dtype == np.float32
            expected = expected_pixels[f"setting/{setting}/{image}"]
            np.testing.assert_array_equal(ours, expected, err_msg=f"{setting}/{image}")
            checked += 1
    assert checked >= len(reference["settings"]) * 2  # the reference really holds the cases
