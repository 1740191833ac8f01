"""The export step: Optimum registration, fp32 parity with torch, int8 fidelity, manifest, atomicity."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export tests need the [export] extra (torch)")

from transformers import SiglipForImageClassification, SiglipImageProcessor

from deepfake_edge import Detector
from deepfake_edge.bundle import sha256_file
from deepfake_edge.export.sample_images import gate_images, heldout_images


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepfake_edge.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def _torch_probs(checkpoint: Path, images: list) -> tuple[np.ndarray, np.ndarray]:
    model = SiglipForImageClassification.from_pretrained(checkpoint).eval()
    processor = SiglipImageProcessor.from_pretrained(checkpoint)
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    return logits.numpy(), torch.softmax(logits.double(), -1).numpy()


def test_optimum_now_knows_siglip_image_classification() -> None:
    from optimum.exporters.tasks import TasksManager

    import deepfake_edge.export.onnx_export  # noqa: F401 - registers the config

    tasks = TasksManager.get_supported_tasks_for_model_type("siglip", "onnx", library_name="transformers")
    assert "image-classification" in tasks
    assert "zero-shot-image-classification" in tasks  # Optimum's own registrations are untouched


def test_export_package_imports_without_its_heavy_libraries() -> None:
    """DEFAULT_MODEL (the CLI's help), the errors and the sample images need neither torch nor Optimum nor onnx."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "import deepfake_edge.export as export\n"
        "from deepfake_edge.export.sample_images import synthetic_images\n"
        "assert export.DEFAULT_MODEL and issubclass(export.ValidationError, export.ExportError)\n"
        "synthetic_images(2)\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'optimum', 'onnx') if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_bundle_layout_and_manifest(binary_bundle: Path) -> None:
    names = {p.name for p in binary_bundle.iterdir()}
    assert {"model.onnx", "model_int8.onnx", "config.json", "preprocessor_config.json", "manifest.json"} <= names
    manifest = json.loads((binary_bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["default_variant"] == "int8"
    for name, variant in manifest["variants"].items():
        path = binary_bundle / variant["file"]
        assert variant["sha256"] == sha256_file(path), name
        assert variant["bytes"] == path.stat().st_size
        assert variant["recipe"]["name"] == name
    fidelity = manifest["variants"]["int8"]["fidelity"]
    assert fidelity["images"] == manifest["validation"]["images"] > 10
    assert 0.0 <= fidelity["max_abs_dp"] <= 1.0 and fidelity["mean_abs_dp"] <= fidelity["max_abs_dp"]
    assert manifest["validation"]["fp32_vs_torch_max_abs_logit_diff"] <= 1e-4
    assert manifest["validation"]["preprocess_max_abs_diff"] == 0.0
    for package in ("onnx", "onnxruntime", "optimum", "transformers", "torch"):
        assert manifest["versions"][package], package
    assert json.loads((binary_bundle / "config.json").read_text())["id2label"] == {"0": "fake", "1": "real"}


def test_manifest_records_the_versions_that_change_the_bytes(binary_bundle: Path) -> None:
    """Pillow resizes the calibration images, numpy scales them, onnx serializes: each moves the bytes."""
    import onnx
    import PIL

    versions = json.loads((binary_bundle / "manifest.json").read_text())["versions"]
    assert versions["pillow"] == PIL.__version__
    assert versions["numpy"] == np.__version__
    assert versions["onnx"] == onnx.__version__


def test_fp32_logits_match_torch(any_bundle: tuple[str, Path, Path]) -> None:
    _, checkpoint, bundle = any_bundle
    images = [item.image for item in heldout_images(synthetic=4)]
    expected_logits, _ = _torch_probs(checkpoint, images)
    detector = Detector.load(bundle, "fp32")
    ours = detector.logits(detector.preprocess(images))
    assert np.abs(ours - expected_logits).max() <= 1e-4


def test_int8_keeps_the_fidelity_its_manifest_promises(any_bundle: tuple[str, Path, Path]) -> None:
    """int8 against torch on the export's own held-out images: within the recorded fidelity, itself within budget."""
    _, checkpoint, bundle = any_bundle
    images = [item.image for item in gate_images()]  # the export's default validation set
    _, expected = _torch_probs(checkpoint, images)
    manifest = json.loads((bundle / "manifest.json").read_text())
    fidelity = manifest["variants"]["int8"]["fidelity"]
    budget = manifest["validation"]["fidelity_budget"]["int8"]
    assert fidelity["images"] == len(images)
    assert budget["met_on_held_out"] and budget["held_out_images"] == len(images) >= 200
    assert fidelity["p99_abs_dp"] <= budget["budget"]["p99_abs_dp"]
    assert fidelity["mean_abs_dp"] <= budget["budget"]["mean_abs_dp"]
    detector = Detector.load(bundle, "int8")
    probs = np.array([[r.scores[label] for label in detector.labels] for r in detector.predict(images)])
    # the manifest measures |dP| of the positive label against fp32 ONNX, one image per run;
    # 1e-5 covers fp32 ONNX vs torch and batched vs single runs
    positive = detector.labels.index(fidelity["positive_label"])
    assert np.abs(probs[:, positive] - expected[:, positive]).max() <= fidelity["max_abs_dp"] + 1e-5
    decisive = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2] > 0.3
    assert decisive.sum() >= len(images) // 2, "the tiny model should give decisive predictions"
    assert (probs.argmax(1) == expected.argmax(1))[decisive].all()


def test_export_refuses_naflex_siglip2_and_unknown_architectures(tmp_path: Path) -> None:
    """ViT is supported now (tests/test_family.py); NaFlex SigLIP2 and other model types are refused, saying why."""
    from transformers import BertConfig, BertForSequenceClassification, Siglip2Config, Siglip2ForImageClassification

    from deepfake_edge.export import ExportError, export_bundle

    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    Siglip2ForImageClassification(Siglip2Config(vision_config={**tiny, "patch_size": 8, "num_patches": 16},
                                                text_config=tiny)).save_pretrained(tmp_path / "siglip2")
    with pytest.raises(ExportError, match="model_type is 'siglip2': .*NaFlex.*no fixed-size NCHW input"):
        export_bundle(str(tmp_path / "siglip2"), tmp_path / "out", log=lambda _m: None)
    BertForSequenceClassification(BertConfig(**tiny)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ExportError, match="model_type is 'bert'; deepfake-edge exports SiglipForImageClassification"):
        export_bundle(str(tmp_path / "bert"), tmp_path / "out", log=lambda _m: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("labels", "flags", "expected"), [
    (("fake", "real"), {}, {"positive_label": "fake"}),
    (("Real", "AI"), {}, {"positive_label": "AI"}),
    (("Human", "edited"), {}, {"positive_label": "edited"}),  # the label beside the one real-like label
    (("Artificial", "Deepfake", "Real"), {}, {"real_label": "Real"}),
    (("real", "fake", "edited"), {"positive_label": "fake"}, {"positive_label": "fake"}),
    (("real", "fake", "edited"), {"real_label": "real"}, {"real_label": "real"}),
    (("cat", "dog"), {"positive_label": "dog"}, {"positive_label": "dog"}),
])
def test_the_label_rule_is_inferred_or_taken_from_the_flag(labels: tuple[str, ...], flags: dict[str, str],
                                                           expected: dict[str, str]) -> None:
    from deepfake_edge.decision import infer_rule

    rule = infer_rule(labels, **flags)
    assert {"positive_label": rule.positive_label, "real_label": rule.real_label} == {
        "positive_label": None, "real_label": None, **expected}


@pytest.mark.parametrize(("labels", "flags", "message"), [
    (("real", "fake", "edited"), {}, "'edited'|cannot tell"),      # is 'edited' manipulated?
    (("fake", "deepfake"), {}, "cannot tell"),                     # both fake-like
    (("cat", "dog"), {}, "cannot tell"),                           # neither
    (("Real", "Genuine", "Fake"), {}, "cannot tell"),              # two real-like labels
    (("fake", "real"), {"positive_label": "Fake"}, "--positive-label 'Fake' is not one of the model's labels"),
    (("fake", "real"), {"positive_label": "fake", "real_label": "real"}, "exclude each other"),
])
def test_ambiguous_labels_ask_for_a_flag(labels: tuple[str, ...], flags: dict[str, str], message: str) -> None:
    from deepfake_edge.decision import AmbiguousLabelsError, infer_rule

    with pytest.raises(AmbiguousLabelsError, match=message) as info:
        infer_rule(labels, **flags)
    if not flags:
        assert "--positive-label" in str(info.value) and "--real-label" in str(info.value)


def test_cli_export_stops_on_ambiguous_labels_before_exporting(tmp_path: Path) -> None:
    from tiny_models import TINY_SPECS, build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(TINY_SPECS["ternary"], tmp_path / "ckpt")  # real / fake / edited
    run = _cli("export", checkpoint, tmp_path / "out")
    assert run.returncode != 0
    assert "cannot tell which one means manipulated" in run.stderr and "--real-label" in run.stderr
    assert "exporting fp32" not in run.stderr and not (tmp_path / "out").exists()
    help_text = _cli("export", "--help").stdout
    assert "--positive-label NAME" in help_text and "--real-label NAME" in help_text


def test_export_fails_loudly_when_parity_is_impossible(binary_checkpoint: Path, tmp_path: Path) -> None:
    from deepfake_edge.export import ValidationError, export_bundle

    with pytest.raises(ValidationError, match="differ from torch"):
        export_bundle(str(binary_checkpoint), tmp_path / "out", atol=0.0, variants=["fp32"], log=lambda _m: None)
    assert not (tmp_path / "out").exists(), "a failed export must not leave a bundle behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "staging directory left behind"


def test_export_cli_end_to_end(binary_checkpoint: Path, tmp_path: Path, photo_paths: list[Path]) -> None:
    out = tmp_path / "bundle"
    proc = _cli("export", binary_checkpoint, out)
    assert proc.returncode == 0, proc.stderr
    assert "validating fp32 ONNX on" in proc.stderr and "against torch on" in proc.stderr and "done in" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["default_variant"] == "int8"
    # the default list: int8-ov joins where OpenVINO is installed
    openvino = importlib.util.find_spec("openvino") is not None
    assert set(manifest["variants"]) == {"fp32", "int8", *(["int8-ov"] if openvino else [])}
    again = _cli("export", binary_checkpoint, out)
    assert again.returncode == 4 and "--overwrite" in again.stderr
    predicted = _cli("predict", out, photo_paths[0])
    assert predicted.returncode == 0 and json.loads(predicted.stdout)["label"] in {"fake", "real"}
    assert json.loads(predicted.stdout)["variant"] in manifest["variants"]


# -- export is atomic: an interruption never leaves a bundle that looks whole -----------
class Interrupted(Exception):
    """Stands for anything that stops an export half-way (a crash, a full disk, Ctrl-C)."""


@pytest.fixture(scope="module")
def two_images() -> list:
    return heldout_images()[:2]  # a short validation keeps each export to about a second


def _export(checkpoint: Path, out: Path, images: list, **kwargs: object) -> None:
    from deepfake_edge.export import export_bundle

    kwargs.setdefault("variants", ("fp32", "int8"))  # whatever is installed
    export_bundle(str(checkpoint), out, validation_images=images, **kwargs)  # type: ignore[arg-type]


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.mark.parametrize(
    ("stop_at", "exception"),
    [
        ("-> exporting fp32 ONNX", Interrupted),            # before any file exists
        ("-> building int8", Interrupted),                  # model.onnx + configs written, no int8, no manifest
        ("   int8: p99 |dP|", KeyboardInterrupt),          # every model written, only the manifest missing
    ],
)
def test_interrupted_export_leaves_nothing(binary_checkpoint: Path, tmp_path: Path, two_images: list,
                                           stop_at: str, exception: type[BaseException]) -> None:
    seen: list[str] = []

    def log(message: str) -> None:
        seen.append(message)
        if message.startswith(stop_at):
            raise exception(message)

    out = tmp_path / "bundle"
    with pytest.raises(exception):
        _export(binary_checkpoint, out, two_images, log=log)
    assert any(m.startswith(stop_at) for m in seen)
    assert not out.exists(), "an interrupted export must not leave the bundle directory"
    assert _leftovers(tmp_path, "bundle") == [], "the staging directory must be removed"
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_bundle(binary_checkpoint: Path, binary_bundle: Path, tmp_path: Path,
                                                    two_images: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing last step (say, a full disk while writing the manifest) keeps the previous bundle intact."""
    import deepfake_edge.export.pipeline as pipeline

    bundle_copy = Path(shutil.copytree(binary_bundle, tmp_path / "bundle"))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle_copy.iterdir()}

    def full_disk(root: Path, manifest: object) -> None:
        (root / "manifest.json").write_text('{"format": "deepfake-edge-bundle", "forma')  # half-written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "write_manifest", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _export(binary_checkpoint, bundle_copy, two_images, overwrite=True, log=lambda _m: None)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle_copy.iterdir()}
    assert after == before, "the previous bundle must be untouched"
    assert _leftovers(tmp_path, "bundle") == []
    Detector.load(bundle_copy)  # still whole and verified


def test_failure_after_the_rename_leaves_a_whole_bundle(binary_checkpoint: Path, tmp_path: Path,
                                                        two_images: list) -> None:
    """The control: once the final log line is reached the bundle is complete and loads."""
    def log(message: str) -> None:
        if message.startswith("bundle written to"):
            raise Interrupted(message)

    out = tmp_path / "bundle"
    with pytest.raises(Interrupted):
        _export(binary_checkpoint, out, two_images, log=log)
    assert _leftovers(tmp_path, "bundle") == []
    detector = Detector.load(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "manifest.json", "model.onnx", "model_int8.onnx", "preprocessor_config.json"]
    assert detector.variant_name == "int8"


def test_overwrite_swaps_the_bundle_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--overwrite exchanges the new bundle with the old one atomically: OUT_DIR is never missing."""
    from deepfake_edge.export import bundle_writer

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old").write_text("previous bundle")
    exchanged: list[tuple[Path, Path]] = []
    real = bundle_writer.exchange_paths

    def spy(a: Path, b: Path) -> bool:
        exchanged.append((a, b))
        swapped = real(a, b)
        assert out.is_dir()  # right after the swap the new bundle is in place
        return swapped

    monkeypatch.setattr(bundle_writer, "exchange_paths", spy)
    with bundle_writer.staging_directory(out, overwrite=True) as stage:
        (stage / "manifest.json").write_text("{}")
    assert exchanged and exchanged[0][1] == out.resolve()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # the old one and the staging dir are gone
