"""``?evidence=1`` on a real uvicorn server, and the page's overlay in real Chromium.

Expected grids and hotspots come from ``Detector.predict_one(..., evidence=True)`` (its map is
checked against the model's own scores in test_evidence.py), never from the service's answer.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="the service tests need httpx ([test] extra)")

from deepfake_edge import Detector

from old_bundles import old_copy
from serve_helpers import KEY, running

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def service(fp32: Detector) -> Iterator[tuple[str, httpx.Client]]:
    with running(fp32) as running_service:
        yield running_service


def _expected(detector: Detector, data: bytes) -> dict[str, object]:
    result = detector.predict_one(data, evidence=True)
    grid = result.evidence
    assert grid is not None
    return {"grid": np.round(grid.astype(np.float64), 3).tolist(),
            "hotspots": [h.to_dict() for h in result.hotspots(3)]}


def test_classify_with_evidence_matches_the_detector(service, fp32: Detector, photo_paths: list[Path]) -> None:
    _, client = service
    for path in photo_paths[:2]:
        data = path.read_bytes()
        media = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        plain = client.post("/v1/classify", content=data, headers={"content-type": media}).json()
        assert "evidence" not in plain
        answer = client.post("/v1/classify?evidence=1", content=data, headers={"content-type": media})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["scores"] == pytest.approx(plain["scores"], abs=1e-6) and body["label"] == plain["label"]
        expected = _expected(fp32, data)
        assert body["evidence"]["hotspots"] == expected["hotspots"]
        assert np.allclose(body["evidence"]["grid"], expected["grid"], atol=1e-3)


def test_batch_with_evidence_keeps_bad_items_apart(service, fp32: Detector, photo_paths: list[Path]) -> None:
    _, client = service
    good = photo_paths[0].read_bytes()
    files = [("files", ("a.png", good, "image/png")), ("files", ("broken.png", b"not an image", "image/png"))]
    answer = client.post("/v1/classify/batch?evidence=1", files=files)
    assert answer.status_code == 200, answer.text
    first, second = answer.json()
    assert first["evidence"]["hotspots"] == _expected(fp32, good)["hotspots"]
    assert second["error"] == "invalid_image" and "evidence" not in second


def test_bad_evidence_value_and_openapi(service) -> None:
    _, client = service
    bad = client.post("/v1/classify?evidence=maybe", content=b"x", headers={"content-type": "image/png"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request" and "maybe" in bad.json()["message"]
    spec = client.get("/openapi.json").json()
    for route in ("/v1/classify", "/v1/classify/batch"):
        params = spec["paths"][route]["post"]["parameters"]
        assert [p["name"] for p in params] == ["evidence"] and "hotspots" in params[0]["description"]
    schemas = spec["components"]["schemas"]
    assert {"grid", "hotspots"} <= set(schemas["EvidenceBody"]["properties"])
    assert "evidence" in schemas["Classification"]["properties"] and "box" in schemas["HotspotBody"]["properties"]
    assert client.get("/v1/info").json()["evidence"] is True


def test_old_bundle_serves_but_refuses_evidence(binary_bundle: Path, tmp_path: Path, photo_paths: list[Path]) -> None:
    old = old_copy(binary_bundle, tmp_path / "old")
    with running(Detector.load(old)) as (_, client):
        data = photo_paths[0].read_bytes()
        assert client.post("/v1/classify", content=data, headers={"content-type": "image/png"}).status_code == 200
        refused = client.post("/v1/classify?evidence=1", content=data, headers={"content-type": "image/png"})
        assert refused.status_code == 400 and refused.json()["error"] == "evidence_unavailable"
        assert "re-export" in refused.json()["message"]
        assert client.get("/v1/info").json()["evidence"] is False


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package 'chromium')")
def test_page_overlay_changes_the_top_hotspot_and_toggles(service, fp32: Detector, tmp_path: Path,
                                                           photo_paths: list[Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright ([test] extra)")
    url, _ = service
    photo = tmp_path / "wide.png"
    with Image.open(photo_paths[0]) as source:
        source.convert("RGB").resize((320, 200)).save(photo)  # not square: the squash must be undone
    top = fp32.predict_one(photo, evidence=True).hotspots(1)[0]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}/")
            page.wait_for_selector("#key-form:not([hidden])", timeout=10_000)  # the service's key, asked once
            page.fill("#api-key", KEY)
            page.click("#key-form button")
            page.wait_for_selector("#model-info:has-text('variant fp32')", timeout=10_000)
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#result[data-state='done']", timeout=15_000)
            page.wait_for_selector("#evidence[data-drawn='true']", state="attached", timeout=10_000)
            rect = page.eval_on_selector("#preview", "img => { const r = img.getBoundingClientRect();"
                                         " return [r.x, r.y, r.width / img.naturalWidth]; }")
            x, y, zoom = rect
            x0, y0, x1, y1 = top.box
            clip = {"x": x + x0 * zoom + 2, "y": y + y0 * zoom + 2, "width": (x1 - x0) * zoom - 4,
                    "height": (y1 - y0) * zoom - 4}
            on = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), np.float64)
            assert "log-odds" in page.inner_text("#evidence-scale")
            page.click("#evidence-toggle")
            assert page.eval_on_selector("#evidence", "c => c.hidden")
            off = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), np.float64)
            page.click("#evidence-toggle")
            again = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), np.float64)
        finally:
            browser.close()
    assert errors == []
    assert np.abs(on - off).mean() > 3.0  # the overlay is drawn over the top hotspot's cell
    if top.margin > 0:  # toward fake: redder with the overlay on
        assert (on[..., 0] - on[..., 2]).mean() > (off[..., 0] - off[..., 2]).mean()
    assert np.array_equal(on, again)
