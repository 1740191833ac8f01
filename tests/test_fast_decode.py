"""``fast_decode``: large JPEGs decoded at a reduced DCT scale, everything else exactly as before.

The exact path is compared with transformers' ``SiglipImageProcessor`` on the full image (replayed
from the fixture directory on a base install). The fast path is held to a bound against it: on the
tiny bundle (45 px input) the shipped photos, upscaled to 12 MP JPEGs, move by at most one 8-bit
grey level, except along the edge of a JPEG whose size does not divide by 8 (its last, partial
block is decoded from the encoder's padding too): four there, and four is the bound. The README
("Fast JPEG decoding") has the figures at 224 and 512 px.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge import Detector
from deepfake_edge.cli import build_parser
from deepfake_edge.cli.common import load_detector
from deepfake_edge.errors import ImageDecodeError, ImageTooLargeError
from deepfake_edge.images import load_rgb, load_rgb_scaled
from deepfake_edge.preprocess import FAST_DECODE_FACTOR, resize, to_model_input
from deepfake_edge.results import Failure

from image_factory import mode_samples, phone_jpeg
from references import References
from tiny_models import TINY_SPECS

SETTINGS = TINY_SPECS["binary"].processor_settings()
GREY_LEVELS = 4  # the bound: fast-decoded tensors stay within this many 8-bit levels of the exact ones
ORIENTATION = 0x0112  # the EXIF tag


@pytest.fixture(scope="module")
def exact(binary_bundle: Path) -> Detector:
    return Detector.load(binary_bundle, "fp32")


@pytest.fixture(scope="module")
def fast(binary_bundle: Path) -> Detector:
    return Detector.load(binary_bundle, "fp32", fast_decode=True)


@pytest.fixture(scope="module")
def photo(photo_paths: list[Path]) -> Path:
    return photo_paths[0]


@pytest.fixture(scope="module")
def big_jpeg(photo: Path) -> bytes:
    return phone_jpeg(photo)


def _reference(reference: References, data: bytes) -> np.ndarray:
    """transformers on the fully decoded image: the exact path's answer."""
    with Image.open(io.BytesIO(data)) as image:
        return reference.pixel_values(SETTINGS, image.convert("RGB"))


def _tolerance(detector: Detector) -> float:
    cfg = detector.bundle.preprocess
    return GREY_LEVELS * cfg.rescale_factor / min(cfg.image_std)


def test_default_is_exact_on_a_large_jpeg(exact: Detector, big_jpeg: bytes, reference: References) -> None:
    assert exact.draft_size is None
    np.testing.assert_array_equal(exact.decode(big_jpeg), _reference(reference, big_jpeg))


def test_fast_decode_drafts_a_large_jpeg_and_stays_within_the_bound(
    fast: Detector, big_jpeg: bytes, reference: References
) -> None:
    cfg = fast.bundle.preprocess
    assert fast.draft_size == (FAST_DECODE_FACTOR * cfg.width, FAST_DECODE_FACTOR * cfg.height)
    reduced, box = load_rgb_scaled(big_jpeg, draft=fast.draft_size)
    # 4000x3000 at 1/8 is still >= 2 x 45 in both dimensions; at 1/16 it would not be
    assert reduced.size == (500, 375) and box == (0, 0, 500.0, 375.0)
    tensor = fast.decode(big_jpeg)
    # what the detector fed the model is the reduced image resized, nothing else
    np.testing.assert_array_equal(tensor, to_model_input(resize(reduced, cfg, box), cfg))
    expected = _reference(reference, big_jpeg)
    assert not np.array_equal(tensor, expected)  # it really took the other path
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=_tolerance(fast))


def test_the_draft_box_covers_a_partial_last_block(fast: Detector, photo: Path, reference: References) -> None:
    data = phone_jpeg(photo, size=(4001, 2999))  # neither side divides by 8
    reduced, box = load_rgb_scaled(data, draft=fast.draft_size)
    assert reduced.size == (501, 375) and box == (0, 0, 4001 / 8, 2999 / 8)
    np.testing.assert_allclose(fast.decode(data), _reference(reference, data), rtol=0, atol=_tolerance(fast))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_other_jpeg_modes_are_converted_as_before(fast: Detector, photo: Path, mode: str,
                                                  reference: References) -> None:
    data = phone_jpeg(photo, mode=mode)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == mode
    reduced, box = load_rgb_scaled(data, draft=fast.draft_size)
    assert reduced.mode == "RGB" and box is not None
    np.testing.assert_allclose(fast.decode(data), _reference(reference, data), rtol=0, atol=_tolerance(fast))


def test_other_formats_and_small_jpegs_are_exact(fast: Detector, photo: Path, reference: References) -> None:
    samples = mode_samples(photo)  # 157x103 in every mode, JPEG included: under 2 x (90, 90)
    large = Image.open(io.BytesIO(phone_jpeg(photo, size=(1200, 900))))
    png = io.BytesIO()
    large.save(png, "PNG")
    samples["large.png"] = png.getvalue()
    just_small = io.BytesIO()
    large.resize((179, 900)).save(just_small, "JPEG", quality=90)  # one pixel short of two draft widths
    samples["179x900.jpg"] = just_small.getvalue()
    for name, data in samples.items():
        assert load_rgb_scaled(data, draft=fast.draft_size)[1] is None, name
        np.testing.assert_array_equal(fast.decode(data), _reference(reference, data), err_msg=name)


def test_pil_images_and_arrays_are_never_drafted(fast: Detector, big_jpeg: bytes, reference: References) -> None:
    expected = _reference(reference, big_jpeg)
    with Image.open(io.BytesIO(big_jpeg)) as image:  # the caller's object: not ours to reconfigure
        np.testing.assert_array_equal(fast.decode(image), expected)
        assert image.size == (4000, 3000)
        np.testing.assert_array_equal(fast.decode(np.asarray(image)), expected)


def test_exif_orientation_is_handled_as_on_the_exact_path(
    exact: Detector, fast: Detector, photo: Path, reference: References
) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 CW to display"; transformers and the exact path ignore it
    data = phone_jpeg(photo, exif=exif)
    assert load_rgb(data).size == (4000, 3000)
    assert load_rgb_scaled(data, draft=fast.draft_size)[0].size == (500, 375)  # not turned either
    expected = _reference(reference, data)
    np.testing.assert_array_equal(exact.decode(data), expected)
    np.testing.assert_allclose(fast.decode(data), expected, rtol=0, atol=_tolerance(fast))


def test_a_truncated_jpeg_fails_cleanly(fast: Detector, big_jpeg: bytes) -> None:
    truncated = big_jpeg[: len(big_jpeg) // 3]
    with pytest.raises(ImageDecodeError, match=r"^<bytes #0>: corrupt or truncated"):
        fast.decode(truncated)
    results = fast.predict([truncated, big_jpeg], on_error="return")
    assert isinstance(results[0], Failure) and not isinstance(results[1], Failure)


def test_the_pixel_limit_applies_to_the_declared_size(binary_bundle: Path, big_jpeg: bytes) -> None:
    # 500x375 after drafting would pass a 1 Mpx limit; the file declares 12 Mpx
    limited = Detector.load(binary_bundle, "fp32", fast_decode=True, max_pixels=1_000_000)
    with pytest.raises(ImageTooLargeError, match="12,000,000 pixels, over the limit of 1,000,000"):
        limited.decode(big_jpeg)


@pytest.mark.parametrize("command", ["predict", "serve", "scan", "demo", "batch", "evaluate"])
def test_every_command_that_loads_a_bundle_offers_fast_decode(command: str) -> None:
    args = build_parser().parse_args([command, "BUNDLE", *(["x"] * (command in ("predict", "scan", "batch",
                                                                                   "evaluate"))),
                                      *(["--out", "o"] if command == "batch" else []), "--fast-decode"])
    assert args.fast_decode is True


def test_load_detector_passes_fast_decode_on(binary_bundle: Path) -> None:
    args = build_parser().parse_args(["predict", str(binary_bundle), "x.jpg", "--variant", "fp32", "--fast-decode"])
    assert load_detector(args).draft_size is not None
    args = build_parser().parse_args(["predict", str(binary_bundle), "x.jpg", "--variant", "fp32"])
    assert load_detector(args).draft_size is None


def test_predict_with_fast_decode_end_to_end(binary_bundle: Path, big_jpeg: bytes, tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    path.write_bytes(big_jpeg)
    proc = subprocess.run([sys.executable, "-m", "deepfake_edge.cli", "predict", str(binary_bundle), str(path),
                           "--variant", "fp32", "--fast-decode", "--no-progress"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"label"' in proc.stdout and str(path) in proc.stdout
