"""Fuzzing the decode + preprocessing path: only documented errors may escape.

Hypothesis feeds arbitrary bytes, bytes behind real format signatures, mutated
real image files, arrays of any dtype/shape, PIL images of every mode and size,
and mixed batches. Whatever comes in, the result is an RGB image / a finite
float32 tensor / a ``Prediction``, or one of the ``ImageError`` subclasses
documented for that kind of input. The budget is fixed (``max_examples``,
derandomized, no example database) so the run is bounded and reproducible.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis ([test] extra)")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, features

from deepfake_edge import (
    Detector,
    Failure,
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    Prediction,
    PreprocessConfig,
    UnsupportedInputError,
)
from deepfake_edge.images import load_rgb
from deepfake_edge.preprocess import preprocess

# A small limit keeps every example cheap: an accidental valid header may not
# make a fuzz case decode 100 Mpx. The limit path itself is the same code.
MAX_PIXELS = 2_000_000
CONFIG = PreprocessConfig(height=45, width=45, image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225))
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# What each kind of input may raise (errors.py documents the tree).
BYTES_ERRORS = (ImageDecodeError, ImageTooLargeError)
ARRAY_ERRORS = (ImageDecodeError, UnsupportedInputError)
PIL_ERRORS = (ImageDecodeError, ImageTooLargeError)


def _decode_and_preprocess(source: object, allowed: tuple[type[ImageError], ...]) -> None:
    """The invariant: a finite model-ready tensor, or a documented error naming the input."""
    try:
        image = load_rgb(source, max_pixels=MAX_PIXELS)  # type: ignore[arg-type]
    except allowed as exc:
        assert exc.source and str(exc).startswith(exc.source + ": ") and exc.reason
        return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    tensor = preprocess(image, CONFIG)
    assert tensor.shape == (3, CONFIG.height, CONFIG.width) and tensor.dtype == np.float32
    assert np.isfinite(tensor).all()


# -- seeds: a real photo encoded in every format Pillow can write here ------------------------
def _seed_images() -> dict[str, bytes]:
    from deepfake_edge.export.sample_images import photo_paths

    paths = photo_paths("heldout")
    if paths:
        with Image.open(paths[0]) as im:
            rgb = im.convert("RGB").resize((48, 36), Image.Resampling.BILINEAR)
    else:  # still fuzz real encoders when no shipped photo is installed
        rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (36, 48, 3), dtype=np.uint8))
    writers: dict[str, tuple[Image.Image, str, dict[str, object]]] = {
        "png": (rgb, "PNG", {}),
        "png-palette-alpha": (rgb.quantize(16), "PNG", {"transparency": 0}),
        "png-interlaced-gray": (rgb.convert("L"), "PNG", {"optimize": True}),
        "jpeg": (rgb, "JPEG", {"quality": 80}),
        "jpeg-progressive": (rgb, "JPEG", {"quality": 60, "progressive": True}),
        "jpeg-cmyk": (rgb.convert("CMYK"), "JPEG", {}),
        "gif": (rgb.quantize(32), "GIF", {}),
        "bmp": (rgb, "BMP", {}),
        "tiff-deflate": (rgb, "TIFF", {"compression": "tiff_deflate"}),
        "tiff-lzw": (rgb, "TIFF", {"compression": "tiff_lzw"}),
        "ico": (rgb, "ICO", {"sizes": [(32, 32)]}),
        "tga-rle": (rgb, "TGA", {"compression": "tga_rle"}),
        "ppm": (rgb, "PPM", {}),
        "pcx": (rgb, "PCX", {}),
        "sgi": (rgb, "SGI", {}),
        "im": (rgb, "IM", {}),
        "dds": (rgb.convert("RGBA"), "DDS", {}),
        "qoi": (rgb, "QOI", {}),
    }
    if features.check("webp"):
        writers["webp"] = (rgb, "WEBP", {"quality": 70})
        writers["webp-lossless"] = (rgb.convert("RGBA"), "WEBP", {"lossless": True})
    if features.check("jpg_2000"):
        writers["jpeg2000"] = (rgb, "JPEG2000", {})
    seeds: dict[str, bytes] = {}
    for name, (image, fmt, kwargs) in writers.items():
        buf = io.BytesIO()
        image.save(buf, fmt, **kwargs)
        seeds[name] = buf.getvalue()
    return seeds


SEEDS = _seed_images()
# Leading bytes that route data to a specific Pillow plugin, so random tails
# exercise the decoders' header parsing, not just format identification.
SIGNATURES = [
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBP", b"\x00\x00\x01\x00",
    b"P6\n", b"P5 ", b"P4\n", b"8BPS", b"\x0a\x05\x01\x08", b"\x01\xda", b"qoif", b"DDS |",
    b"icns", b"FORM", b"\x00\x00\x00\x0cjP  ", b"#define", b"/* XPM */", b"SIMPLE  =", b"\x59\xa6\x6a\x95",
]


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    """A real encoded image with a few overwritten, deleted or inserted bytes, maybe truncated."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["overwrite", "delete", "insert"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "overwrite" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "delete" and data:
            del data[position : position + draw(st.integers(1, 16))]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


# -- the fuzz tests ---------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_and_preprocess(data, BYTES_ERRORS)


@FUZZ
@given(st.sampled_from(SIGNATURES), st.binary(max_size=1024))
def test_format_signature_then_garbage(signature: bytes, tail: bytes) -> None:
    _decode_and_preprocess(signature + tail, BYTES_ERRORS)


@FUZZ
@given(mutated_image())
def test_mutated_real_images(data: bytes) -> None:
    _decode_and_preprocess(data, BYTES_ERRORS)
    _decode_and_preprocess(io.BytesIO(data), BYTES_ERRORS)  # the file-object path too


ARRAY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.float32, np.float64, np.bool_])


@FUZZ
@given(hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=12)))
def test_arrays_of_any_dtype_and_shape(array: np.ndarray) -> None:
    _decode_and_preprocess(array, ARRAY_ERRORS)
    if array.dtype == np.uint8:
        _decode_and_preprocess(np.asfortranarray(array), ARRAY_ERRORS)  # non-C-contiguous memory


PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
             "I", "F", "I;16", "I;16B", "I;16L"]


@FUZZ
@given(st.sampled_from(PIL_MODES), st.integers(0, 40), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_pil_images_of_any_mode_and_size(mode: str, width: int, height: int, seed: int) -> None:
    image = Image.new(mode, (width, height))
    if width and height:  # random content, so conversions see real values, not zeros
        noise = np.random.default_rng(seed).integers(0, 256, len(image.tobytes()), dtype=np.uint8)
        image.frombytes(noise.tobytes())
    _decode_and_preprocess(image, PIL_ERRORS)


# -- whole batches through the Detector: nothing lost, nothing undocumented -------------------
@pytest.fixture(scope="module")
def detector(binary_bundle: Path) -> Detector:
    return Detector.load(binary_bundle, "fp32", max_pixels=MAX_PIXELS)


ANY_INPUT = st.one_of(
    mutated_image(),
    st.binary(max_size=256),
    hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=8)),
    st.sampled_from([None, 42, 3.5, object(), "no/such/file.jpg", Path("/nonexistent.png"), [b"nested"], {"a": 1}]),
)


@settings(FUZZ, max_examples=60)
@given(st.lists(ANY_INPUT, max_size=12), st.integers(1, 5))
def test_batches_keep_every_input(detector: Detector, inputs: list[object], batch_size: int) -> None:
    results = detector.predict(inputs, batch_size=batch_size, on_error="return")  # type: ignore[arg-type]
    assert len(results) == len(inputs)
    for result in results:
        if isinstance(result, Failure):
            assert isinstance(result.error, ImageError)  # every failure is a documented image error
        else:
            assert isinstance(result, Prediction) and result.label in detector.labels
            assert all(math.isfinite(p) for p in result.scores.values())
            assert sum(result.scores.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("value", [None, 42, 3.5, object()])
def test_non_image_non_sequence_is_one_failed_input(detector: Detector, value: object) -> None:
    """Not an image and not a sequence: reported as one unsupported input, not a bare TypeError."""
    (result,) = detector.predict(value, on_error="return")  # type: ignore[arg-type]
    assert isinstance(result, Failure) and isinstance(result.error, UnsupportedInputError)
    with pytest.raises(UnsupportedInputError, match=type(value).__name__):
        detector.predict_one(value)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedInputError, match="got list"):
        detector.predict_one([b"a list is not one image"])  # type: ignore[arg-type]
