"""The live half of ``deepfake-edge scan``: stream URLs and capture devices, alerts, MQTT.

Live sources are watched together until each gives up, ``--duration`` seconds pass,
``--max-frames`` frames were classified, or SIGINT/SIGTERM arrives; then each prints
its summary.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CredentialError
from .common import count, non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    from ..credentials import Source
    from ..detector import Detector
    from ..video.alerts import Alert

__all__ = ["EPILOG", "add_live_options", "check_mqtt_options", "mqtt_tls", "watch_sources"]

EPILOG = """\
live streams (rtsp://, rtsps://, http(s)://, udp://, tcp://, /dev/videoN):
  Only the newest frame is classified (no backlog; the summary counts 'dropped' frames).
  A stream that stalls or drops is reopened with exponential backoff:
  {"source": ..., "status": "offline", "time": 12.3, "reason": ..., "retry_in": 1.0}
  {"source": ..., "status": "online", "time": 16.0, "reconnects": 1}
  An alert starts when K of the last N sampled frames are at or over the threshold
  and ends when fewer are (--alert K/N):
  {"source": ..., "alert": "start"|"end", "id": 1, "start": 20.0, "end": 31.0,
   "peak_score": 0.97, "peak_time": 24.0, "frames": 12, "high_frames": 10, ...}
  Times are seconds since the watch started. --duration bounds the watch in
  wall-clock seconds; SIGINT/SIGTERM stop it, and every source prints its summary.
  --mqtt publishes to <prefix>/<camera>/{status,alert,alert/state,summary[,frame]}.

credentials:
  A source URL may hold ${DEEPFAKE_EDGE_NAME} placeholders, filled from the
  environment when the source is opened (only names starting DEEPFAKE_EDGE_):
    DEEPFAKE_EDGE_CAM_PW=... deepfake-edge scan B 'rtsp://admin:${DEEPFAKE_EDGE_CAM_PW}@cam/live'
  Output, MQTT and errors show every source with its password and secret query
  values (token, key, sig, ...) as ***. The MQTT password comes from
  DEEPFAKE_EDGE_MQTT_PASSWORD or --mqtt-password-file, never from the URL."""


def add_live_options(parser: argparse.ArgumentParser) -> None:
    from ..video.alerts import alert_rule
    from ..video.mqtt import mqtt_target

    live = parser.add_argument_group("live streams")
    live.add_argument("--alert", type=alert_rule, default=(3, 5), metavar="K/N",
                      help="alert when K of the last N sampled frames are at or over the threshold (default: 3/5)")
    live.add_argument("--reconnect-attempts", type=count(0), default=5, metavar="N",
                      help="failed reconnects in a row before a stream is given up (default: 5; 0: never reconnect)")
    live.add_argument("--reconnect-delay", type=positive_float, default=1.0, metavar="S",
                      help="wait before the first reconnect, doubled after each failure (default: 1)")
    live.add_argument("--reconnect-max-delay", type=positive_float, default=30.0, metavar="S",
                      help="longest wait between reconnects (default: 30)")
    live.add_argument("--mqtt", type=mqtt_target, default=None, metavar="mqtt[s]://[USER@]HOST[:PORT][/PREFIX]",
                      help="publish status, alerts and summaries to this broker (needs the [mqtt] extra; "
                           "port 1883, or 8883 with TLS for mqtts://, and prefix deepfake-edge by default). "
                           "USER logs in with the password from $DEEPFAKE_EDGE_MQTT_PASSWORD or --mqtt-password-file; "
                           "a password in the URL is refused")
    live.add_argument("--mqtt-password-file", default=None, metavar="FILE",
                      help="the broker password is this file's first line (the file must not be readable by "
                           "group or others: chmod 600); overrides $DEEPFAKE_EDGE_MQTT_PASSWORD")
    live.add_argument("--mqtt-ca", default=None, metavar="FILE",
                      help="PEM file of the CA that signed the broker's certificate (mqtts://; default: the "
                           "system's CAs)")
    live.add_argument("--mqtt-insecure", action="store_true",
                      help="mqtts:// without verifying the broker's certificate or name (warns; the connection "
                           "is encrypted but anyone in the path can impersonate the broker)")
    live.add_argument("--name", action="append", default=[], metavar="CAMERA",
                      help="camera name in MQTT topics, once per live source in order "
                           "(default: derived from the URL or device)")
    live.add_argument("--mqtt-frames", action="store_true", help="also publish every frame result (QoS 0)")
    live.add_argument("--mqtt-timeout", type=non_negative_float, default=5.0, metavar="S",
                      help="connect timeout to the broker, and the wait for unsent alerts at the end (default: 5)")
    live.add_argument("--mqtt-reconnects", type=positive_int, default=5, metavar="N",
                      help="failed broker reconnects in a row before publishing stops (default: 5)")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the watch then ends cleanly) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in handlers:
        signal.signal(sig, lambda _sig, _frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _alert_overlay(alert: Alert, camera: str, directory: Path, detector: Detector) -> Path:
    """The alert's peak frame with its evidence map, as ``directory/<camera>-alert<id>-<event>.evidence.png``."""
    from ..evidence import save_overlay

    peak = alert.peak_frame
    if peak is None:
        raise ValueError(f"{camera}: alert {alert.id} has no peak frame to draw")
    return save_overlay(peak.prediction, peak.image, directory, f"{camera}-alert{alert.id}-{alert.event}",
                        positive_label=detector.require_evidence())


def check_mqtt_options(args: argparse.Namespace) -> str | None:
    """What is wrong with the --mqtt-* options together (None when nothing is), before any work starts."""
    target = args.mqtt
    if target is None:
        return None
    if (args.mqtt_ca or args.mqtt_insecure) and not target.tls:
        return "--mqtt-ca and --mqtt-insecure need an mqtts:// broker"
    if args.mqtt_ca and args.mqtt_insecure:
        return "--mqtt-ca and --mqtt-insecure contradict each other"
    from ..video.mqtt import PASSWORD_VARIABLE, mqtt_password

    try:
        password = mqtt_password(args.mqtt_password_file)  # read again when connecting; checked before the model loads
        mqtt_tls(args, warn=False)
    except CredentialError as exc:
        return str(exc)
    if password is not None and target.username is None:
        given = "--mqtt-password-file" if args.mqtt_password_file else f"${PASSWORD_VARIABLE}"
        return f"{given} gives a broker password, but the --mqtt URL has no user: mqtt[s]://USER@host/..."
    return None


def mqtt_tls(args: argparse.Namespace, *, warn: bool = True) -> ssl.SSLContext | None:
    """The TLS context of an mqtts:// --mqtt (None for mqtt://); --mqtt-insecure warns on stderr."""
    from ..video.mqtt import tls_context

    if args.mqtt is None or not args.mqtt.tls:
        return None
    if args.mqtt_insecure and warn:
        print("deepfake-edge scan: warning: --mqtt-insecure: the broker's certificate is not verified; anyone "
              "in the network path can pose as the broker and read the results", file=sys.stderr)
    try:
        return tls_context(ca_file=args.mqtt_ca, insecure=args.mqtt_insecure)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialError(args.mqtt_ca, f"cannot read the CA certificate ({exc})") from None


def watch_sources(args: argparse.Namespace, detector: Detector, sources: Sequence[Source]) -> int:
    """Watch the live ``sources``, printing JSON lines; returns how many failed."""
    from ..extras import require_extra
    from ..video.alerts import Alert
    from ..video.frames import Sampling
    from ..video.live import Reconnect
    from ..video.mqtt import MqttPublisher, MqttSink, camera_name, mqtt_password, topic_level
    from ..video.scan import VideoError
    from ..video.watch import LiveOptions, watch

    if len(args.name) > len(sources):
        print(f"deepfake-edge scan: {len(args.name)} --name given for {len(sources)} live sources", file=sys.stderr)
    # keyed by the masked name: what every item carries
    cameras = {src.name: topic_level(name) for src, name in zip(sources, args.name, strict=False)}
    cameras.update({src.name: camera_name(src.name) for src in sources if src.name not in cameras})
    options = LiveOptions(
        sampling=Sampling(fps=args.fps, keyframes=args.keyframes, decoder_threads=args.decoder_threads,
                          open_timeout_s=args.timeout, read_timeout_s=args.timeout),
        reconnect=Reconnect(args.reconnect_attempts, args.reconnect_delay,
                            max(args.reconnect_delay, args.reconnect_max_delay)),
        alert=args.alert, aggregate=args.aggregate, min_segment=args.min_segment,
        duration=args.duration, max_frames=args.max_frames, evidence=getattr(args, "evidence", None) is not None,
    )
    publisher = None
    if args.mqtt is not None:
        require_extra("mqtt")
        publisher = MqttPublisher(args.mqtt, connect_timeout=max(args.mqtt_timeout, 0.1),
                                  max_reconnects=args.mqtt_reconnects, password=mqtt_password(args.mqtt_password_file),
                                  tls=mqtt_tls(args),
                                  log=lambda line: print(f"deepfake-edge scan: {line}", file=sys.stderr, flush=True))
    sink = MqttSink(publisher, cameras, frames=args.mqtt_frames) if publisher is not None else None
    failed = 0
    stop = threading.Event()
    # Signals only set ``stop`` until the end of the shutdown (bounded by the timeouts), so a
    # second SIGTERM cannot cut the summaries or the last alerts short.
    with _stop_on_signals(stop):
        try:
            for item in watch(detector, sources, options, stop=stop):
                failed += isinstance(item, VideoError)
                line = item.to_dict()
                if options.evidence and isinstance(item, Alert) and item.peak_frame is not None:
                    line["evidence"] = str(_alert_overlay(item, cameras[item.source], args.evidence, detector))
                print(json.dumps(line), flush=True)
                if sink is not None:
                    sink(item)
        finally:
            if publisher is not None:
                publisher.close(flush_timeout=args.mqtt_timeout)
                if publisher.dropped:
                    print(f"deepfake-edge scan: mqtt: {publisher.dropped} messages could not be published",
                          file=sys.stderr)
    return failed
