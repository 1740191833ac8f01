"""Preprocessing must be bit-identical to transformers' SiglipImageProcessor and ViTImageProcessor.

The reference is what the model card's code does: ``processor(image.convert("RGB"))``
(computed by transformers, or replayed from the fixture directory on a base install).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deepfake_edge import Detector, PreprocessConfig
from deepfake_edge.images import load_rgb
from deepfake_edge.preprocess import preprocess

from image_factory import large_jpeg, mode_samples
from references import References
from tiny_models import TINY_SPECS

PROCESSOR_SETTINGS = {
    "siglip-512-default": {"size": {"height": 512, "width": 512}},
    "odd-imagenet-bilinear": {
        "size": {"height": 45, "width": 45}, "resample": 2,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    },
    "non-square-no-normalize": {"size": {"height": 37, "width": 61}, "do_normalize": False},
    "no-rescale-lanczos": {"size": {"height": 64, "width": 48}, "do_rescale": False, "resample": 1,
                           "image_mean": [120.0, 110.0, 100.0], "image_std": [60.0, 50.0, 40.0]},
    "no-resize": {"do_resize": False},
    "scalar-mean-std": {"size": {"height": 30, "width": 30}, "image_mean": 0.4, "image_std": 0.3},
    # ViTImageProcessor: its own defaults (bilinear), and explicit settings
    "vit-defaults": {"image_processor_type": "ViTImageProcessor", "size": {"height": 40, "width": 40}},
    "vit-bicubic-imagenet-int-size": {
        "image_processor_type": "ViTImageProcessor", "size": 37, "resample": 3,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    },
}


def _reference(reference: References, settings: dict[str, Any], image: Image.Image) -> np.ndarray:
    with warnings.catch_warnings():
        # PIL warns when converting a palette image with transparency directly;
        # that is exactly the seed's behaviour we compare against.
        warnings.simplefilter("ignore", UserWarning)
        rgb = image.convert("RGB")
    # channels_last is what transformers infers for every RGB image except
    # degenerate ones (1x1, 3xN) where its guess is ambiguous; fixing it keeps
    # the reference meaningful for the tiny-image case.
    return reference.pixel_values(settings, rgb)


def _config(settings: dict[str, Any]) -> PreprocessConfig:
    """Our config for these settings; absent keys take our defaults, which must be transformers' own."""
    return PreprocessConfig.from_dict(settings)


@pytest.fixture(scope="module")
def samples(photo_paths: list[Path]) -> dict[str, bytes]:
    return mode_samples(photo_paths[0])


@pytest.mark.parametrize("setting", sorted(PROCESSOR_SETTINGS))
def test_bit_exact_every_mode(setting: str, samples: dict[str, bytes], reference: References) -> None:
    settings = PROCESSOR_SETTINGS[setting]
    config = _config(settings)
    for name, data in samples.items():
        if setting == "no-resize" and name != "RGB.png":
            continue  # without resize, shapes differ per image; one case covers the code path
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            expected = _reference(reference, settings, image)
        ours = preprocess(load_rgb(data), config)
        assert ours.dtype == np.float32
        assert ours.shape == expected.shape, name
        np.testing.assert_array_equal(ours, expected, err_msg=f"{setting}/{name}")


def test_modes_really_are_the_modes_we_claim(samples: dict[str, bytes]) -> None:
    expected = {"RGB.png": "RGB", "L.png": "L", "LA.png": "LA", "P-transparency.png": "P", "RGBA.png": "RGBA",
                "CMYK.jpg": "CMYK", "I16.png": "I;16", "1.png": "1", "P.gif": "P"}
    for name, mode in expected.items():
        with Image.open(io.BytesIO(samples[name])) as image:
            assert image.mode == mode, name
    with Image.open(io.BytesIO(samples["P-transparency.png"])) as image:
        assert "transparency" in image.info


def test_bit_exact_on_12_megapixel_jpeg(reference: References) -> None:
    settings = PROCESSOR_SETTINGS["siglip-512-default"]
    data = large_jpeg()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (4000, 3000)
        expected = _reference(reference, settings, image)
    np.testing.assert_array_equal(preprocess(load_rgb(data), _config(settings)), expected)


def test_every_input_type_gives_the_same_tensor(binary_bundle: Path, samples: dict[str, bytes], tmp_path: Path,
                                                reference: References) -> None:
    detector = Detector.load(binary_bundle, "fp32")
    data = samples["RGB.jpg"]
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        array = np.asarray(image)
        expected = _reference(reference, TINY_SPECS["binary"].processor_settings(), image)
        inputs = [str(path), path, data, bytearray(data), io.BytesIO(data), image, array]
        batch = detector.preprocess(inputs)
    assert batch.shape == (len(inputs), *expected.shape)
    for i in range(len(inputs)):
        np.testing.assert_array_equal(batch[i], expected, err_msg=f"input #{i} ({type(inputs[i]).__name__})")


def test_grayscale_and_rgba_arrays_match_pil_conversion(reference: References) -> None:
    settings = {"size": {"height": 20, "width": 20}}
    config = _config(settings)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    rgba = rng.integers(0, 256, (17, 23, 4), dtype=np.uint8)
    for array in (gray, rgba):
        expected = _reference(reference, settings, Image.fromarray(array))
        np.testing.assert_array_equal(preprocess(load_rgb(array), config), expected)


def test_bundle_config_is_read_not_assumed(any_bundle: tuple[str, Path, Path]) -> None:
    """The bundle carries the checkpoint's own settings (odd sizes, ImageNet mean/std, bilinear), not defaults."""
    name, _, bundle = any_bundle
    spec = TINY_SPECS[name]
    config = PreprocessConfig.from_file(bundle / "preprocessor_config.json")
    assert (config.height, config.width) == (spec.image_size, spec.image_size)
    assert config.image_mean == pytest.approx(spec.mean)
    assert config.image_std == pytest.approx(spec.std)
    assert config.resample == spec.resample
