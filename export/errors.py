"""Errors of the export step (subclasses of the runtime's base error)."""

from __future__ import annotations

from deepfake_edge.errors import DeepfakeEdgeError


class ExportError(DeepfakeEdgeError, RuntimeError):
    """The checkpoint could not be exported."""


class ValidationError(ExportError):
    """The fp32 ONNX model disagrees with torch beyond the tolerance."""


class FidelityBudgetError(ExportError):
    """A quantized variant missed its fidelity budget under ``--strict``."""
