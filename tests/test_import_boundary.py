"""Importing deepfake_edge and predicting must never load torch, transformers or optimum."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# openvino: only for int8-ov variants; ray and pyarrow: only for deepfake_edge.batch; av: only for deepfake_edge.video
HEAVY = ("torch", "transformers", "optimum", "onnx", "tqdm", "openvino", "ray", "pyarrow", "av")


def test_import_and_predict_stay_light(binary_bundle: Path, photo_paths: list[Path]) -> None:
    code = f"""
import json, sys
import deepfake_edge
from deepfake_edge import Detector
from deepfake_edge.cli import build_parser
build_parser()  # the CLI registry must not pull heavy modules either
detector = Detector.load({str(binary_bundle)!r})
result = detector.predict_one({str(photo_paths[0])!r})
print(json.dumps({{"label": result.label, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["label"] in {"fake", "real"}
    # onnx (the Python package) and tqdm are not runtime dependencies either
    assert out["loaded"] == []


def test_live_modules_import_neither_pyav_nor_paho() -> None:
    """The live path and its CLI options load PyAV and paho-mqtt only when a stream or broker is opened."""
    code = """
import json, sys
import deepfake_edge.video.live, deepfake_edge.video.watch, deepfake_edge.video.mqtt, deepfake_edge.video.alerts
from deepfake_edge.cli import build_parser
build_parser().parse_args(["scan", "b", "rtsp://h/x", "--mqtt", "mqtt://h/p", "--alert", "2/4"])
print(json.dumps([m for m in ("av", "paho", "torch") if m in sys.modules]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
