"""The service shows an upload's file name; one that is a URL with a password shows it masked."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the service tests need the [serve] extra")

from deepfake_edge import Detector

from serve_helpers import running


def test_upload_names_that_hold_credentials_are_masked(fp32: Detector, photos: list[tuple[str, bytes]],
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    secret = "Hunter2-Sekr3t"
    names = [f"rtsp://admin:{secret}@cam/still.png", f"https://cam/snap.png?token={secret}"]
    with running(fp32) as (_, client):
        response = client.post("/v1/classify/batch", files=[
            ("files", (names[0], photos[0][1], "application/octet-stream")),
            ("files", (names[1], photos[0][1][:300], "image/png")),  # broken: its error message names it
        ])
        assert response.status_code == 200, response.text
        items = response.json()
    assert [item["source"] for item in items] == ["rtsp://admin:***@cam/still.png", "https://cam/snap.png?token=***"]
    assert items[0]["label"] == fp32.predict_one(photos[0][1]).label
    assert items[1]["message"].startswith("https://cam/snap.png?token=***: ")
    captured = capfd.readouterr()
    assert secret not in response.text + captured.out + captured.err
