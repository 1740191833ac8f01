"""fp32 ONNX export through Optimum, with our ``image-classification`` config registered."""

from __future__ import annotations

from pathlib import Path

from optimum.exporters.onnx import onnx_export_from_model

from . import onnx_config
from .checkpoint import Checkpoint
from .errors import ExportError

ONNX_TASK = onnx_config.TASK


def export_fp32(checkpoint: Checkpoint, out_dir: Path, *, opset: int | None = None) -> Path:
    """Write ``model.onnx``, ``config.json`` and ``preprocessor_config.json`` into ``out_dir``.

    Optimum's own validation runs on random dummy inputs; we skip it because
    ``validate.py`` checks parity on real photos with a stricter tolerance.
    """
    onnx_config.ensure_registered()
    onnx_export_from_model(
        checkpoint.model,
        out_dir,
        task=ONNX_TASK,
        opset=opset,
        do_validation=False,
        preprocessors=[checkpoint.processor],
    )
    checkpoint.processor.save_pretrained(out_dir)
    model = out_dir / "model.onnx"
    if not model.is_file():
        raise ExportError(f"Optimum did not write {model}")
    if any(p.name.endswith((".onnx_data", ".data")) for p in out_dir.iterdir()):
        raise ExportError("the model exported with external weight data (>2 GB), which bundles do not support yet")
    return model
