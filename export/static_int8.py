"""``int8-static``: calibrated QDQ int8 (fixed activation ranges, batch-invariant).

Activation ranges are measured once on the calibration images, so no run-time
range computation is needed and a batch cannot influence an image's result.
Smoothing is applied first: static per-tensor ranges suffer most from the
LayerNorm outlier channels (that is the setting SmoothQuant was designed for).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .attention_fusion import fuse_attention
from .build_context import BuildContext
from .gelu_fusion import fuse_gelu
from .smoothing import smooth_layernorms

STATIC_ALPHA = 0.5


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an NCHW array."""

    def __init__(self, pixel_values: np.ndarray) -> None:
        self._items = iter(pixel_values)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {"pixel_values": item[None]}


def build_static_int8(ctx: BuildContext) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model, gelus = fuse_gelu(onnx.load(ctx.fp32), ctx.num_heads, ctx.hidden_size)
    model = smooth_layernorms(model, ctx.calibration, alpha=STATIC_ALPHA)[0]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "smoothed.onnx"
        onnx.save(model, src)
        # The calibrator prints progress to stdout; keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(
                src, ctx.out, _Reader(ctx.calibration),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"], calibrate_method=CalibrationMethod.Percentile,
                extra_options={"MatMulConstBOnly": True, "CalibPercentile": 99.99},
            )
    # Fuse attention after quantization: the QDQ pass leaves attention MatMuls untouched.
    fused, attention = fuse_attention(onnx.load(ctx.out), ctx.num_heads)
    onnx.save(fused, ctx.out)
    return {"smoothing_alpha": STATIC_ALPHA, "calibration_images": len(ctx.calibration_names),
            "calibrate_method": "Percentile 99.99", "attention_fused": attention, "gelu_fused": gelus}
