"""The HTTP service against a real uvicorn server on a loopback port.

Expected answers come from ``Detector.predict_one`` (itself checked against
transformers in test_detector.py), never from the service's own output.
Nothing here asserts how long something took: batching is made deterministic
with a window longer than any client timeout (only a full batch can release
it), and a busy model is a real model call held at a gate the test opens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="the service tests need httpx ([test] extra)")

from prometheus_client.parser import text_string_to_metric_families

from deepfake_edge import Detector
from deepfake_edge.serve import ServeConfig, ServerThread, create_app
from deepfake_edge.serve.batcher import DynamicBatcher

from image_factory import png_claiming_size

CLI = [sys.executable, "-m", "deepfake_edge.cli"]
FAST = ServeConfig(max_batch=8, max_wait_ms=2, max_queue=16, max_body_bytes=2_000_000, max_batch_items=4)


@pytest.fixture(scope="module")
def fp32(binary_bundle: Path) -> Detector:
    return Detector.load(binary_bundle, "fp32")


@pytest.fixture(scope="module")
def photos(photo_paths: list[Path]) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in photo_paths[:4]]


def _wait_ready(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "service never became ready"
        time.sleep(0.02)


@contextmanager
def running(detector: Detector, config: ServeConfig = FAST) -> Iterator[tuple[str, httpx.Client]]:
    with ServerThread(create_app(detector, config)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        _wait_ready(server.url)
        yield server.url, client


@pytest.fixture(scope="module")
def service(fp32: Detector) -> Iterator[tuple[str, httpx.Client]]:
    with running(fp32) as running_service:
        yield running_service


def _metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _metric(client: httpx.Client, name: str, **labels: str) -> float:
    return _metrics(client).get((name, tuple(sorted(labels.items()))), 0.0)


def _poll(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _assert_matches(answer: dict[str, object], expected_label: str, expected_scores: dict[str, float]) -> None:
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


# -- endpoints ------------------------------------------------------------------
def test_classify_raw_body_and_multipart_match_detector(service, fp32: Detector, photo_paths: list[Path]) -> None:
    _, client = service
    for path in photo_paths[:3]:
        expected = fp32.predict_one(path)
        media = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        raw = client.post("/v1/classify", content=path.read_bytes(), headers={"content-type": media})
        assert raw.status_code == 200, raw.text
        body = raw.json()
        assert set(body) == {"label", "scores", "variant", "model", "latency_ms"}
        assert body["variant"] == "fp32" and body["latency_ms"] > 0
        assert body["model"] == Path(str(fp32.bundle.manifest.source["model"])).name
        _assert_matches(body, expected.label, expected.scores)
        multipart = client.post("/v1/classify", files={"file": (path.name, path.read_bytes(), media)})
        assert multipart.status_code == 200, multipart.text
        _assert_matches(multipart.json(), expected.label, expected.scores)
    octet = client.post("/v1/classify", content=photo_paths[0].read_bytes(),
                        headers={"content-type": "application/octet-stream"})
    assert octet.status_code == 200


def test_batch_endpoint_keeps_order_and_reports_bad_items(service, fp32: Detector, photos) -> None:
    _, client = service
    files = [("files", (name, data, "application/octet-stream")) for name, data in photos[:2]]
    files.insert(1, ("files", ("broken.png", photos[0][1][:300], "image/png")))
    files.append(("files", ("notes.txt", b"plain text, not an image", "text/plain")))
    response = client.post("/v1/classify/batch", files=files)
    assert response.status_code == 200, response.text
    items = response.json()
    assert [item["source"] for item in items] == [photos[0][0], "broken.png", photos[1][0], "notes.txt"]
    for item, (_, data) in zip([items[0], items[2]], photos[:2], strict=True):
        expected = fp32.predict_one(data)
        _assert_matches(item, expected.label, expected.scores)
    assert items[1]["error"] == "invalid_image" and items[1]["type"] == "ImageDecodeError"
    assert "broken.png" in items[1]["message"] and "label" not in items[1]
    assert items[3]["error"] == "invalid_image" and "not a recognised image format" in items[3]["message"]


def test_limits_answer_with_clear_json_errors(service, photos) -> None:
    _, client = service
    name, data = photos[0]

    def check(response: httpx.Response, status: int, code: str, *fragments: str) -> dict[str, object]:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"] == code
        for fragment in fragments:
            assert fragment in body["message"]
        return body

    too_big = b"\0" * (FAST.max_body_bytes + 1)
    check(client.post("/v1/classify", content=too_big, headers={"content-type": "image/png"}),
          413, "body_too_large", "2,000,000")
    # chunked upload (no Content-Length): refused once the stream passes the limit
    check(client.post("/v1/classify", content=iter([too_big[:1_500_000], too_big[1_500_000:]]),
                      headers={"content-type": "image/png"}), 413, "body_too_large")
    check(client.post("/v1/classify", content=b"hello", headers={"content-type": "text/plain"}),
          415, "unsupported_media_type", "text/plain")
    check(client.post("/v1/classify", content=data), 415, "unsupported_media_type", "(none)")
    check(client.post("/v1/classify/batch", content=data, headers={"content-type": "image/png"}),
          415, "unsupported_media_type", "multipart/form-data")
    corrupt = check(client.post("/v1/classify", content=data[: len(data) // 2], headers={"content-type": "image/png"}),
                    400, "invalid_image", "<request body>", "truncated")
    assert corrupt["type"] == "ImageDecodeError"
    check(client.post("/v1/classify", content=b"", headers={"content-type": "image/png"}),
          400, "invalid_image", "empty")
    bomb = check(client.post("/v1/classify", content=png_claiming_size(50_000, 50_000),
                             headers={"content-type": "image/png"}), 413, "image_too_large", "<request body>")
    assert bomb["type"] == "ImageTooLargeError"
    check(client.post("/v1/classify", files=[("file", (name, data)), ("file", (name, data))]),
          400, "bad_request", "exactly one file part")
    check(client.post("/v1/classify", data={"file": "not a file"}, files={"other": ("x.txt", b"")}),
          400, "bad_request", "no filename")
    check(client.post("/v1/classify/batch", files=[("files", (name, b"tiny"))] * (FAST.max_batch_items + 1)),
          413, "too_many_images", str(FAST.max_batch_items))
    check(client.post("/v1/classify/batch", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
          400, "bad_request", "multipart")
    check(client.get("/v1/nothing-here"), 404, "not_found")
    check(client.get("/v1/classify"), 405, "method_not_allowed")
    # and after all that the service still classifies
    assert client.post("/v1/classify", content=data, headers={"content-type": "image/png"}).status_code == 200


def test_health_readiness_info_docs(service, fp32: Detector) -> None:
    _, client = service
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    info = client.get("/v1/info").json()
    assert info["labels"] == list(fp32.labels) and info["variant"] == "fp32"
    assert info["limits"]["max_body_bytes"] == FAST.max_body_bytes
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/v1/classify", "/v1/classify/batch", "/healthz", "/readyz", "/metrics", "/v1/info"}
    content = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert set(content) == {"image/*", "application/octet-stream", "multipart/form-data"}
    assert {"413", "415", "503", "504"} <= set(spec["paths"]["/v1/classify"]["post"]["responses"])
    for docs in ("/docs", "/redoc"):  # offline: every asset comes from this server, none from a CDN
        html = client.get(docs)
        assert html.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: '([^']+)'", html.text)
        assert assets and not [a for a in assets if "://" in a or a.startswith("//")], assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_not_ready_before_warm_up(fp32: Detector, photos) -> None:
    import asyncio

    # httpx's ASGI transport does not run the lifespan, so the app has no model
    # worker yet: exactly its state before warm-up finishes.
    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(fp32, FAST))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/healthz"), await client.get("/readyz"),
                    await client.post("/v1/classify", content=photos[0][1], headers={"content-type": "image/png"}))

    health, ready, refused = asyncio.run(main())
    assert health.status_code == 200
    assert ready.status_code == 503 and ready.json() == {"status": "starting"}
    assert refused.status_code == 503 and refused.json()["error"] == "not_ready"
    assert refused.headers["retry-after"] == "1"


def test_metrics_count_outcomes_latency_and_batches(fp32: Detector, photos) -> None:
    # a fresh app: its own registry, so the counts are exactly this test's requests
    with running(fp32) as (_, client):
        for _name, data in photos[:3]:
            client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
        client.post("/v1/classify", content=b"junk", headers={"content-type": "image/png"})
        client.post("/v1/classify", content=b"junk", headers={"content-type": "text/csv"})
        client.post("/v1/classify/batch", files=[("files", ("a", photos[0][1])), ("files", ("b", b"junk"))])
        response = client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        m = _metrics(client)
    assert m[("deepfake_edge_requests_total", (("endpoint", "classify"), ("outcome", "ok")))] == 3
    assert m[("deepfake_edge_requests_total", (("endpoint", "classify"), ("outcome", "invalid_image")))] == 1
    assert m[("deepfake_edge_requests_total", (("endpoint", "classify"), ("outcome", "unsupported_media_type")))] == 1
    assert m[("deepfake_edge_requests_total", (("endpoint", "batch"), ("outcome", "ok")))] == 1
    assert m[("deepfake_edge_request_latency_seconds_count", (("endpoint", "classify"),))] == 5
    assert m[("deepfake_edge_images_total", (("outcome", "ok"),))] == 4
    assert m[("deepfake_edge_images_total", (("outcome", "invalid_image"),))] == 2
    # 4 decoded images reached the model, in 3 or 4 calls (the batch's image may share one)
    assert m[("deepfake_edge_batch_size_sum", ())] == 4
    assert m[("deepfake_edge_queue_depth", ())] == 0
    assert m[("deepfake_edge_in_flight_images", ())] == 0
    (info,) = [dict(labels) for name, labels in m if name == "deepfake_edge_model_info"]
    assert info["labels"] == ",".join(fp32.labels) and info["variant"] == "fp32"
    assert info["model"] == Path(str(fp32.bundle.manifest.source["model"])).name


def test_threshold_is_respected(binary_bundle: Path, photos) -> None:
    # threshold 0 makes every image 'fake'; the scores stay the model's
    detector = Detector.load(binary_bundle, "fp32", threshold=0.0)
    with running(detector) as (_, client):
        assert client.get("/v1/info").json()["threshold"] == 0.0
        for _name, data in photos[:2]:
            answer = client.post("/v1/classify", content=data, headers={"content-type": "image/png"}).json()
            assert answer["label"] == "fake"
            assert answer["scores"] == pytest.approx(detector.predict_one(data).scores, abs=1e-6)


# -- dynamic batching -------------------------------------------------------------
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_concurrent_requests_share_one_model_call(binary_bundle: Path, photos, variant: str) -> None:
    detector = Detector.load(binary_bundle, variant)
    expected = [detector.predict_one(data) for _, data in photos]
    # max_batch == the number of clients, and a window far longer than the clients wait (30 s): the
    # answers can only come from a batch that ran because it was full.
    config = ServeConfig(max_batch=len(photos), max_wait_ms=600_000, max_queue=16, max_batch_items=4)
    with running(detector, config) as (url, client):
        def post(data: bytes) -> dict[str, object]:
            return httpx.post(f"{url}/v1/classify", content=data, headers={"content-type": "image/png"},
                              timeout=30).json()

        with ThreadPoolExecutor(len(photos)) as pool:
            answers = list(pool.map(post, [data for _, data in photos]))
        assert _metric(client, "deepfake_edge_batch_size_count") == 1
        assert _metric(client, "deepfake_edge_batch_size_sum") == len(photos)
    for answer, single in zip(answers, expected, strict=True):
        _assert_matches(answer, single.label, single.scores)


def test_batcher_forwards_model_errors_and_keeps_working() -> None:
    import asyncio

    calls: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("simulated onnxruntime failure")
        return batch.reshape(len(batch), -1)[:, :2] * 2

    async def main() -> tuple[str, list[float]]:
        batcher = DynamicBatcher(run, max_batch=4, max_wait_s=0.0)
        deadline = time.monotonic() + 10
        try:
            await batcher.submit(np.ones((1, 1, 2), np.float32), deadline=deadline)
        except RuntimeError as exc:
            error = str(exc)
        result = await batcher.submit(np.full((1, 1, 2), 3.0, np.float32), deadline=deadline)
        await asyncio.to_thread(batcher.close)
        assert not batcher.alive
        return error, result.tolist()

    error, result = asyncio.run(main())
    assert error == "simulated onnxruntime failure"
    assert result == [6.0, 6.0]


# -- overload and robustness ------------------------------------------------------
def test_flood_beyond_the_queue_gets_503_and_admitted_requests_finish(binary_bundle: Path, photos) -> None:
    # The model call is held at the gate, so three admitted requests fill the queue (max_queue=3).
    detector = Detector.load(binary_bundle, "fp32")
    gate = ModelGate(detector)
    config = ServeConfig(max_batch=8, max_wait_ms=2, max_queue=3, max_batch_items=3)
    data = photos[0][1]
    expected = detector.predict_one(data)
    with running(detector, config) as (url, client), ThreadPoolExecutor(3) as pool:
        def post() -> httpx.Response:
            return httpx.post(f"{url}/v1/classify", content=data, headers={"content-type": "image/png"}, timeout=30)

        gate.close()
        admitted = [pool.submit(post) for _ in range(3)]
        _poll(lambda: _metric(client, "deepfake_edge_in_flight_images") == 3)
        flood = [post() for _ in range(5)]
        batch_flood = client.post("/v1/classify/batch", files=[("files", ("a", data))])
        # answered while the model is held and the queue is full: /healthz never waits behind them
        assert client.get("/healthz").status_code == 200
        assert not any(future.done() for future in admitted)
        for response in [*flood, batch_flood]:
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"] == "queue_full"
        gate.open()
        for future in admitted:  # nothing admitted is lost
            answer = future.result(timeout=30)
            assert answer.status_code == 200
            _assert_matches(answer.json(), expected.label, expected.scores)
        assert _metric(client, "deepfake_edge_requests_total", endpoint="classify", outcome="queue_full") == 5
        assert _metric(client, "deepfake_edge_batch_size_sum") == 3 == sum(gate.batches)
        assert _metric(client, "deepfake_edge_in_flight_images") == 0


def test_request_timeout_is_504_and_the_model_skips_the_expired_image(binary_bundle: Path, photos) -> None:
    # The request waits in a batching window that outlasts its 0.2 s deadline; leaving the
    # service drains the batcher, which must drop the expired image instead of running it.
    detector = Detector.load(binary_bundle, "fp32")
    gate = ModelGate(detector)
    config = ServeConfig(max_batch=8, max_wait_ms=600_000, timeout_s=0.2)
    with running(detector, config) as (_, client):
        gate.batches.clear()  # count from here: the warm-up calls are done
        response = client.post("/v1/classify", content=photos[0][1], headers={"content-type": "image/png"})
        assert response.status_code == 504 and response.json()["error"] == "timeout"
        assert "0.2 s" in response.json()["message"]
        _poll(lambda: _metric(client, "deepfake_edge_queue_depth") == 0 and
              _metric(client, "deepfake_edge_in_flight_images") == 0)
    assert gate.batches == [], "the expired image reached the model"


def _raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_response(sock: socket.socket) -> str:
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


def _headers(length: int) -> bytes:
    return (f"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_slow_client_gets_408_while_others_are_served(fp32: Detector, photos) -> None:
    config = ServeConfig(max_batch=8, max_wait_ms=2, read_timeout_s=0.5)
    data = photos[0][1]
    with running(fp32, config) as (url, client), _raw_connection(url) as slow:
        slow.sendall(_headers(len(data)) + data[:1000])  # ...and then nothing more
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            assert client.post("/v1/classify", content=data, headers={"content-type": "image/png"}).status_code == 200
        answer = _read_response(slow)
        assert answer.startswith("HTTP/1.1 408"), answer
        body = json.loads(answer.split("\r\n\r\n", 1)[1])
        assert body["error"] == "read_timeout" and "1,000 bytes received" in body["message"]
        assert _metric(client, "deepfake_edge_in_flight_images") == 0


def test_client_disconnecting_mid_upload_is_harmless(fp32: Detector, photos) -> None:
    data = photos[0][1]
    with running(fp32) as (url, client):
        for _ in range(3):
            with _raw_connection(url) as gone:
                gone.sendall(_headers(len(data)) + data[: len(data) // 3])
        _poll(lambda: _metric(client, "deepfake_edge_requests_total", endpoint="classify",
                              outcome="client_disconnected") == 3)
        assert _metric(client, "deepfake_edge_in_flight_images") == 0
        answer = client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
        assert answer.status_code == 200
        expected = fp32.predict_one(data)
        _assert_matches(answer.json(), expected.label, expected.scores)


# -- the command ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_cli_graceful_shutdown_and_json_logs(binary_bundle: Path, fp32: Detector, photos, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "stderr.jsonl"
    with log_path.open("w") as log:
        # the request waits out a 3 s batching window, long after SIGTERM is sent
        proc = subprocess.Popen([*CLI, "serve", str(binary_bundle), "--port", str(port), "--variant", "fp32",
                                 "--max-wait-ms", "3000", "--threads", "1"], stderr=log, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        data = photos[1][1]
        results: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: results.append(
            httpx.post(f"{url}/v1/classify", content=data, headers={"content-type": "image/png"}, timeout=30)))
        worker.start()
        with httpx.Client(base_url=url, timeout=5) as client:
            _poll(lambda: bool(results) or _metric(client, "deepfake_edge_in_flight_images") == 1)
        assert not results, "the request was answered before SIGTERM: it must still be in flight"
        proc.send_signal(signal.SIGTERM)
        worker.join(30)
        assert proc.wait(timeout=30) == 0  # a clean, graceful shutdown exits 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(results) == 1 and results[0].status_code == 200, "the in-flight request was lost on shutdown"
    expected = fp32.predict_one(data)
    _assert_matches(results[0].json(), expected.label, expected.scores)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    events = {line.get("event") for line in lines}
    assert {"starting", "ready", "access", "stopped"} <= events
    starting = next(line for line in lines if line.get("event") == "starting")
    assert starting["host"] == "127.0.0.1"
    access = [line for line in lines if line.get("event") == "access" and line["path"] == "/v1/classify"]
    assert access and access[0]["status"] == 200 and access[0]["method"] == "POST"
    assert access[0]["bytes_in"] == len(data)


def test_serve_without_the_extra_is_exit_3(binary_bundle: Path) -> None:
    code = f"""
import sys
sys.modules["fastapi"] = None  # as if the [serve] extra were not installed
from deepfake_edge.cli import main
sys.exit(main(["serve", {str(binary_bundle)!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "pip install 'deepfake-edge[serve]'" in proc.stderr and "Traceback" not in proc.stderr


def test_base_import_and_cli_registry_do_not_load_web_stacks() -> None:
    code = """
import json, sys
import deepfake_edge, deepfake_edge.serve
from deepfake_edge.cli import build_parser
build_parser()
print(json.dumps([m for m in ("fastapi", "starlette", "uvicorn", "prometheus_client", "gradio") if m in sys.modules]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_load_test_runs_clean_and_counts_503s_above_the_limit(binary_bundle: Path, tmp_path: Path) -> None:
    from deepfake_edge.benchmarks.load_test import main as load_test

    out = tmp_path / "load.json"
    code = load_test([str(binary_bundle), "--variants", "int8", "--max-batch", "4", "--clients", "3",
                      "--requests", "12", "--overload-queue", "1", "--overload-clients", "6", "--time-limit", "60",
                      "--json", str(out)])
    assert code == 0
    measured, overload = json.loads(out.read_text())["results"]
    assert measured["ok"] == 12 and measured["errors"] == 0 and measured["rejected_503"] == 0
    assert measured["p50_ms"] <= measured["p95_ms"]
    assert overload["errors"] == 0 and overload["rejected_503"] > 0
    assert overload["ok"] + overload["rejected_503"] == overload["sent"]
