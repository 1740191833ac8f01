"""Errors of the export side, all under the runtime's base error::

    DeepfakeEdgeError
    ├── ExportError (RuntimeError)       the checkpoint could not be exported
    │   ├── ValidationError              fp32 ONNX disagrees with torch beyond the tolerance
    │   └── FidelityBudgetError          a quantized variant missed its budget under ``--strict``
    └── ProxyBuildError (RuntimeError)   the real-weights proxy checkpoint could not be built
        └── TransplantCheckError         the transplant does not reproduce the original backbone
"""

from __future__ import annotations

from deepfake_edge.errors import DeepfakeEdgeError


class ExportError(DeepfakeEdgeError, RuntimeError):
    """The checkpoint could not be exported."""


class ValidationError(ExportError):
    """The fp32 ONNX model disagrees with torch beyond the tolerance."""


class FidelityBudgetError(ExportError):
    """A quantized variant missed its fidelity budget under ``--strict``."""


class ProxyBuildError(DeepfakeEdgeError, RuntimeError):
    """The real-weights proxy checkpoint could not be built."""


class TransplantCheckError(ProxyBuildError):
    """The transplanted torch model does not reproduce the original ONNX backbone."""
