"""The model card's Gradio demo on the ONNX runtime: built, not launched; checked against Detector.predict."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge import Detector
from deepfake_edge.demo import build_demo
from deepfake_edge.evidence import evidence_overlay

from old_bundles import old_copy

gr = pytest.importorskip("gradio", reason="the demo needs the [demo] extra (gradio)")


@pytest.fixture(scope="module")
def detector(binary_bundle: Path) -> Detector:
    return Detector.load(binary_bundle)  # the default variant, as `deepfake-edge demo` uses


@pytest.fixture(scope="module")
def demo(detector: Detector):  # noqa: ANN201 - gr.Interface
    # Built inside a running loop: outside one, gradio's App creates event loops
    # of its own (gradio.utils.safe_get_lock) and never closes them, which
    # pytest reports as unclosed sockets. `launch()` runs inside a loop anyway.
    async def build():  # noqa: ANN202
        return build_demo(detector)

    return asyncio.run(build())


def test_interface_is_the_model_cards(demo, detector: Detector) -> None:
    assert isinstance(demo, gr.Interface)
    (image_in,) = demo.input_components
    label_out, overlay_out = demo.output_components  # the card's label, and the evidence map
    assert isinstance(image_in, gr.Image) and image_in.type == "pil"
    assert isinstance(label_out, gr.Label) and label_out.num_top_classes == 2
    assert isinstance(overlay_out, gr.Image) and overlay_out.type == "pil"
    assert demo.title == "Deepfake Detector"
    assert "fake or real" in demo.description and detector.variant_name in demo.description


def test_interface_function_matches_detector_predict(demo, detector: Detector, photo_paths: list[Path]) -> None:
    label_out = demo.output_components[0]
    for path in photo_paths[:4]:
        with Image.open(path) as opened:
            image = opened.convert("RGB")  # what gr.Image(type="pil") hands the function
        (expected,) = detector.predict([image], evidence=True)
        scores, overlay = demo.fn(image)
        assert scores == expected.scores  # same runtime, same pixels: exactly equal
        assert np.array_equal(np.asarray(overlay), np.asarray(evidence_overlay(expected, image)))
        assert set(scores) == set(detector.labels)
        shown = label_out.postprocess(scores)  # what the page displays
        assert shown.label == expected.label
        assert [c.label for c in shown.confidences] == sorted(scores, key=scores.__getitem__, reverse=True)
    assert demo.fn(None) == ({}, None)  # nothing uploaded yet: an empty label, not an error


def test_broken_image_is_a_gradio_error_naming_the_problem(demo, photo_paths: list[Path]) -> None:
    jpeg = next(p for p in photo_paths if p.suffix == ".jpg").read_bytes()
    truncated = Image.open(io.BytesIO(jpeg[: len(jpeg) // 2]))  # the header parses; decoding fails later
    with pytest.raises(gr.Error, match="could not be loaded.*truncated"):
        demo.fn(truncated)


def test_demo_without_gradio_is_exit_3_and_import_stays_light(binary_bundle: Path) -> None:
    code = f"""
import json, sys
import deepfake_edge.demo  # must not import gradio
light = "gradio" not in sys.modules
sys.modules["gradio"] = None  # as if the [demo] extra were not installed
from deepfake_edge.cli import main
code = main(["demo", {str(binary_bundle)!r}])
print(json.dumps({{"light": light, "code": code}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout) == {"light": True, "code": 3}, proc.stderr
    assert "pip install 'deepfake-edge[demo]'" in proc.stderr and "Traceback" not in proc.stderr


def test_old_bundle_keeps_the_cards_single_output(binary_bundle: Path, tmp_path: Path) -> None:
    old = Detector.load(old_copy(binary_bundle, tmp_path / "old"))

    async def build():  # noqa: ANN202
        return build_demo(old)

    (label_out,) = asyncio.run(build()).output_components
    assert isinstance(label_out, gr.Label)
