"""Live results to a real Mosquitto broker; a broker that dies or stays silent never stalls inference."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("av", reason="live-stream tests need the [video] extra (PyAV)")
mqtt = pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the [mqtt] extra (paho-mqtt)")

from deepfake_edge import Detector
from deepfake_edge.video import FrameResult, Sampling
from deepfake_edge.video.live import Reconnect
from deepfake_edge.video.mqtt import (
    MqttPublisher,
    MqttSink,
    MqttTarget,
    camera_name,
    mqtt_target,
    topic_level,
)
from deepfake_edge.video.watch import LiveOptions, watch

from live_servers import Mosquitto, RtspServer, SilentListener, make_h264, wait_for


class Subscriber:
    """A paho client that records every message under ``topic``."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload.decode(), m.retain))
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def payloads(self, topic: str) -> list[str]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_h264(tmp_path_factory.mktemp("mqtt") / "clip.mp4", seconds=60)


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


def test_targets_and_camera_names() -> None:
    assert mqtt_target("mqtt://nvr.local") == MqttTarget("nvr.local", 1883, "deepfake-edge")
    assert mqtt_target("mqtt://10.0.0.2:1884/home/cams/") == MqttTarget("10.0.0.2", 1884, "home/cams")
    for bad in ("http://h/x", "mqtt://", "mqtt://h:99999", "mqtt://h/a/#", "mqtt://h/a//b"):
        with pytest.raises(argparse.ArgumentTypeError):
            mqtt_target(bad)
    assert camera_name("rtsp://admin:secret@192.168.1.10:554/Streaming/Channels/101") == (
        "192_168_1_10_554_Streaming_Channels_101")  # never the credentials
    assert camera_name("/dev/video0") == "video0"
    assert topic_level("Front Door #2 /+") == "Front_Door_2"
    assert topic_level("///") == "camera"


def test_scan_publishes_status_alerts_and_summary(binary_bundle: Path, rtsp: RtspServer, broker: Mosquitto) -> None:
    """The CLI on a live stream with --mqtt: topics and payloads as stdout's lines; SIGTERM ends it cleanly."""
    subscriber = Subscriber(broker.port, "pfx/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfake_edge.cli", "scan", str(binary_bundle), rtsp.url, "--fps", "2",
         "--alert", "2/3", "--threshold", "0", "--name", "Front Door", "--mqtt-frames",
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}/pfx", "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[dict[str, object]] = []
    signalled = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(json.loads(line))
            if sum("label" in r and "time" in r for r in lines) == 4 and not signalled:
                proc.send_signal(signal.SIGTERM)
                signalled = True
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        subscriber.close()
    assert proc.returncode == 0, err
    statuses = [r["status"] for r in lines if "status" in r]
    alerts = [r for r in lines if "alert" in r]
    assert statuses == ["online", "offline"] and lines[-2]["reason"] == "the watch stopped"
    assert [(a["alert"], a.get("reason")) for a in alerts] == [("start", None), ("end", "stream-end")]
    summary = lines[-1]
    assert summary["frames"] >= 4 and {"dropped", "reconnects", "decoded", "alerts"} <= set(summary)

    def sent(kind: str) -> list[object]:
        return [json.loads(p) for p in subscriber.payloads(f"pfx/Front_Door/{kind}")]

    assert sent("status") == [r for r in lines if "status" in r]
    assert sent("alert") == alerts
    assert subscriber.payloads("pfx/Front_Door/alert/state") == ["ON", "OFF"]
    assert sent("frame") == [r for r in lines if "label" in r and "time" in r]
    assert sent("summary") == [summary]
    assert subscriber.payloads("pfx/available") == ["online", "offline"]
    # retained: a client that subscribes afterwards learns the last status
    late = Subscriber(broker.port, "pfx/#")
    try:
        wait_for(lambda: len(late.messages) >= 3, 10, "the 3 retained messages")
    finally:
        late.close()
    retained = {t: p for t, p, r in late.messages if r}
    assert json.loads(retained["pfx/Front_Door/status"])["status"] == "offline"
    assert retained["pfx/available"] == "offline" and retained["pfx/Front_Door/alert/state"] == "OFF"


def _watch_while(detector: Detector, url: str, publisher: MqttPublisher, done: threading.Event) -> list[FrameResult]:
    """Watch ``url``, sending everything to ``publisher``, until ``done`` is set (bounded to 60 s)."""
    sink = MqttSink(publisher, {url: "cam"}, frames=True)
    options = LiveOptions(sampling=Sampling(fps=5, open_timeout_s=5, read_timeout_s=3),
                          reconnect=Reconnect(attempts=2, initial_s=0.5), duration=60)
    frames = []
    for item in watch(detector, [url], options, stop=done):
        sink(item)
        if isinstance(item, FrameResult):
            frames.append(item)
    return frames


def test_a_broker_that_goes_away_does_not_stall_inference(binary_bundle: Path, rtsp: RtspServer,
                                                          broker: Mosquitto) -> None:
    detector = Detector.load(binary_bundle)
    publisher = MqttPublisher(MqttTarget("127.0.0.1", broker.port, "pfx"), connect_timeout=2, max_reconnects=2)
    done = threading.Event()
    wait_for(publisher.connected.is_set, 20, "the broker connection")
    killed_at: list[int] = []
    frames_after: list[int] = [0]
    original = publisher.send

    def send(camera: str, kind: str, payload: str) -> bool:
        if kind == "frame":
            if not killed_at and publisher.published >= 3:
                broker.kill()
                killed_at.append(publisher.published)
            elif killed_at:
                frames_after[0] += 1
                if frames_after[0] >= 8:
                    done.set()
        return original(camera, kind, payload)

    publisher.send = send  # type: ignore[method-assign]
    frames = _watch_while(detector, rtsp.url, publisher, done)
    publisher.close(flush_timeout=2)
    assert killed_at and frames_after[0] >= 8, "inference stopped after the broker went away"
    assert publisher.dropped > 0  # what could not be sent is counted, not queued forever
    assert len(frames) >= 3 + 8


def test_a_silent_broker_does_not_stall_inference(binary_bundle: Path, rtsp: RtspServer) -> None:
    """A listener that accepts and never answers CONNECT: paho's keepalive gives up, frames go on."""
    listener = SilentListener()
    detector = Detector.load(binary_bundle)
    publisher = MqttPublisher(MqttTarget("127.0.0.1", listener.port, "pfx"), connect_timeout=1, keepalive=1,
                              max_reconnects=1)
    done = threading.Event()
    frames_after: list[int] = [0]
    original = publisher.send

    def send(camera: str, kind: str, payload: str) -> bool:
        if kind == "frame" and publisher.gave_up:
            frames_after[0] += 1
            if frames_after[0] >= 5:
                done.set()
        return original(camera, kind, payload)

    publisher.send = send  # type: ignore[method-assign]
    try:
        frames = _watch_while(detector, rtsp.url, publisher, done)
        publisher.close(flush_timeout=1)
    finally:
        listener.close()
    assert listener.accepted, "paho never connected"
    assert publisher.gave_up and not publisher.connected.is_set()
    assert frames_after[0] >= 5 and len(frames) >= 5
