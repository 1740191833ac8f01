"""Masking credentials in source URLs, ${DEEPFAKE_EDGE_*} placeholders, private files, MQTT URLs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepfake_edge.credentials import MASK, Source, mask_url, read_private_lines, read_private_text
from deepfake_edge.errors import CredentialError

CASES = {
    "rtsp://admin:pw@cam:554/live": "rtsp://admin:***@cam:554/live",
    "rtsp://admin:p%40ss%3Aw@192.168.1.10/Streaming/Channels/101": "rtsp://admin:***@192.168.1.10/Streaming/Channels/101",
    "rtsps://admin:pw@[::1]:322/live": "rtsps://admin:***@[::1]:322/live",
    "rtsp://admin@cam/live": "rtsp://admin@cam/live",  # no password: nothing to hide
    "rtsp://admin:@cam/live": "rtsp://admin:@cam/live",
    "rtsp://cam/live": "rtsp://cam/live",
    # unescaped reserved characters in the password: masked whole, up to the last '@'
    "rtsp://admin:a#b/c@d?e@cam/live": "rtsp://admin:***@cam/live",
    "http://cam/snap?user=admin&password=pw&ch=1": "http://cam/snap?user=admin&password=***&ch=1",
    "http://cam/x?token=t1;pass=t2;pwd=t3#key=t4": "http://cam/x?token=***;pass=***;pwd=***#key=***",
    "https://b.s3.amazonaws.com/x.jpg?X-Amz-Credential=AK%2F1&X-Amz-Signature=ab12&X-Amz-Expires=60":
        "https://b.s3.amazonaws.com/x.jpg?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
    "https://h/live.m3u8?sig=abc&auth=def&apiKey=k&access_token=t&session_token2=s&keyframes=1":
        "https://h/live.m3u8?sig=***&auth=***&apiKey=***&access_token=***&session_token2=***&keyframes=1",
    "https://h/x?token=": "https://h/x?token=",
    "s3://AKID:SECRET@bucket/photos?endpoint_override=127.0.0.1:9000&scheme=http":
        "s3://AKID:***@bucket/photos?endpoint_override=127.0.0.1:9000&scheme=http",
    "rtsp://admin:${DEEPFAKE_EDGE_CAM_PW}@cam/live": "rtsp://admin:***@cam/live",
    # files and devices are never URLs, whatever they hold
    "clips/a:b@c.mp4": "clips/a:b@c.mp4",
    "/dev/video0": "/dev/video0",
    "/srv/x?password=y.mp4": "/srv/x?password=y.mp4",
}


@pytest.mark.parametrize(("url", "shown"), CASES.items())
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert mask_url(shown) == shown  # idempotent


SAFE = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
# Passwords in capitals (and any reserved character), everything else in lower case:
# no capital letter may survive the mask.
SECRET = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@:/?#&=%;!$ ", min_size=1, max_size=20).filter(
    lambda s: any(c.isupper() for c in s))


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["rtsp", "rtsps", "http", "https", "rtmp", "srt", "s3"]), user=SAFE, host=SAFE,
       port=st.none() | st.integers(1, 65535), path=st.lists(SAFE, max_size=3), password=SECRET,
       encoded=st.booleans(), query=st.lists(st.tuples(st.sampled_from(["ch", "subtype", "token", "sig", "Password",
                                                                        "api_key"]), SAFE), max_size=3))
def test_no_password_survives_the_mask(scheme: str, user: str, host: str, port: int | None, path: list[str],
                                       password: str, encoded: bool, query: list[tuple[str, str]]) -> None:
    secret = quote(password, safe="") if encoded else password
    query_text = "&".join(f"{name}={value.upper() if name != 'ch' and name != 'subtype' else value}"
                          for name, value in query)
    url = (f"{scheme}://{user}:{secret}@{host}{'' if port is None else f':{port}'}/{'/'.join(path)}"
           + (f"?{query_text}" if query else ""))
    shown = mask_url(url)
    assert not any(c.isupper() for c in shown.replace("Password=", "")), (url, shown)
    if encoded:  # a well-formed URL is shown exactly, only the secrets replaced
        expected_query = "&".join(f"{n}={v if n in ('ch', 'subtype') else MASK}" for n, v in query)
        assert shown == (f"{scheme}://{user}:{MASK}@{host}{'' if port is None else f':{port}'}/{'/'.join(path)}"
                         + (f"?{expected_query}" if query else ""))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_mask_never_fails_and_leaves_non_urls_alone(text: str) -> None:
    shown = mask_url(text)
    if "://" not in text:
        assert shown == text


def test_source_shows_only_the_masked_name(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source.of("rtsp://admin:hunter2@cam/live")
    assert source.name == str(source) == "rtsp://admin:***@cam/live"
    assert "hunter2" not in repr(source) and "hunter2" not in f"{source}"
    assert source.secret_url() == "rtsp://admin:hunter2@cam/live" and source.has_secrets
    assert Source.of(source) is source
    assert not Source.of("clip.mp4").has_secrets and Source.of("clip.mp4").secret_url() == "clip.mp4"
    message = "Server returned 401 Unauthorized: 'rtsp://admin:hunter2@cam/live' (hunter2)"
    assert source.scrub(message) == "Server returned 401 Unauthorized: 'rtsp://admin:***@cam/live' (***)"


def test_placeholders_are_filled_at_open_from_deepfake_edge_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    template = "rtsp://${DEEPFAKE_EDGE_CAM_USER}:${DEEPFAKE_EDGE_CAM_PW}@cam/${DEEPFAKE_EDGE_PATH}?token=${DEEPFAKE_EDGE_T}"
    source = Source.of(template)  # nothing is read yet
    assert source.name == "rtsp://${DEEPFAKE_EDGE_CAM_USER}:***@cam/${DEEPFAKE_EDGE_PATH}?token=***"
    monkeypatch.setenv("DEEPFAKE_EDGE_CAM_USER", "admin")
    monkeypatch.setenv("DEEPFAKE_EDGE_PATH", "live")
    monkeypatch.setenv("DEEPFAKE_EDGE_T", "tok123")
    monkeypatch.delenv("DEEPFAKE_EDGE_CAM_PW", raising=False)
    with pytest.raises(CredentialError, match=r"DEEPFAKE_EDGE_CAM_PW is not set") as info:
        source.secret_url()
    assert str(info.value).startswith("rtsp://${DEEPFAKE_EDGE_CAM_USER}:***@cam/")
    monkeypatch.setenv("DEEPFAKE_EDGE_CAM_PW", "p@ss:w/rd#1")
    # the password is percent-encoded in the user info (FFmpeg decodes it), used as it is elsewhere
    assert source.secret_url() == "rtsp://admin:p%40ss%3Aw%2Frd%231@cam/live?token=tok123"
    scrubbed = source.scrub(f"cannot open {source.secret_url()}: p@ss:w/rd#1 tok123")
    assert "p@ss" not in scrubbed and "tok123" not in scrubbed and "p%40ss" not in scrubbed
    for bad in ("rtsp://cam/${HOME}", "rtsp://u:${PATH}@cam/x", "rtsp://cam/${deepfake_edge_x}"):
        with pytest.raises(CredentialError, match="not a DEEPFAKE_EDGE_"):
            Source.of(bad)
    assert Source.of("/videos/${HOME}.mp4").secret_url() == "/videos/${HOME}.mp4"  # files are never filled


def test_private_files_are_refused_when_others_can_read_them(tmp_path: Path) -> None:
    path = tmp_path / "sources.txt"
    path.write_text("# cameras\nrtsp://a:b@c/d\n\n  /dev/video0  \n")
    os.chmod(path, 0o644)
    with pytest.raises(CredentialError, match=r"accessible by group or others \(mode 0644\).*chmod 600"):
        read_private_lines(path, "sources file")
    os.chmod(path, 0o640)
    with pytest.raises(CredentialError, match="mode 0640"):
        read_private_text(path, "sources file")
    os.chmod(path, 0o600)
    assert read_private_lines(path, "sources file") == ["rtsp://a:b@c/d", "/dev/video0"]
    with pytest.raises(CredentialError, match="cannot read the sources file"):
        read_private_text(tmp_path / "missing", "sources file")


def test_mqtt_urls_take_a_user_and_tls_and_refuse_a_password() -> None:
    pytest.importorskip("paho.mqtt.client", reason="the [mqtt] extra")
    from deepfake_edge.video.mqtt import MqttTarget, mqtt_target

    assert mqtt_target("mqtt://dfe@nvr.local/cams") == MqttTarget("nvr.local", 1883, "cams", "dfe", False)
    assert mqtt_target("mqtts://dfe@nvr.local") == MqttTarget("nvr.local", 8883, "deepfake-edge", "dfe", True)
    assert mqtt_target("mqtts://10.0.0.2:9883/x") == MqttTarget("10.0.0.2", 9883, "x", None, True)
    assert mqtt_target("mqtts://dfe@h").where == "mqtts://h:8883"
    for url in ("mqtt://dfe:Hunter2@h/x", "mqtts://dfe:Hunter2@h:8883", "mqtt://h/x?token=Hunter2"):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            mqtt_target(url)
        assert "Hunter2" not in str(info.value) and "DEEPFAKE_EDGE_MQTT_PASSWORD" in str(info.value)
    with pytest.raises(argparse.ArgumentTypeError, match="expected mqtt"):
        mqtt_target("http://h/x")


def test_errors_chain_to_library_exceptions_only_without_secrets() -> None:
    original = OSError("cannot open rtsp://admin:hunter2@cam/live")
    assert Source.of("rtsp://admin:hunter2@cam/live").cause(original) is None
    assert Source.of("clip.mp4").cause(original) is original
    with pytest.raises(KeyError):
        Source.of("rtsp://u:${DEEPFAKE_EDGE_NEVER_SET_X}@cam/x").secret_url(lambda name, message: KeyError(message))


def test_a_pipe_passes_the_permission_check() -> None:
    """``--mqtt-password-file <(pass show mqtt)``: the shell hands over a pipe, never a file on disk."""
    read, write = os.pipe()
    try:
        os.write(write, b"from-a-pipe\n")
        os.close(write)
        assert read_private_text(f"/dev/fd/{read}", "MQTT password file") == "from-a-pipe\n"
    finally:
        os.close(read)
