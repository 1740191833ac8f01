"""This machine's limits: GEMM peaks, the model's FLOPs (checked against torch's own count), the floors."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from deepfake_edge.benchmarks.limits import (
    machine_limits,
    model_flops,
    place_rows,
    render_limits,
    time_floors,
)
from deepfake_edge.benchmarks.models import ARCHITECTURES

torch = pytest.importorskip("torch", reason="the FLOP reference is torch's FlopCounterMode ([export] extra)")


@pytest.mark.parametrize("name", ["tiny", "siglip-base-patch16-512"])
def test_model_flops_match_torchs_count(name: str) -> None:
    """Independent reference: torch counts the FLOPs of every matmul, linear and conv the vision tower runs."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import SiglipVisionConfig, SiglipVisionModel

    arch = ARCHITECTURES[name]
    config = SiglipVisionConfig(hidden_size=arch.hidden_size, num_hidden_layers=arch.num_hidden_layers,
                                num_attention_heads=arch.num_attention_heads, intermediate_size=arch.intermediate_size,
                                patch_size=arch.patch_size, image_size=arch.image_size, vision_use_head=False,
                                attn_implementation="eager")
    with torch.device("meta"):  # no weights or activations are materialized: only shapes matter
        model = SiglipVisionModel(config).eval()
        pixels = torch.zeros(1, 3, arch.image_size, arch.image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(pixel_values=pixels)
    ours = model_flops(asdict(arch))
    assert ours["weight_gemm"] + ours["attention"] == counter.get_total_flops()
    if name == "siglip-base-patch16-512":  # the figures quoted in the README
        assert round(ours["weight_gemm"] / 1e9) == 175 and round(ours["attention"] / 1e9) == 39


def test_peaks_are_measured_and_floors_follow() -> None:
    limits = machine_limits(1, asdict(ARCHITECTURES["siglip-base-patch16-512"]), size=256)
    peaks = limits["peaks"]
    assert peaks["fp32_gflops"] > 0 and peaks["int8_gops"] > 0 and peaks["threads"] == 1
    flops, floors = limits["flops"], limits["floors"]
    fp32_flops = flops["weight_gemm"] + flops["attention"]
    assert floors["fp32+fp32"] == pytest.approx(fp32_flops / (peaks["fp32_gflops"] * 1e9))
    assert set(floors) == {"fp32+fp32", "int8+fp32", "int8+int8"}
    text = "\n".join(render_limits(limits))
    assert f"{peaks['fp32_gflops']:,.0f} GFLOP/s" in text and "int8 + fp32" in text


def _row(label: str, variant: str, latency_s: float, **extra: Any) -> dict[str, Any]:
    return {"label": label, "variant": variant, "status": "ok", "batch_size": 1,
            "latency_ms": {"p50": latency_s * 1e3}, **extra}


def test_each_engine_is_placed_against_its_floor() -> None:
    flops = {"weight_gemm": 174e9, "attention": 39e9, "tokens": 1024.0}
    peaks = {"fp32_gflops": 200.0, "int8_gops": 800.0, "threads": 2, "size": 2048}
    floors = time_floors(flops, peaks)
    assert floors["int8+fp32"] == pytest.approx(174 / 800 + 39 / 200)
    rows = [_row("torch fp32", "fp32", 2 * floors["fp32+fp32"]), _row("deepfake-edge int8", "int8", 0.6),
            _row("failed", "int8", 1.0, status="failed"), {**_row("batched", "int8", 1.0), "batch_size": 8}]
    placed = {p["label"]: p for p in place_rows(rows, flops, peaks)}
    assert set(placed) == {"torch fp32", "deepfake-edge int8"}  # failed and batched rows are not placed
    assert placed["torch fp32"]["vs_floor"] == pytest.approx(2.0)
    assert placed["torch fp32"]["fraction_of_peak"] == pytest.approx(0.5)
    int8 = placed["deepfake-edge int8"]
    assert int8["floor_s"] == pytest.approx(floors["int8+fp32"])
    assert int8["vs_floor"] == pytest.approx(0.6 / floors["int8+fp32"])
    assert int8["vs_machine_floor"] == pytest.approx(0.6 / floors["int8+int8"])
    assert "deepfake-edge int8" in "\n".join(render_limits({"peaks": peaks, "flops": flops, "floors": floors,
                                                              "engines": list(placed.values())}))
