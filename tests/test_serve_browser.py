"""The service's page in a real headless browser (Debian's chromium, driven by Playwright).

The page must ask for the API key (refusing a wrong one), then show, for an
uploaded image, exactly what the HTTP API answers for the same bytes, and must
load nothing from outside the service. No browser is ever downloaded: the test
uses /usr/bin/chromium or skips.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
KEY_ITEM = "deepfake-edge-api-key"  # the page's sessionStorage item
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package 'chromium'); the browser test needs it"
)
pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="the service tests need httpx ([test] extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright ([test] extra)")

from deepfake_edge import Detector
from deepfake_edge.apikeys import generate_key
from deepfake_edge.serve import ServeConfig, ServerThread, create_app

from serve_helpers import AUTH, KEY, KEYS


@pytest.fixture(scope="module")
def server_url(binary_bundle: Path) -> Iterator[str]:
    app = create_app(Detector.load(binary_bundle, "fp32"), ServeConfig(max_wait_ms=2), api_keys=KEYS)
    with ServerThread(app) as server:
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "service never became ready"
            time.sleep(0.02)
        yield server.url


def test_page_renders_the_api_answer(server_url: str, photo_paths: list[Path]) -> None:
    photo = next(p for p in photo_paths if p.suffix == ".jpg")
    api = httpx.post(f"{server_url}/v1/classify", content=photo.read_bytes(),
                     headers={"content-type": "image/jpeg", **AUTH}, timeout=30).json()
    broken = photo.read_bytes()[:3000]
    api_error = httpx.post(f"{server_url}/v1/classify", content=broken,
                           headers={"content-type": "image/jpeg", **AUTH}, timeout=30).json()
    labels = httpx.get(f"{server_url}/v1/info", headers=AUTH, timeout=5).json()["labels"]
    wrong = generate_key()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            requested: list[str] = []
            page_errors: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(f"{server_url}/")

            # 0. the page asks for the key: a wrong one is refused and forgotten, the right one kept for the tab
            page.wait_for_selector("#key-form:not([hidden])", timeout=10_000)
            assert page.is_hidden("#key-error")  # nothing tried yet, nothing wrong
            page.fill("#api-key", wrong)
            page.click("#key-form button")
            page.wait_for_selector("#key-error:not([hidden])", timeout=10_000)
            assert page.inner_text("#key-error") == "401: the API key is not valid for this service"
            assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") is None
            assert page.input_value("#api-key") == ""
            page.fill("#api-key", KEY)
            page.click("#key-form button")
            page.wait_for_selector("#model-info:has-text('variant fp32')", timeout=10_000)
            assert page.is_hidden("#key-form")
            assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") == KEY
            page.reload()  # asked once: the tab keeps the key
            page.wait_for_selector("#model-info:has-text('variant fp32')", timeout=10_000)
            assert page.is_hidden("#key-form")
            assert KEY not in page.content() and KEY not in page.url

            # 1. choose a file: the bars show every label of the bundle with the API's scores
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#result[data-state='done']", timeout=15_000)
            bars = page.eval_on_selector_all(
                "#bars li",
                "items => items.map(li => [li.dataset.label, Number(li.dataset.score),"
                " li.querySelector('.pct').textContent, li.classList.contains('chosen'),"
                " li.querySelector('.fill').getBoundingClientRect().width"
                " / li.querySelector('.track').getBoundingClientRect().width])",
            )
            assert [bar[0] for bar in bars] == labels
            for label, score, percent, chosen, drawn in bars:
                assert score == api["scores"][label]  # the same model on the same bytes: identical
                assert float(percent.rstrip("%")) == pytest.approx(100 * api["scores"][label], abs=0.051)
                assert drawn == pytest.approx(api["scores"][label], abs=0.01)  # the bar as rendered
                assert chosen == (label == api["label"])
            assert page.inner_text("#decision") == api["label"]
            # the manipulation score, by the bundle's rule (P(fake) for this bundle)
            assert float(page.get_attribute("#score", "data-score") or "nan") == api["score"] == api["scores"]["fake"]
            assert page.inner_text("#score").startswith("manipulation score P(fake) = ")
            assert "ms" in page.inner_text("#latency")
            assert float(page.get_attribute("#latency", "data-server-ms") or "0") > 0
            assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth > 0")

            # 2. drop a broken file on the drop zone: the API's error message is shown
            page.evaluate(
                """([bytes, name]) => {
                    const transfer = new DataTransfer();
                    transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
                    const drop = document.getElementById("drop");
                    drop.dispatchEvent(
                        new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
                }""",
                [list(broken), "broken.jpg"],
            )
            page.wait_for_selector("#result[data-state='error']", timeout=15_000)
            assert page.inner_text("#error") == f"400: {api_error['message']}"
            assert page.eval_on_selector_all("#bars li", "items => items.length") == 0
            assert page.inner_text("#score") == ""
        finally:
            browser.close()

    assert page_errors == []
    outside = [url for url in requested if not url.startswith((server_url, "blob:", "data:"))]
    assert outside == [], "the page loaded something from outside the service"
    assert f"{server_url}/static/app.js" in requested and f"{server_url}/static/app.css" in requested
