"""The HTTP service under overload and misbehaving clients, and the ``serve`` command, on loopback.

A busy model is a real model call held at a gate the test opens (``serve_helpers.ModelGate``);
a silent client is a raw socket that stops sending. Answers are checked against ``Detector.predict_one``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="the service tests need httpx ([test] extra)")

from deepfake_edge import Detector
from deepfake_edge.serve import ServeConfig

from live_servers import free_port
from serve_helpers import (
    AUTH,
    KEY,
    ModelGate,
    assert_matches,
    metric,
    poll,
    raw_connection,
    read_response,
    running,
    upload_headers,
)

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


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
            return httpx.post(f"{url}/v1/classify", content=data, headers={"content-type": "image/png", **AUTH},
                              timeout=30)

        gate.close()
        admitted = [pool.submit(post) for _ in range(3)]
        poll(lambda: metric(client, "deepfake_edge_in_flight_images") == 3)
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
            assert_matches(answer.json(), expected.label, expected.scores)
        assert metric(client, "deepfake_edge_requests_total", endpoint="classify", outcome="queue_full") == 5
        assert metric(client, "deepfake_edge_batch_size_sum") == 3 == sum(gate.batches)
        assert metric(client, "deepfake_edge_in_flight_images") == 0


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
        poll(lambda: metric(client, "deepfake_edge_queue_depth") == 0 and
              metric(client, "deepfake_edge_in_flight_images") == 0)
    assert gate.batches == [], "the expired image reached the model"


def test_slow_client_gets_408_while_others_are_served(fp32: Detector, photos) -> None:
    config = ServeConfig(max_batch=8, max_wait_ms=2, read_timeout_s=0.5)
    data = photos[0][1]
    with running(fp32, config) as (url, client), raw_connection(url) as slow:
        slow.sendall(upload_headers(len(data)) + data[:1000])  # ...and then nothing more
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            assert client.post("/v1/classify", content=data, headers={"content-type": "image/png"}).status_code == 200
        answer = read_response(slow)
        assert answer.startswith("HTTP/1.1 408"), answer
        body = json.loads(answer.split("\r\n\r\n", 1)[1])
        assert body["error"] == "read_timeout" and "1,000 bytes received" in body["message"]
        assert metric(client, "deepfake_edge_in_flight_images") == 0


def test_client_disconnecting_mid_upload_is_harmless(fp32: Detector, photos) -> None:
    data = photos[0][1]
    with running(fp32) as (url, client):
        for _ in range(3):
            with raw_connection(url) as gone:
                gone.sendall(upload_headers(len(data)) + data[: len(data) // 3])
        poll(lambda: metric(client, "deepfake_edge_requests_total", endpoint="classify",
                              outcome="client_disconnected") == 3)
        assert metric(client, "deepfake_edge_in_flight_images") == 0
        answer = client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
        assert answer.status_code == 200
        expected = fp32.predict_one(data)
        assert_matches(answer.json(), expected.label, expected.scores)


# -- the command ------------------------------------------------------------------
def test_serve_cli_graceful_shutdown_and_json_logs(binary_bundle: Path, fp32: Detector, photos, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "stderr.jsonl"
    with log_path.open("w") as log:
        # the request waits out a 3 s batching window, long after SIGTERM is sent
        proc = subprocess.Popen([*CLI, "serve", str(binary_bundle), "--port", str(port), "--variant", "fp32",
                                 "--max-wait-ms", "3000", "--threads", "1"], stderr=log, stdout=subprocess.DEVNULL,
                                env={**os.environ, "DEEPFAKE_EDGE_API_KEY": KEY})
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
            httpx.post(f"{url}/v1/classify", content=data, headers={"content-type": "image/png", **AUTH}, timeout=30)))
        worker.start()
        with httpx.Client(base_url=url, timeout=5, headers=AUTH) as client:
            poll(lambda: bool(results) or metric(client, "deepfake_edge_in_flight_images") == 1)
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
    assert_matches(results[0].json(), expected.label, expected.scores)
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
