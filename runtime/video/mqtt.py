"""Live results to an MQTT broker (paho-mqtt), under ``<prefix>/<camera>/...``.

Topics (payloads are the JSON lines ``deepfake-edge scan`` prints):

=============================  =====  ======  =============================================
topic                          QoS    retain  payload
=============================  =====  ======  =============================================
``<prefix>/available``         1      yes     ``online`` / ``offline`` (the broker sends
                                              ``offline`` as last will if we vanish)
``<prefix>/<camera>/status``   1      yes     ``{"source", "status": "online"|"offline", ...}``
``<prefix>/<camera>/alert``    1      no      an alert start or end (see ``alerts.Alert``)
``<prefix>/<camera>/alert/state`` 1   yes     ``ON`` while an alert is open, else ``OFF``
``<prefix>/<camera>/frame``    0      no      every frame result (``--mqtt-frames`` only)
``<prefix>/<camera>/summary``  1      no      the source's summary when it stops
=============================  =====  ======  =============================================

Credentials: ``mqtt://user@host/prefix`` logs in as ``user`` with the password from
:func:`mqtt_password` (``DEEPFAKE_EDGE_MQTT_PASSWORD`` or a private file), never from the
URL, which ``ps`` shows to every local user. ``mqtts://`` (port 8883) speaks TLS and
verifies the broker's certificate against the system's CAs or ``ca_file``.

Publishing never blocks the caller: paho's network thread does the I/O, and
its outbox of QoS 1 messages is bounded (``outbox``); a full outbox or an
unconnected client drops the message and counts it. Reconnects use paho's
exponential backoff and stop after ``max_reconnects`` failures in a row; from
then on every message is dropped (and counted), inference goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..credentials import mask_url, read_private_text
from ..errors import CredentialError
from ..extras import require_extra
from .alerts import Alert
from .live import StatusChange
from .scan import FrameResult

if TYPE_CHECKING:
    import paho.mqtt.client

    from .watch import LiveItem

__all__ = [
    "DEFAULT_PREFIX", "PASSWORD_VARIABLE", "MqttPublisher", "MqttSink", "MqttTarget", "camera_name", "mqtt_password",
    "mqtt_target", "topic_level",
]

DEFAULT_PREFIX = "deepfake-edge"
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
PASSWORD_VARIABLE = "DEEPFAKE_EDGE_MQTT_PASSWORD"  # noqa: S105 - the variable's name, not a password

# MQTT forbids wildcards (+ #) and "/" inside a level; Frigate and Home Assistant names
# keep to letters, digits, "_" and "-", which also reads well in a topic.
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class MqttTarget:
    """Where to publish: ``mqtt[s]://[user@]host[:port][/prefix]``; ``tls`` for ``mqtts``. No password here."""

    host: str
    port: int = DEFAULT_PORT
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    tls: bool = False

    @property
    def where(self) -> str:
        """How log lines name the broker (never a password: the target holds none)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def mqtt_target(text: str) -> MqttTarget:
    """The argument type of ``--mqtt``: ``mqtt[s]://[user@]host[:port][/prefix]``
    (port 1883, or 8883 for ``mqtts``; prefix deepfake-edge). A password in the URL is refused."""
    shown = mask_url(text)
    if shown != text:
        raise argparse.ArgumentTypeError(
            f"{shown}: a password in the --mqtt URL would be visible to every local user (ps); give it in "
            f"{PASSWORD_VARIABLE} or --mqtt-password-file instead")
    parts = urlsplit(text)
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    except ValueError:
        port = -1
    prefix = parts.path.strip("/")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or port < 1:
        raise argparse.ArgumentTypeError(f"expected mqtt[s]://[user@]host[:port][/prefix], got {text!r}")
    if any(char in text for char in "+#?\0") or "//" in prefix:  # '#' and '?' would end the URL's path
        raise argparse.ArgumentTypeError(f"the topic prefix may not hold '+', '#' or empty levels, got {prefix!r}")
    username = unquote(parts.username) if parts.username else None
    return MqttTarget(parts.hostname, port, prefix or DEFAULT_PREFIX, username, tls)


def mqtt_password(password_file: str | os.PathLike[str] | None = None) -> str | None:
    """The broker password: the first line of ``password_file`` (which group and others may not read),
    else ``$DEEPFAKE_EDGE_MQTT_PASSWORD``, else None. Raises ``CredentialError`` for a bad file."""
    if password_file is not None:
        lines = read_private_text(password_file, "MQTT password file").splitlines()
        if not lines or not lines[0]:
            raise CredentialError(str(password_file), "the MQTT password file is empty; its first line is the password")
        return lines[0]
    return os.environ.get(PASSWORD_VARIABLE) or None


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho (2.2) leaves that socket open, one per attempt."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(*, ca_file: str | os.PathLike[str] | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The client's TLS context: the broker's certificate and name verified against ``ca_file``
    (else the system's CAs); ``insecure`` verifies nothing (the caller warns)."""
    context = ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
    context.sslsocket_class = _ClosingSSLSocket
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def topic_level(name: str) -> str:
    """``name`` as one safe topic level: runs of other characters become one ``_``."""
    level = _TOPIC_UNSAFE.sub("_", name).strip("_")
    return level or "camera"


def camera_name(source: str) -> str:
    """A topic-safe camera name derived from a source: host, port and path of a URL (never its
    credentials), the device name of ``/dev/videoN``, or a file's name without suffix."""
    parts = urlsplit(source)
    if parts.scheme and parts.netloc:
        port = f"_{parts.port}" if parts.port else ""
        return topic_level(f"{parts.hostname}{port}{parts.path}")
    stem = source.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return topic_level(stem)


class MqttPublisher:
    """Publishes JSON payloads for named cameras; see the module docstring for topics.

    ``password`` logs in as ``target.username``; ``tls`` (needed by ``mqtts``, see :func:`tls_context`)
    encrypts. ``log`` receives one line per connection change (for stderr). Thread-safe;
    call :meth:`close` at the end (it waits at most ``flush_timeout`` s for QoS 1
    messages still in flight).
    """

    def __init__(
        self,
        target: MqttTarget,
        *,
        connect_timeout: float = 5.0,
        keepalive: int = 10,
        max_reconnects: int = 5,
        outbox: int = 1000,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        require_extra("mqtt")
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.target = target
        self.max_reconnects = max_reconnects
        self.published = 0
        self.dropped = 0
        self._log = log
        self._failures = 0
        self._gave_up = False
        self._refused = False  # the broker refused the last CONNECT: its disconnect is not a second failure
        self._lock = threading.Lock()
        self._pending: deque[Any] = deque(maxlen=outbox)  # QoS 1 MQTTMessageInfo, for close()
        self.connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect_timeout = connect_timeout
        client.max_queued_messages_set(outbox)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        if password is not None and target.username is None:
            raise CredentialError(target.where, "a password needs a user name: mqtt[s]://USER@host/...")
        if target.username is not None:
            client.username_pw_set(target.username, password)
        if target.tls:
            client.tls_set_context(tls or tls_context())
            client.tls_insecure_set(tls is not None and tls.verify_mode == ssl.CERT_NONE)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client: paho.mqtt.client.Client = client
        client.connect_async(target.host, target.port, keepalive=keepalive)
        client.loop_start()

    def topic(self, *levels: str) -> str:
        return "/".join((self.target.prefix, *levels))

    @property
    def gave_up(self) -> bool:
        return self._gave_up

    # -- paho callbacks (its network thread) -------------------------------
    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            hint = ""
            if str(reason).lower() in ("not authorized", "bad user name or password"):
                hint = f": check the user name and the password ({PASSWORD_VARIABLE} or --mqtt-password-file)"
            self._refused = True
            self._failed(f"refused ({reason}{hint})")
            return
        self._failures = 0
        self.connected.set()
        self._log(f"mqtt: connected to {self.target.where}")
        client.publish(self.topic("available"), "online", qos=1, retain=True)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around the connect: that error says why.
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLCertVerificationError):
            self._failed(f"the broker's TLS certificate is not trusted ({error.verify_message}); "
                         "give its CA with --mqtt-ca FILE")
        else:
            self._failed("cannot connect" + (f" ({error})" if error is not None else ""))

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connected.clear()
        refused, self._refused = self._refused, False
        if self._gave_up or not reason.is_failure or refused:
            return  # our own disconnect(), or the end of a refused connect (counted in _on_connect)
        self._failed(f"connection lost ({reason})")

    def _failed(self, what: str) -> None:
        self.connected.clear()
        self._failures += 1
        where = self.target.where
        if self._failures > self.max_reconnects:
            self._gave_up = True
            self._log(f"mqtt: {where}: {what}; giving up after {self.max_reconnects} reconnects, "
                      "results are no longer published")
            self._client.disconnect()  # ends paho's loop: no more reconnects
        else:
            self._log(f"mqtt: {where}: {what}; reconnect {self._failures} of {self.max_reconnects}")

    # -- publishing (any thread) -------------------------------------------
    def publish(self, topic: str, payload: str, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False (and counted as dropped) when it cannot be queued."""
        import paho.mqtt.client as mqtt

        with self._lock:
            if self._gave_up or (qos == 0 and not self.connected.is_set()):
                self.dropped += 1
                return False
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued for reconnect
                self.dropped += 1
                return False
            self.published += 1
            if qos:
                self._pending.append(info)
            return True

    def send(self, camera: str, kind: str, payload: str) -> bool:
        """``kind``: "status", "alert", "alert/state", "frame" or "summary" (QoS and retain per the table)."""
        qos, retain = _KINDS[kind]
        return self.publish(self.topic(camera, kind), payload, qos=qos, retain=retain)

    def close(self, flush_timeout: float = 5.0) -> None:
        """Wait up to ``flush_timeout`` s for QoS 1 messages in flight, then disconnect and stop paho's thread."""
        deadline = time.monotonic() + flush_timeout
        with self._lock:
            pending, self._gave_up = list(self._pending), True
        if self.connected.is_set():
            pending.append(self._client.publish(self.topic("available"), "offline", qos=1, retain=True))
            for info in pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.connected.is_set():
                    break
                try:
                    info.wait_for_publish(timeout=remaining)
                except (RuntimeError, ValueError):  # never queued (outbox full, not connected)
                    continue
        self._client.disconnect()
        self._client.loop_stop()


class MqttSink:
    """Sends what :func:`~deepfake_edge.video.watch.watch` yields to the topics of its camera.

    ``cameras`` maps each source to its camera name (a topic level); frame results are sent
    only with ``frames=True``. Errors go to the ``summary`` topic: they are a source's last word.
    """

    def __init__(self, publisher: MqttPublisher, cameras: dict[str, str], *, frames: bool = False) -> None:
        self.publisher = publisher
        self.cameras = cameras
        self.frames = frames

    def __call__(self, item: LiveItem) -> None:
        camera = self.cameras.get(item.source) or camera_name(item.source)
        payload = json.dumps(item.to_dict())
        if isinstance(item, Alert):
            self.publisher.send(camera, "alert", payload)
            self.publisher.send(camera, "alert/state", "ON" if item.event == "start" else "OFF")
        elif isinstance(item, StatusChange):
            self.publisher.send(camera, "status", payload)
        elif isinstance(item, FrameResult):
            if self.frames:
                self.publisher.send(camera, "frame", payload)
        else:
            self.publisher.send(camera, "summary", payload)


#: kind -> (QoS, retain)
_KINDS: dict[str, tuple[int, bool]] = {
    "status": (1, True),
    "alert": (1, False),
    "alert/state": (1, True),
    "frame": (0, False),
    "summary": (1, False),
}
