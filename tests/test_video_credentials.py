"""Camera and broker passwords against the real parts: a GStreamer RTSP server that requires
Basic auth, a Mosquitto broker with a password_file and a TLS listener (certificates from trustme).

Every channel a user sees (stdout, stderr, every MQTT message, retained ones included, the
process's argv) is searched for each password, raw and percent-encoded, and for a distinctive
piece of it: none is found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("av", reason="live-stream tests need the [video] extra (PyAV)")
mqtt = pytest.importorskip("paho.mqtt.client", reason="MQTT tests need the [mqtt] extra (paho-mqtt)")
trustme = pytest.importorskip("trustme", reason="the TLS tests make their certificates with trustme ([test] extra)")

from deepfake_edge.cli import main
from deepfake_edge.cli.common import EXIT_USAGE
from deepfake_edge.video.mqtt import MqttPublisher, MqttTarget, tls_context

from live_servers import Mosquitto, RtspServer, make_h264, wait_for

CAM_USER = "admin"
CAM_PW = "Cam#Pw/9@x:Sekr3t"  # reserved URL characters: it must travel percent-encoded
MQ_PW = "Mq-Sekr3t-pw"
READER_PW = "reader-pw"
WRONG_CAM_PW = "Wrong-Sekr3t"
SECRETS = (CAM_PW, quote(CAM_PW, safe=""), MQ_PW, WRONG_CAM_PW, "Sekr3t")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_h264(tmp_path_factory.mktemp("credentials") / "clip.mp4", seconds=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    root = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {name: root / f"{name}.pem" for name in ("ca", "other_ca", "chain", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    with paths["chain"].open("wb") as out:
        for pem in cert.cert_chain_pems:
            out.write(pem.bytes())
    return paths


@pytest.fixture(scope="module")
def camera(clip: Path) -> Iterator[RtspServer]:
    server = RtspServer(clip, auth=(CAM_USER, CAM_PW), mounts=("cam", "garage", "wrong")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Path]) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path_factory.mktemp("broker"), users={"dfe": MQ_PW, "reader": READER_PW},
                       tls=(certs["chain"], certs["key"])).start()
    yield server
    server.kill()


class Subscriber:
    """A paho client logged in as "reader" on the plain listener, recording everything under ``topic``."""

    def __init__(self, port: int, topic: str = "#") -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.username_pw_set("reader", READER_PW)
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, m.payload.decode(errors="replace"), m.retain))
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def text(self) -> str:
        return "\n".join(f"{topic} {payload}" for topic, payload, _ in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def cam_url(camera: RtspServer, password: str, mount: str = "cam") -> str:
    return f"rtsp://{CAM_USER}:{password}@127.0.0.1:{camera.port}/{mount}"


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def run_scan(bundle: Path, args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str, str, str]:
    """``deepfake-edge scan`` in a subprocess: (exit code, stdout, stderr, its argv as ps shows it)."""
    proc = subprocess.Popen([sys.executable, "-m", "deepfake_edge.cli", "scan", str(bundle), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return proc.returncode, out, err, cmdline


def assert_no_secret(channel: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {channel}"


def test_passwords_appear_in_no_output_message_or_argv(binary_bundle: Path, camera: RtspServer, broker: Mosquitto,
                                                       certs: dict[str, Path], tmp_path: Path) -> None:
    """Three live sources on the password-protected camera: a ${DEEPFAKE_EDGE_*} placeholder on the
    command line, the password percent-encoded in a private --sources-file, and a wrong password
    (FFmpeg's error repeats that URL). Results go to mqtts:// with a user, verified by --mqtt-ca."""
    sources = private_file(tmp_path / "cameras.txt", "# garage and a camera with a wrong password\n"
                                                    f"{cam_url(camera, quote(CAM_PW, safe=''), 'garage')}\n\n"
                                                    f"{cam_url(camera, WRONG_CAM_PW, 'wrong')}\n")
    subscriber = Subscriber(broker.port)
    try:
        code, out, err, argv = run_scan(binary_bundle, [
            cam_url(camera, "${DEEPFAKE_EDGE_CAM_PW}"), "--sources-file", str(sources),
            "--name", "door", "--name", "garage", "--name", "wrong",
            "--mqtt", f"mqtts://dfe@127.0.0.1:{broker.tls_port}/pfx", "--mqtt-ca", str(certs["ca"]), "--mqtt-frames",
            "--fps", "2", "--max-frames", "4", "--alert", "1/2", "--threshold", "0", "--duration", "60",
            "--timeout", "5", "--reconnect-attempts", "1", "--reconnect-delay", "0.5",
        ], env={"DEEPFAKE_EDGE_CAM_PW": CAM_PW, "DEEPFAKE_EDGE_MQTT_PASSWORD": MQ_PW})
        wait_for(lambda: any(t == "pfx/available" and p == "offline" for t, p, _ in subscriber.messages), 10,
                 "the last message")
    finally:
        subscriber.close()
    late = Subscriber(broker.port)  # what the broker keeps for every later subscriber
    try:
        wait_for(lambda: len(late.messages) >= 4, 10, "the retained messages")
    finally:
        late.close()
    lines = [json.loads(line) for line in out.splitlines()]
    shown = f"rtsp://{CAM_USER}:***@127.0.0.1:{camera.port}/"
    assert code == 1, err  # the wrong password is a failed source
    assert {line["source"] for line in lines} == {shown + mount for mount in ("cam", "garage", "wrong")}
    frames = [line for line in lines if "label" in line and "time" in line]
    summaries = [line for line in lines if "aggregate" in line]
    assert len(frames) == 8 and len(summaries) == 2  # both right passwords opened the camera
    failure = next(line for line in lines if "error" in line)
    assert "401 Unauthorized" in failure["message"] and failure["message"].startswith(shown + "wrong: ")
    assert "mqtt: connected to mqtts://127.0.0.1" in err
    assert len([m for m in subscriber.messages if m[0] == "pfx/door/frame"]) == 4  # the broker got the results
    assert any(retain for _, _, retain in late.messages)
    for channel, text in (("stdout", out), ("stderr", err), ("MQTT messages", subscriber.text()),
                          ("retained MQTT messages", late.text()), ("argv (ps)", argv)):
        assert_no_secret(channel, text)


def test_wrong_broker_password_is_one_clear_error_and_classification_goes_on(
        binary_bundle: Path, camera: RtspServer, broker: Mosquitto) -> None:
    subscriber = Subscriber(broker.port, "wrongpw/#")
    try:
        code, out, err, _ = run_scan(binary_bundle, [
            cam_url(camera, "${DEEPFAKE_EDGE_CAM_PW}"), "--mqtt", f"mqtt://dfe@127.0.0.1:{broker.port}/wrongpw",
            "--fps", "2", "--max-frames", "8", "--duration", "60", "--timeout", "5", "--mqtt-reconnects", "1",
        ], env={"DEEPFAKE_EDGE_CAM_PW": CAM_PW, "DEEPFAKE_EDGE_MQTT_PASSWORD": "Wrong-Sekr3t"})
    finally:
        subscriber.close()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len([line for line in lines if "label" in line and "time" in line]) == 8 and "frames" in lines[-1]
    refused = [line for line in err.splitlines() if "refused (Not authorized" in line]
    assert refused and "check the user name and the password (DEEPFAKE_EDGE_MQTT_PASSWORD" in refused[0]
    assert "giving up after 1 reconnects" in err
    assert subscriber.messages == []  # nothing was published
    assert_no_secret("stderr", err)


def test_right_password_from_a_private_file_publishes(binary_bundle: Path, camera: RtspServer, broker: Mosquitto,
                                                      tmp_path: Path) -> None:
    password_file = private_file(tmp_path / "mqtt-password", MQ_PW + "\n")
    subscriber = Subscriber(broker.port, "filepw/#")
    try:
        code, out, err, argv = run_scan(binary_bundle, [
            cam_url(camera, "${DEEPFAKE_EDGE_CAM_PW}"), "--mqtt", f"mqtt://dfe@127.0.0.1:{broker.port}/filepw",
            "--mqtt-password-file", str(password_file), "--name", "door", "--fps", "2", "--max-frames", "3",
            "--duration", "60", "--timeout", "5",
        ], env={"DEEPFAKE_EDGE_CAM_PW": CAM_PW})
        wait_for(lambda: any(t == "filepw/door/summary" for t, _, _ in subscriber.messages), 10, "the summary")
    finally:
        subscriber.close()
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert [json.loads(p) for t, p, _ in subscriber.messages if t == "filepw/door/summary"] == [summary]
    assert [json.loads(p)["status"] for t, p, _ in subscriber.messages if t == "filepw/door/status"] == [
        "online", "offline"]
    for channel, text in (("stdout", out), ("stderr", err), ("MQTT", subscriber.text()), ("argv", argv)):
        assert_no_secret(channel, text)


def test_a_broker_certificate_from_an_unknown_ca_is_refused(binary_bundle: Path, camera: RtspServer,
                                                            broker: Mosquitto) -> None:
    """mqtts:// verifies by default: the test CA is in no system store, so nothing is sent."""
    subscriber = Subscriber(broker.port, "badca/#")
    try:
        code, out, err, _ = run_scan(binary_bundle, [
            cam_url(camera, "${DEEPFAKE_EDGE_CAM_PW}"), "--mqtt", f"mqtts://dfe@127.0.0.1:{broker.tls_port}/badca",
            "--fps", "2", "--max-frames", "6", "--duration", "60", "--timeout", "5", "--mqtt-reconnects", "1",
            "--mqtt-timeout", "10",  # a handshake on a loaded machine can take seconds
        ], env={"DEEPFAKE_EDGE_CAM_PW": CAM_PW, "DEEPFAKE_EDGE_MQTT_PASSWORD": MQ_PW})
    finally:
        subscriber.close()
    assert code == 0, err
    assert len([line for line in out.splitlines() if '"label"' in line]) == 7  # 6 frames and the summary
    assert "the broker's TLS certificate is not trusted (unable to get local issuer certificate)" in err
    assert subscriber.messages == []


def test_tls_with_the_right_ca_another_ca_and_insecure(broker: Mosquitto, certs: dict[str, Path]) -> None:
    """The publisher alone: the right CA connects, another CA is refused, --mqtt-insecure connects unverified."""
    target = MqttTarget("127.0.0.1", broker.tls_port or 0, "pfx", "dfe", tls=True)
    outcomes = {}
    contexts = {"right": tls_context(ca_file=certs["ca"]), "other": tls_context(ca_file=certs["other_ca"]),
                "insecure": tls_context(insecure=True)}
    for name, context in contexts.items():
        lines: list[str] = []
        publisher = MqttPublisher(target, password=MQ_PW, tls=context, connect_timeout=10, max_reconnects=0,
                                  log=lines.append)
        deadline = time.monotonic() + 20
        while not (publisher.connected.is_set() or publisher.gave_up) and time.monotonic() < deadline:
            time.sleep(0.05)
        outcomes[name] = publisher.connected.is_set()
        publisher.close(flush_timeout=1)
        if name == "other":
            assert "not trusted" in lines[0], lines
    assert outcomes == {"right": True, "other": False, "insecure": True}


def test_bad_credentials_setups_fail_before_any_work(binary_bundle: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPFAKE_EDGE_CAM_PW", raising=False)
    scan = ["scan", str(binary_bundle)]
    assert main([*scan, "rtsp://admin:${DEEPFAKE_EDGE_CAM_PW}@127.0.0.1:9/cam"]) == EXIT_USAGE
    assert "the environment variable DEEPFAKE_EDGE_CAM_PW is not set" in capsys.readouterr().err
    assert main([*scan, "rtsp://127.0.0.1:9/${HOME}"]) == EXIT_USAGE
    assert "not a DEEPFAKE_EDGE_* placeholder" in capsys.readouterr().err
    readable = tmp_path / "cameras.txt"
    readable.write_text(f"rtsp://admin:{WRONG_CAM_PW}@127.0.0.1:9/cam\n")
    readable.chmod(0o644)
    assert main([*scan, "--sources-file", str(readable)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "accessible by group or others (mode 0644)" in err and f"chmod 600 {readable}" in err
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(MQ_PW)
    password_file.chmod(0o604)
    assert main([*scan, "/dev/video9", "--mqtt", "mqtt://dfe@127.0.0.1:9",
                 "--mqtt-password-file", str(password_file)]) == EXIT_USAGE
    assert "mode 0604" in capsys.readouterr().err
    assert main([*scan, "/dev/video9", "--mqtt", "mqtt://127.0.0.1:9", "--mqtt-insecure"]) == EXIT_USAGE
    assert "need an mqtts:// broker" in capsys.readouterr().err
    monkeypatch.setenv("DEEPFAKE_EDGE_MQTT_PASSWORD", MQ_PW)
    assert main([*scan, "/dev/video9", "--mqtt", "mqtt://127.0.0.1:9"]) == EXIT_USAGE
    assert "$DEEPFAKE_EDGE_MQTT_PASSWORD gives a broker password, but the --mqtt URL has no user" in (
        capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_info:
        main([*scan, "/dev/video9", "--mqtt", f"mqtt://dfe:{MQ_PW}@127.0.0.1:9"])
    assert exit_info.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    assert "DEEPFAKE_EDGE_MQTT_PASSWORD" in captured.err
    assert_no_secret("stderr", captured.out + captured.err)


def test_the_python_api_reports_an_unset_placeholder_as_the_source_s_error(
        binary_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_edge import Detector
    from deepfake_edge.errors import VideoOpenError
    from deepfake_edge.video import LiveOptions, Sampling, VideoError, scan, watch
    from deepfake_edge.video.live import Reconnect

    monkeypatch.delenv("DEEPFAKE_EDGE_UNSET_PW", raising=False)
    detector = Detector.load(binary_bundle)
    url = "rtsp://admin:${DEEPFAKE_EDGE_UNSET_PW}@127.0.0.1:9/cam"
    options = LiveOptions(sampling=Sampling(open_timeout_s=2, read_timeout_s=2), reconnect=Reconnect(attempts=0),
                          duration=30)
    for items in (list(scan(detector, url)), [i for i in watch(detector, [url], options) if isinstance(i, VideoError)]):
        error = items[-1]
        assert isinstance(error, VideoError) and isinstance(error.error, VideoOpenError)
        assert error.to_dict()["message"] == ("rtsp://admin:***@127.0.0.1:9/cam: the environment variable "
                                              "DEEPFAKE_EDGE_UNSET_PW is not set (it fills the "
                                              "${DEEPFAKE_EDGE_UNSET_PW} placeholder)")


def test_a_wrong_camera_password_raises_an_error_whose_traceback_holds_no_url(camera: RtspServer) -> None:
    """FFmpeg's exception repeats the URL with the password: ours is not chained to it."""
    import traceback

    from deepfake_edge.errors import VideoOpenError
    from deepfake_edge.video import Sampling, VideoReader

    with pytest.raises(VideoOpenError) as info:
        VideoReader(cam_url(camera, WRONG_CAM_PW), Sampling(open_timeout_s=5, read_timeout_s=5))
    assert str(info.value) == (f"rtsp://{CAM_USER}:***@127.0.0.1:{camera.port}/cam: cannot open "
                               "(Server returned 401 Unauthorized (authorization failed))")
    assert_no_secret("the traceback", "".join(traceback.format_exception(info.value)))
    with VideoReader(cam_url(camera, quote(CAM_PW, safe="")), Sampling(open_timeout_s=5, read_timeout_s=5)) as reader:
        assert reader.source == f"rtsp://{CAM_USER}:***@127.0.0.1:{camera.port}/cam"
        assert next(reader.frames())[1].width == 96  # the right password opens the camera


def test_a_token_in_an_http_source_is_masked_in_every_line(binary_bundle: Path, clip: Path) -> None:
    """A signed HTTP URL (Python's own HTTP server ignores the query): results and the 404 of a
    missing file show ``token=***``, never the token."""
    from live_servers import HttpFileServer

    server = HttpFileServer(clip.parent)
    try:
        good, missing = (server.url(name) + f"?channel=1&token={WRONG_CAM_PW}" for name in (clip.name, "nope.mp4"))
        code, out, err, _ = run_scan(binary_bundle, [good, missing, "--fps", "1", "--max-frames", "3",
                                                     "--timeout", "5", "--reconnect-attempts", "0"], env={})
    finally:
        server.close()
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1, err
    assert {line["source"] for line in lines} == {server.url(clip.name) + "?channel=1&token=***",
                                                  server.url("nope.mp4") + "?channel=1&token=***"}
    assert len([line for line in lines if "label" in line and "time" in line]) == 3
    assert "404 Not Found" in next(line["message"] for line in lines if "error" in line)
    assert_no_secret("stdout", out)
    assert_no_secret("stderr", err)


def test_a_source_done_at_max_frames_stops_its_reader(binary_bundle: Path, camera: RtspServer) -> None:
    """Its reader thread would go on decoding until the process exits, where a thread inside
    FFmpeg made ``scan`` die with SIGSEGV after its last line."""
    from deepfake_edge import Detector
    from deepfake_edge.video import LiveOptions, LiveSummary, Sampling, watch

    options = LiveOptions(sampling=Sampling(fps=2, open_timeout_s=5, read_timeout_s=5), max_frames=2, duration=60)
    items = list(watch(Detector.load(binary_bundle), [cam_url(camera, quote(CAM_PW, safe=""))], options))
    assert isinstance(items[-1], LiveSummary) and items[-1].summary.frames == 2
    assert not [t.name for t in threading.enumerate() if t.name.startswith("deepfake-edge-live")]
