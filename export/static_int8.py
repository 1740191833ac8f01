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

from .build_context import BuildContext
from .graph_fusions import fuse_graph
from .per_token_int8 import quantizable_matmuls
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

    model = smooth_layernorms(onnx.load(ctx.fp32), ctx.calibration, alpha=STATIC_ALPHA)[0]
    # Attention's activation x activation MatMuls stay fp32 (the int8 recipe's finding: quantizing
    # them costs fidelity and saves nothing). The QDQ quantizer ignores MatMulConstBOnly, so they are
    # excluded by name; they then still match the attention fusion below.
    weights = {node.name for node in quantizable_matmuls(model)}
    activation_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in weights]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "smoothed.onnx"
        onnx.save(model, src)
        # The calibrator prints progress to stdout; keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(
                src, ctx.out, _Reader(ctx.calibration),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"], nodes_to_exclude=activation_matmuls,
                calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99},
            )
    # Fuse after quantization: the QDQ pass leaves attention MatMuls and GELUs untouched, while
    # fusing the GELUs first would hide their outputs' type from its shape inference, and it would
    # then silently skip quantizing fc2.
    fused, fusions = fuse_graph(onnx.load(ctx.out), ctx.num_heads, ctx.hidden_size)
    onnx.save(fused, ctx.out)
    return {"smoothing_alpha": STATIC_ALPHA, "calibration_images": len(ctx.calibration_names),
            "calibrate_method": "Percentile 99.99", "quantized_matmuls": len(weights), **fusions}
