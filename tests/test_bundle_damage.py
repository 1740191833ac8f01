"""Damaged or mismatched bundles fail at ``Detector.load``, naming the file and the problem.

Every case works on a copy of the session bundle (never the shared fixture).
The expectation for each damage is written down as data below; the test applies
the damage, loads, and checks the error class and that the message names the file.
(An interrupted export is tested in test_export.py.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepfake_edge import (
    BundleError,
    BundleFileMissingError,
    BundleMismatchError,
    ChecksumMismatchError,
    Detector,
    Prediction,
    UnsupportedBundleError,
)

from references import References

MANIFEST, CONFIG, PREPROCESSOR = "manifest.json", "config.json", "preprocessor_config.json"
INT8, FP32 = "model_int8.onnx", "model.onnx"  # the binary bundle's default variant is int8
CLI = [sys.executable, "-m", "deepfake_edge.cli"]


# -- helpers that damage a bundle copy -------------------------------------------------
def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _rehash(bundle: Path, variant: str = "int8") -> None:
    """Make the manifest describe the file as it now is (a re-export gone wrong, or a hand edit)."""
    def change(manifest: dict) -> None:
        entry = manifest["variants"][variant]
        data = (bundle / entry["file"]).read_bytes()
        entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    _edit_json(bundle / MANIFEST, change)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_bytes_in_place(path: Path, offset: int, count: int = 8) -> None:
    """Same size, different content: only a sha256 check can see it."""
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_weight_bytes(path: Path, reference: References) -> None:
    """Flip bytes inside the largest weight tensor: the graph still parses, the numbers change."""
    offset, length = reference.largest_initializer(path)
    assert offset > 0 and length > 64
    _flip_bytes_in_place(path, offset + length // 2, 4)


def _set(path_name: str, *keys: str, value: object) -> Callable[[Path], None]:
    def damage(bundle: Path) -> None:
        def change(data: dict) -> None:
            target = data
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = value
        _edit_json(bundle / path_name, change)
    return damage


def _corrupt_protobuf_then_rehash(bundle: Path) -> None:
    path = bundle / INT8
    _flip_bytes_in_place(path, 0, 32)  # the protobuf header: onnxruntime cannot parse it
    _rehash(bundle)


@dataclass(frozen=True)
class Damage:
    damage: Callable[[Path], None]
    error: type[BundleError]
    file: str  # the file the message must name (relative to the bundle)
    message: str  # regex the message must contain
    variant: str | None = None
    verify: bool = True
    flip_weights_in: str | None = None  # first flip bytes inside this model file's largest weight tensor


DAMAGES: dict[str, Damage] = {
    # missing files
    "manifest missing": Damage(lambda b: (b / MANIFEST).unlink(), BundleFileMissingError, MANIFEST,
                               "manifest is missing"),
    "config missing": Damage(lambda b: (b / CONFIG).unlink(), BundleFileMissingError, CONFIG,
                             "model config is missing"),
    "preprocessor missing": Damage(lambda b: (b / PREPROCESSOR).unlink(), BundleFileMissingError, PREPROCESSOR,
                                   "preprocessor config is missing"),
    "model file missing": Damage(lambda b: (b / INT8).unlink(), BundleFileMissingError, INT8,
                                 "model file listed in the manifest is missing"),
    "model file is a folder": Damage(lambda b: ((b / INT8).unlink(), (b / INT8).mkdir()), BundleFileMissingError, INT8,
                                     "missing"),
    # truncated / corrupted model
    "model truncated": Damage(lambda b: _truncate(b / INT8), ChecksumMismatchError, INT8,
                              r"\d+ bytes on disk, the manifest records \d+"),
    "model truncated, --no-verify": Damage(lambda b: _truncate(b / INT8), ChecksumMismatchError, INT8,
                                           r"\d+ bytes on disk", verify=False),
    "model bytes flipped": Damage(lambda b: None, ChecksumMismatchError, INT8,
                                  r"sha256 [0-9a-f]{64} does not match the manifest's [0-9a-f]{64}.*--no-verify",
                                  flip_weights_in=INT8),
    "fp32 bytes flipped": Damage(lambda b: _flip_bytes_in_place(b / FP32, 4000), ChecksumMismatchError, FP32,
                                 "does not match the manifest", variant="fp32"),
    "model unparsable, rehashed": Damage(_corrupt_protobuf_then_rehash, BundleError, INT8,
                                         "onnxruntime cannot load this model.*INVALID_PROTOBUF"),
    "model unparsable, --no-verify": Damage(lambda b: _flip_bytes_in_place(b / INT8, 0, 32), BundleError, INT8,
                                            "onnxruntime cannot load this model", verify=False),
    "model truncated, rehashed": Damage(lambda b: (_truncate(b / INT8, 0.7), _rehash(b)), BundleError, INT8,
                                        "onnxruntime cannot load this model"),
    "model is a JPEG, rehashed": Damage(
        lambda b: ((b / INT8).write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 500), _rehash(b)),
        BundleError, INT8, "onnxruntime cannot load this model"),
    # manifest problems
    "unknown format_version": Damage(_set(MANIFEST, "format_version", value=2), UnsupportedBundleError, MANIFEST,
                                     "format_version 2 is not supported by this runtime"),
    "not our manifest": Damage(_set(MANIFEST, "format", value="something-else"), UnsupportedBundleError, MANIFEST,
                               "not a deepfake-edge manifest"),
    "manifest not JSON": Damage(lambda b: _truncate(b / MANIFEST, 0.4), UnsupportedBundleError, MANIFEST,
                                "not readable JSON"),
    "manifest variants not an object": Damage(_set(MANIFEST, "variants", value=[]), UnsupportedBundleError, MANIFEST,
                                              "malformed manifest"),
    "default variant absent": Damage(_set(MANIFEST, "default_variant", value="fp16"), UnsupportedBundleError, MANIFEST,
                                     "default_variant 'fp16' is not one of"),
    "model path escapes bundle": Damage(_set(MANIFEST, "variants", "int8", "file", value="../model_int8.onnx"),
                                        UnsupportedBundleError, MANIFEST, "relative path inside the bundle"),
    "sha256 not hex": Damage(_set(MANIFEST, "variants", "int8", "sha256", value="abc"), UnsupportedBundleError,
                             MANIFEST, "sha256 must be 64 lowercase hex digits"),
    "bytes not a number": Damage(_set(MANIFEST, "variants", "int8", "bytes", value="12"), UnsupportedBundleError,
                                 MANIFEST, "bytes must be a non-negative integer"),
    "backend options not an object": Damage(_set(MANIFEST, "variants", "int8", "backend_options", value=["bf16"]),
                                            UnsupportedBundleError, MANIFEST, "backend_options must be an object"),
    "unknown backend": Damage(_set(MANIFEST, "variants", "int8", "backend", value="tensorrt"), BundleError, INT8,
                              "unknown backend 'tensorrt'"),
    "threshold out of range": Damage(_set(MANIFEST, "decision", "threshold", value=1.5), UnsupportedBundleError,
                                     MANIFEST, r"threshold must be null or a number within \[0, 1\]"),
    "threshold a string": Damage(_set(MANIFEST, "decision", "threshold", value="0.5"), UnsupportedBundleError,
                                 MANIFEST, "threshold must be null or a number"),
    "threshold for an unknown label": Damage(
        lambda b: (_set(MANIFEST, "decision", "threshold", value=0.5)(b),
                   _set(MANIFEST, "decision", "positive_label", value="forged")(b)),
        BundleMismatchError, MANIFEST, "label 'forged', which is not among the model's labels"),
    # files that disagree with the model
    "preprocessor size != model input": Damage(_set(PREPROCESSOR, "size", value={"height": 46, "width": 46}),
                                               BundleMismatchError, PREPROCESSOR,
                                               rf"size 46x46 does not match the model input .*{INT8}"),
    "id2label wider than the output": Damage(_set(CONFIG, "id2label", value={"0": "fake", "1": "real", "2": "edited"}),
                                             BundleMismatchError, CONFIG,
                                             rf"id2label has 3 labels but .*{INT8} outputs 2 logits"),
    "id2label narrower than the output": Damage(_set(CONFIG, "id2label", value={"0": "fake"}), BundleMismatchError,
                                                CONFIG, "id2label has 1 labels", variant="fp32"),
    "id2label empty": Damage(_set(CONFIG, "id2label", value={}), BundleMismatchError, CONFIG,
                             "expected a non-empty id2label"),
    "id2label keys with a gap": Damage(_set(CONFIG, "id2label", value={"0": "fake", "2": "real"}), BundleMismatchError,
                                       CONFIG, r"keys must be 0..1, got \[0, 2\]"),
    "config not JSON": Damage(lambda b: (b / CONFIG).write_text("{"), UnsupportedBundleError, CONFIG,
                              "not readable JSON"),
    # preprocessing this runtime cannot reproduce, or garbage values
    "unsupported image_processor_type": Damage(_set(PREPROCESSOR, "image_processor_type", value="CLIPImageProcessor"),
                                               UnsupportedBundleError, PREPROCESSOR,
                                               "image_processor_type 'CLIPImageProcessor' is not supported"),
    "size not a number": Damage(_set(PREPROCESSOR, "size", value={"height": "big", "width": 45}),
                                UnsupportedBundleError, PREPROCESSOR, "malformed preprocessor config"),
    "unknown resample filter": Damage(_set(PREPROCESSOR, "resample", value=99), UnsupportedBundleError, PREPROCESSOR,
                                      "malformed preprocessor config"),
    "mean with 2 channels": Damage(_set(PREPROCESSOR, "image_mean", value=[0.5, 0.5]), BundleMismatchError,
                                   PREPROCESSOR, "image_mean must have 3 values"),
    "std zero": Damage(_set(PREPROCESSOR, "image_std", value=0), BundleMismatchError, PREPROCESSOR,
                       "image_std must be non-zero"),
    "do_resize false": Damage(_set(PREPROCESSOR, "do_resize", value=False), UnsupportedBundleError, PREPROCESSOR,
                              "do_resize is false, but the model needs a fixed 45x45 input"),
    # the request itself
    "unknown variant requested": Damage(lambda b: None, UnsupportedBundleError, "", "no variant 'fp16'",
                                        variant="fp16"),
}


@pytest.fixture
def bundle_copy(binary_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(binary_bundle, tmp_path / "bundle"))


def _apply(spec: Damage, bundle: Path, reference: References) -> None:
    if spec.flip_weights_in:
        _flip_weight_bytes(bundle / spec.flip_weights_in, reference)
    spec.damage(bundle)


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_damaged_bundle_fails_at_load(bundle_copy: Path, case: str, reference: References) -> None:
    spec = DAMAGES[case]
    _apply(spec, bundle_copy, reference)
    with pytest.raises(spec.error, match=spec.message) as info:
        Detector.load(bundle_copy, spec.variant, verify=spec.verify)
    assert str(bundle_copy / spec.file) in str(info.value), f"the message must name {spec.file or 'the bundle'}"
    assert type(info.value).__module__ == "deepfake_edge.errors"


def test_bundle_path_that_is_a_file(bundle_copy: Path) -> None:
    with pytest.raises(BundleFileMissingError, match=r"manifest\.json: bundle directory is not a directory"):
        Detector.load(bundle_copy / MANIFEST)
    with pytest.raises(BundleFileMissingError, match="bundle directory does not exist"):
        Detector.load(bundle_copy / "nowhere")


def test_no_verify_skips_only_the_sha256(bundle_copy: Path, reference: References) -> None:
    """Flipped weight bytes: refused by default, loaded with verify=False (the size still matches)."""
    _flip_weight_bytes(bundle_copy / FP32, reference)
    with pytest.raises(ChecksumMismatchError):
        Detector.load(bundle_copy, "fp32")
    detector = Detector.load(bundle_copy, "fp32", verify=False)
    result = detector.predict_one(np.full((30, 20, 3), 128, np.uint8))
    assert isinstance(result, Prediction) and sum(result.scores.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("versions", [{"onnx": "1.16.0", "torch": "2.2.0"}, None], ids=["older-list", "none"])
def test_manifest_of_an_older_export_loads(bundle_copy: Path, versions: dict[str, str] | None) -> None:
    """Older exports recorded fewer library versions (no Pillow, no numpy), or none at all."""
    def change(manifest: dict) -> None:
        if versions is None:
            del manifest["versions"]
        else:
            manifest["versions"] = versions
    _edit_json(bundle_copy / MANIFEST, change)
    detector = Detector.load(bundle_copy)
    assert detector.bundle.manifest.versions == (versions or {})
    assert isinstance(detector.predict_one(np.full((30, 20, 3), 128, np.uint8)), Prediction)


# -- models whose graph disagrees with the bundle (edited with the onnx package) ---------
def _edit_model(bundle: Path, edit: Callable[..., None], reference: References, variant: str = "fp32") -> None:
    path = bundle / (FP32 if variant == "fp32" else INT8)
    path.write_bytes(reference.edited_model(path, edit))
    _rehash(bundle, variant)


def _rename_output(model: object) -> None:
    graph = model.graph  # type: ignore[attr-defined]
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["scores" if o == old else o for o in node.output]
    graph.output[0].name = "scores"


def _dynamic_height_width(model: object) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim  # type: ignore[attr-defined]
    dims[2].dim_param, dims[3].dim_param = "height", "width"


def test_renamed_output_fails_at_load(bundle_copy: Path, reference: References) -> None:
    _edit_model(bundle_copy, _rename_output, reference)
    expected = r"expected input 'pixel_values' and output 'logits'.*'scores'"
    with pytest.raises(BundleMismatchError, match=expected) as info:
        Detector.load(bundle_copy, "fp32")
    assert str(bundle_copy / FP32) in str(info.value)


def test_dynamic_size_model_is_probed_at_load(bundle_copy: Path, binary_bundle: Path, reference: References) -> None:
    """A model with free height/width does not say what it accepts: the size is probed at load."""
    _edit_model(bundle_copy, _dynamic_height_width, reference)
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    expected = Detector.load(binary_bundle, "fp32").predict_one(image)
    got = Detector.load(bundle_copy, "fp32").predict_one(image)  # matching size: loads and agrees
    assert got.scores == pytest.approx(expected.scores, abs=1e-6)
    # 63 px / patch 9 = 49 patches, but the position table has 25: only running the model shows it
    _set(PREPROCESSOR, "size", value={"height": 63, "width": 63})(bundle_copy)
    with pytest.raises(BundleMismatchError, match=r"size 63x63 is not accepted by .*model\.onnx") as info:
        Detector.load(bundle_copy, "fp32")
    assert str(bundle_copy / PREPROCESSOR) in str(info.value)


# -- the same through the CLI: exit code 4, one clear line, no traceback -----------------
@pytest.mark.parametrize("case", ["model file missing", "model bytes flipped", "preprocessor size != model input",
                                  "unknown format_version"])
def test_cli_reports_damaged_bundle(bundle_copy: Path, case: str, tmp_path: Path, reference: References) -> None:
    spec = DAMAGES[case]
    _apply(spec, bundle_copy, reference)
    image = tmp_path / "gray.png"
    from PIL import Image

    Image.new("L", (20, 30), 90).save(image)
    proc = subprocess.run([*CLI, "predict", str(bundle_copy), str(image), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("deepfake-edge predict: bundle error: ")
    assert str(bundle_copy / spec.file) in proc.stderr
    if case == "model bytes flipped":
        skipped = subprocess.run([*CLI, "predict", str(bundle_copy), str(image), "--no-verify", "--no-progress"],
                                 capture_output=True, text=True, timeout=120)
        assert skipped.returncode == 0, skipped.stderr
        assert json.loads(skipped.stdout)["label"] in {"fake", "real"}


def _nan_weights(path: Path, reference: References) -> None:
    """Write NaN over the largest fp32 weight: the graph still loads, every score turns NaN."""
    offset, length = reference.largest_initializer(path, float32=True)
    assert offset > 0
    data = path.read_bytes()
    nan = np.full(length // 4, np.nan, np.float32).tobytes()
    path.write_bytes(data[:offset] + nan + data[offset + length:])


def test_nan_scores_from_a_damaged_model_are_an_error_line(bundle_copy: Path, tmp_path: Path,
                                                           reference: References) -> None:
    _nan_weights(bundle_copy / FP32, reference)
    image = tmp_path / "gray.png"
    from PIL import Image

    Image.new("L", (20, 30), 90).save(image)
    proc = subprocess.run([*CLI, "predict", str(bundle_copy), str(image), "--variant", "fp32", "--no-verify",
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    line = json.loads(proc.stdout)  # strict JSON: a bare NaN would not parse with allow_nan=False below
    json.dumps(line, allow_nan=False)
    assert line["error"] == "ModelOutputError" and "non-finite" in line["message"] and line["path"] == str(image)
