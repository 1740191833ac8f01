"""Run an ONNX model with some intermediate tensors exposed as outputs.

Calibration-driven recipes (smoothing, sensitivity search) need statistics of
activations inside the graph; onnxruntime only returns graph outputs, so we
add the wanted tensors to a copy of the model's output list.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from deepfake_edge.session import create_session


def iter_tensors(
    model: onnx.ModelProto, names: Sequence[str], pixel_values: np.ndarray
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{name: value}`` for each image of ``pixel_values`` (one image per run)."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in existing
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, path)
        # Graph optimizations may fuse away the tensors we asked for; basic
        # level keeps every named intermediate value.
        session = create_session(path, optimization="basic")
        for image in pixel_values:
            values = session.run(list(names), {"pixel_values": image[None]})
            yield dict(zip(names, values, strict=True))


def capture_max_abs(model: onnx.ModelProto, names: Sequence[str], pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |value| of each tensor over all images and tokens."""
    out: dict[str, np.ndarray] = {}
    for values in iter_tensors(model, names, pixel_values):
        for name, value in values.items():
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out
