"""Helpers shared by the HTTP service tests: a real uvicorn server on loopback, its metrics,
a gate in front of the model call, and raw sockets for clients that misbehave."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deepfake_edge import Detector
from deepfake_edge.apikeys import ApiKeys, generate_key
from deepfake_edge.serve import ServeConfig, ServerThread, create_app

FAST = ServeConfig(max_batch=8, max_wait_ms=2, max_queue=16, max_body_bytes=2_000_000, max_batch_items=4)
# The service runs with authentication on, as users run it; every helper sends this key.
KEY = generate_key()
KEYS = ApiKeys.of([KEY], "the tests' key")
AUTH = {"authorization": f"Bearer {KEY}"}


def wait_ready(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "service never became ready"
        time.sleep(0.02)


@contextmanager
def running(detector: Detector, config: ServeConfig = FAST) -> Iterator[tuple[str, httpx.Client]]:
    with ServerThread(create_app(detector, config, api_keys=KEYS)) as server, \
            httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
        wait_ready(server.url)
        yield server.url, client


def metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    return metrics(client).get((name, tuple(sorted(labels.items()))), 0.0)


def poll(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def assert_matches(answer: dict[str, object], expected_label: str, expected_scores: dict[str, float]) -> None:
    assert answer["label"] == expected_label
    assert answer["scores"] == pytest.approx(expected_scores, abs=1e-6)


class ModelGate:
    """Sits in front of one Detector's model call: records each batch, and holds it while closed.

    Installed on a Detector of the test's own, before the service starts; the
    warm-up calls pass through, then :meth:`close` makes the next model calls
    wait until :meth:`open` (bounded, so a broken test cannot hang).
    """

    def __init__(self, detector: Detector) -> None:
        self._run = detector.logits
        self._open = threading.Event()
        self._open.set()
        self.batches: list[int] = []
        detector.logits = self  # type: ignore[method-assign]

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        self.batches.append(len(pixel_values))
        assert self._open.wait(60), "the model gate was never opened"
        return self._run(pixel_values)

    def close(self) -> None:
        """Start counting from zero, and hold the next model call."""
        self.batches.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_response(sock: socket.socket) -> str:
    """One whole HTTP/1.1 response: headers, then Content-Length bytes (they may arrive in separate segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def upload_headers(length: int) -> bytes:
    return (f"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            f"Authorization: {AUTH['authorization']}\r\nContent-Length: {length}\r\n\r\n").encode()
