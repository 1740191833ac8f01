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


# -- login beyond loopback ---------------------------------------------------------------
def _demo_args(bundle: Path, *options: str):  # noqa: ANN202 - argparse.Namespace
    from deepfake_edge.cli import build_parser

    return build_parser().parse_args(["demo", str(bundle), *options])


def test_login_is_asked_beyond_loopback_only(binary_bundle: Path, tmp_path: Path, monkeypatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from deepfake_edge.apikeys import ENV_VAR, generate_key
    from deepfake_edge.cli.demo import launch_options

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    for host in ("127.0.0.1", "::1", "localhost"):  # only this machine reaches it: no login, no key file made
        assert launch_options(_demo_args(binary_bundle, "--host", host))["auth"] is None
    assert not (tmp_path / "state").exists()
    key = generate_key()
    monkeypatch.setenv(ENV_VAR, key)
    options = launch_options(_demo_args(binary_bundle, "--host", "0.0.0.0", "--port", "7861"))  # noqa: S104
    assert options["server_name"] == "0.0.0.0" and options["server_port"] == 7861  # noqa: S104
    check = options["auth"]
    assert check("anyone", key) and check("admin", key)
    assert not check("admin", key[:-1]) and not check(key, "") and not check("admin", generate_key())
    assert "API key" in options["auth_message"]
    assert launch_options(_demo_args(binary_bundle, "--host", "192.0.2.10", "--no-auth"))["auth"] is None
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "authentication is off (--no-auth)" in line]) == 1
    assert key not in err
    shared = tmp_path / "shared"
    shared.write_text(key + "\n")
    shared.chmod(0o644)
    from deepfake_edge.cli import main

    assert main(["demo", str(binary_bundle), "--host", "0.0.0.0", "--api-key-file", str(shared)]) == 2  # noqa: S104
    err = capsys.readouterr().err
    assert "accessible by group or others (mode 0644)" in err and key not in err


def test_gradio_itself_enforces_the_login_the_cli_gives_it(binary_bundle: Path, tmp_path: Path) -> None:
    import os
    import time

    import httpx

    from deepfake_edge.apikeys import ENV_VAR, generate_key

    from live_servers import free_port

    key, port = generate_key(), free_port()
    # The options `demo --host 0.0.0.0` launches with; the test itself listens on loopback only.
    code = f"""
from deepfake_edge import Detector
from deepfake_edge.cli import build_parser
from deepfake_edge.cli.demo import launch_options
from deepfake_edge.demo import build_demo
options = launch_options(build_parser().parse_args(["demo", {str(binary_bundle)!r}, "--host", "0.0.0.0",
                                                    "--port", "{port}"]))
assert callable(options["auth"])
options["server_name"] = "127.0.0.1"
build_demo(Detector.load({str(binary_bundle)!r}, "fp32")).launch(**options)
"""
    env = {**os.environ, ENV_VAR: key, "XDG_STATE_HOME": str(tmp_path / "state")}
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # importing gradio takes a while on a busy machine
        while True:
            assert proc.poll() is None, (tmp_path / "err").read_text()
            try:
                first = httpx.get(f"{url}/gradio_api/login_check", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the demo did not start"
                time.sleep(0.2)
        assert first.status_code == 401
        # the page's config and the classify API are closed before the login
        assert httpx.get(f"{url}/config", timeout=10).status_code == 401
        assert httpx.post(f"{url}/gradio_api/call/classify", json={"data": [None]}, timeout=10).status_code == 401
        refused = httpx.post(f"{url}/login", data={"username": "admin", "password": generate_key()}, timeout=10)
        assert refused.status_code == 400 and not refused.cookies
        with httpx.Client(base_url=url, timeout=10) as browser:
            accepted = browser.post("/login", data={"username": "admin", "password": key})
            assert accepted.status_code == 200 and accepted.json() == {"success": True}
            assert browser.get("/gradio_api/login_check").status_code == 200
            assert browser.get("/config").status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for channel in ("out", "err"):
        assert key not in (tmp_path / channel).read_text()


def test_old_bundle_keeps_the_cards_single_output(binary_bundle: Path, tmp_path: Path) -> None:
    old = Detector.load(old_copy(binary_bundle, tmp_path / "old"))

    async def build():  # noqa: ANN202
        return build_demo(old)

    (label_out,) = asyncio.run(build()).output_components
    assert isinstance(label_out, gr.Label)
