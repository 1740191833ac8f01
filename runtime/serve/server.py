"""Running an app under uvicorn: in the foreground (the CLI) or in a thread (tests, benchmarks)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import FrameType, TracebackType
from typing import Any

import uvicorn

__all__ = ["ServerThread", "serve", "uvicorn_config"]


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout_s: float = 35.0,
    max_connections: int | None = None,
    log_level: str = "info",
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    proxy_headers: bool = False,
) -> uvicorn.Config:
    """uvicorn settings for the service; HTTPS when ``ssl_certfile`` and ``ssl_keyfile`` are given.

    ``X-Forwarded-For`` is ignored unless ``proxy_headers``: otherwise any local
    process could claim another client address and dodge the failed-key lockout.
    With it, uvicorn trusts the header from 127.0.0.1 (or ``$FORWARDED_ALLOW_IPS``).

    uvicorn's own access log is off: the app writes structured JSON lines
    instead. On SIGTERM/SIGINT uvicorn stops accepting, waits up to
    ``graceful_timeout_s`` for in-flight requests, then runs the app's
    shutdown, which drains the model queue.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,  # keep the JSON logging configured by the caller
        log_level=log_level,
        timeout_graceful_shutdown=max(1, round(graceful_timeout_s)),
        limit_concurrency=max_connections,
        server_header=False,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        proxy_headers=proxy_headers,
    )


def serve(app: Any, **kwargs: Any) -> None:
    """Serve ``app`` in the foreground until SIGINT/SIGTERM (keyword arguments as :func:`uvicorn_config`).

    Returns normally after a graceful shutdown, so the process exits 0. uvicorn
    re-raises the stop signal once it is done, to the handler that was in place
    before it started: a no-op here, instead of the default that kills with -15.
    """
    previous = {sig: signal.signal(sig, _graceful_stop_done) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(uvicorn_config(app, **kwargs)).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _graceful_stop_done(_sig: int, _frame: FrameType | None) -> None:
    """The shutdown this signal asked for has already happened."""


class ServerThread:
    """A real uvicorn server on a loopback port, in a background thread.

    >>> with ServerThread(app) as server:          # doctest: +SKIP
    ...     httpx.get(server.url + "/healthz")

    The port is bound before the thread starts (port 0 picks a free one), so
    ``url`` is valid as soon as the ``with`` block begins. Leaving the block
    triggers uvicorn's graceful shutdown and waits for it.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 30.0,
                 **kwargs: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        kwargs.setdefault("log_level", "warning")
        self.server = uvicorn.Server(uvicorn_config(app, host=self.host, port=self.port, **kwargs))
        self._scheme = "https" if kwargs.get("ssl_certfile") else "http"
        self._startup_timeout_s = startup_timeout_s
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"uvicorn on {self.url} exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn on {self.url} did not start within {self._startup_timeout_s:g} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
