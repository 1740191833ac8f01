"""The HTTP service against a real uvicorn server on a loopback port.

Expected answers come from ``Detector.predict_one`` (itself checked against
transformers in test_detector.py), never from the service's own output.
Nothing here asserts how long something took: batching is made deterministic
with a window longer than any client timeout (only a full batch can release
it), and a busy model is a real model call held at a gate the test opens.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="the service tests need httpx ([test] extra)")

from deepfake_edge import Detector
from deepfake_edge.serve import ServeConfig, create_app
from deepfake_edge.serve.batcher import DynamicBatcher

from image_factory import png_claiming_size
from serve_helpers import AUTH, FAST, KEYS, assert_matches, metric, metrics, running


@pytest.fixture(scope="module")
def service(fp32: Detector) -> Iterator[tuple[str, httpx.Client]]:
    with running(fp32) as running_service:
        yield running_service


# -- endpoints ------------------------------------------------------------------
def test_classify_raw_body_and_multipart_match_detector(service, fp32: Detector, photo_paths: list[Path]) -> None:
    _, client = service
    for path in photo_paths[:3]:
        expected = fp32.predict_one(path)
        media = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        raw = client.post("/v1/classify", content=path.read_bytes(), headers={"content-type": media})
        assert raw.status_code == 200, raw.text
        body = raw.json()
        assert set(body) == {"label", "scores", "score", "variant", "model", "latency_ms"}
        assert body["variant"] == "fp32" and body["latency_ms"] > 0
        assert body["model"] == Path(str(fp32.bundle.manifest.source["model"])).name
        assert_matches(body, expected.label, expected.scores)
        multipart = client.post("/v1/classify", files={"file": (path.name, path.read_bytes(), media)})
        assert multipart.status_code == 200, multipart.text
        assert_matches(multipart.json(), expected.label, expected.scores)
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
        assert_matches(item, expected.label, expected.scores)
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
        transport = httpx.ASGITransport(app=create_app(fp32, FAST, api_keys=KEYS))
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH) as client:
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
        m = metrics(client)
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
            return httpx.post(f"{url}/v1/classify", content=data, headers={"content-type": "image/png", **AUTH},
                              timeout=30).json()

        with ThreadPoolExecutor(len(photos)) as pool:
            answers = list(pool.map(post, [data for _, data in photos]))
        assert metric(client, "deepfake_edge_batch_size_count") == 1
        assert metric(client, "deepfake_edge_batch_size_sum") == len(photos)
    for answer, single in zip(answers, expected, strict=True):
        assert_matches(answer, single.label, single.scores)


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
