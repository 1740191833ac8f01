"""Real servers on loopback for the live-stream tests, each bounded in time and cleaned up.

- :class:`RtspServer`: GStreamer's RTSP server (Debian packages), serving an H.264 MP4;
- :class:`Mosquitto`: a Mosquitto broker with its own config on a free port;
- :class:`SilentListener`: accepts connections and never answers (the case that hangs
  a client without a read timeout).

A missing Debian package skips with the install command, except under CI=true, where
``.ci/run`` installs them: there it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
DEBIAN_PYTHON = "/usr/bin/python3"  # the GObject bindings are Debian's, for its own Python
MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
RTSP_PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
SERVER_LIFETIME_S = 300  # a server outlives no test run, even if the test process is killed


def missing(what: str, install: str) -> None:
    """Skip (stating why), or fail under CI, where ``.ci/run`` must have installed it."""
    message = f"{what} is not available; install it with: apt-get install {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def pattern_frame(index: int, width: int = 96, height: int = 64) -> np.ndarray:
    """Frame ``index`` of the test clip: flat colours that change every frame and a moving bar,
    so every frame is distinct and H.264 keeps them apart."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = (index * 37) % 256
    image[..., 1] = (index * 91 + 64) % 256
    image[..., 2] = 255 - (index * 53) % 256
    image[:, (index * 3) % width:(index * 3) % width + 8] = (255, 255, 255)
    return image


def make_h264(path: Path, *, seconds: float = 60.0, fps: int = 10, gop: int = 10) -> Path:
    """An H.264 MP4 of :func:`pattern_frame` frames, encoded with PyAV's libx264; the index
    (moov) comes first, so it streams over HTTP without range requests."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"g": str(gop), "bf": "0", "tune": "zerolatency"}
        for i in range(int(seconds * fps)):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pattern_frame(i), format="rgb24")))
        out.mux(stream.encode())
    return path


class RtspServer:
    """``rtsp://127.0.0.1:<port>/cam`` serving ``video`` from its first frame to each client.

    :meth:`kill` and :meth:`start` again on the same port simulate a camera that reboots.
    With ``auth=(user, password)`` it requires Basic auth, as cameras do (the password reaches
    the server through its environment, not argv); ``mounts`` serves the clip at more paths.
    """

    def __init__(self, video: Path, port: int | None = None, *, auth: tuple[str, str] | None = None,
                 mounts: tuple[str, ...] = ("cam",)) -> None:
        if not (Path(DEBIAN_PYTHON).exists() and _gst_rtsp_available()):
            missing("GStreamer's RTSP server (Python GObject bindings)", RTSP_PACKAGES)
        self.video = video
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/{mounts[0]}"
        self.mounts = mounts
        self.auth = auth
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> RtspServer:
        self.proc = subprocess.Popen(
            [DEBIAN_PYTHON, str(HERE / "servers" / "rtsp_server.py"), str(self.port), str(self.video),
             ",".join(self.mounts), str(SERVER_LIFETIME_S)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **({"RTSP_USER": self.auth[0], "RTSP_PASSWORD": self.auth[1]} if self.auth else {})},
        )
        _wait_line(self.proc, "ready", timeout)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing more is sent."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()


def _gst_rtsp_available() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([DEBIAN_PYTHON, "-c", probe], check=False, capture_output=True, timeout=60).returncode == 0


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout: float) -> None:
    """Wait for ``expected`` on the process's output, read in a thread (readline has no timeout)
    that drains and closes the pipe when the process ends."""
    seen = threading.Event()
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                output.append(line)
                if line.strip() == expected:
                    seen.set()

    threading.Thread(target=read, daemon=True).start()
    if not seen.wait(timeout):
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"server did not print {expected!r} within {timeout} s: {''.join(output)[-2000:]}")


class Mosquitto:
    """A Mosquitto broker on a free loopback port, no persistence: anonymous, or with ``users``
    (name -> password, hashed by mosquitto_passwd into a ``password_file``); ``tls`` adds a TLS
    listener on ``tls_port`` with that (certificate chain, key) PEM pair."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            missing("the Mosquitto MQTT broker", "mosquitto")
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"allow_anonymous {str(not users).lower()}",
                 "user root"]  # root keeps root: the broker needs no access to the test's private folders
        if users:
            passwords = workdir / "mosquitto.passwd"
            passwords.touch(mode=0o600)
            for name, password in users.items():  # -b takes it on argv: fine for a throwaway test password
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwords), name, password], check=True, timeout=30,
                               capture_output=True)
            lines.insert(0, f"password_file {passwords}")
        if tls:
            lines += [f"listener {self.tls_port} 127.0.0.1", f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Mosquitto:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)

        def listening(port: int) -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        for port in (self.port, self.tls_port):
            if port is not None:
                wait_for(functools.partial(listening, port), timeout, f"mosquitto on port {port}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class HttpFileServer:
    """Python's own HTTP server for the files of ``root``, on a free loopback port, in a thread."""

    def __init__(self, root: Path) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentListener:
    """Accepts TCP connections on a free port and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()
