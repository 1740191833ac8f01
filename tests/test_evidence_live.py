"""Live streams with ``scan --evidence``: a real RTSP server and a real Mosquitto broker.

Alert lines and MQTT alert payloads carry the peak frame's hotspots (the same as that frame's
own line), and each alert's peak frame is drawn into the evidence folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("av", reason="live-stream tests need the [video] extra (PyAV)")
mqtt = pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the [mqtt] extra (paho-mqtt)")

from live_servers import Mosquitto, RtspServer, make_h264


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_h264(tmp_path_factory.mktemp("evidence-live") / "clip.mp4", seconds=60)


@pytest.fixture()
def rtsp(clip: Path) -> Iterator[RtspServer]:
    server = RtspServer(clip).start()
    yield server
    server.stop()


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path).start()
    yield server
    server.kill()


def test_alerts_carry_the_peak_frames_hotspots(binary_bundle: Path, rtsp: RtspServer, broker: Mosquitto,
                                                tmp_path: Path) -> None:
    received: list[tuple[str, str]] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: received.append((m.topic, m.payload.decode()))
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect("127.0.0.1", broker.port, keepalive=10)
    client.subscribe("pfx/#", qos=1)
    client.loop_start()
    assert subscribed.wait(10), "subscription not acknowledged"
    out = tmp_path / "evidence"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfake_edge.cli", "scan", str(binary_bundle), rtsp.url, "--variant", "fp32",
         "--fps", "2", "--alert", "2/3", "--threshold", "0", "--name", "door", "--evidence", str(out),
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}/pfx", "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[dict[str, object]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(json.loads(line))
            if sum("label" in r and "time" in r for r in lines) == 4:
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=60)
        lines.extend(json.loads(line) for line in rest.splitlines())
    finally:
        proc.kill()
        client.disconnect()
        client.loop_stop()
    assert proc.returncode == 0, err
    frames = {r["time"]: r for r in lines if "label" in r and "time" in r}
    alerts = [r for r in lines if "alert" in r]
    assert [a["alert"] for a in alerts] == ["start", "end"]
    assert all("hotspots" in f for f in frames.values())
    for alert in alerts:
        assert alert["hotspots"] == frames[alert["peak_time"]]["hotspots"]  # threshold 0: every frame is high
        with Image.open(alert["evidence"]) as png:
            assert Path(alert["evidence"]).parent == out and png.height > 0
    published = [json.loads(p) for t, p in received if t == "pfx/door/alert"]
    assert published == [{k: v for k, v in a.items() if k != "evidence"} for a in alerts]
