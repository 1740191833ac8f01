"""The export side of deepfake-edge (needs the ``[export]`` extra: torch, transformers, optimum-onnx).

Importing this package registers Optimum's missing ``siglip`` /
``image-classification`` ONNX config.
"""

from __future__ import annotations

from .budget import FidelityBudget
from .checkpoint import DEFAULT_MODEL
from .errors import ExportError, FidelityBudgetError, ValidationError
from .pipeline import export_bundle
from .recipes import DEFAULT_VARIANT, DEFAULT_VARIANTS, RECIPES

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_VARIANT",
    "DEFAULT_VARIANTS",
    "RECIPES",
    "ExportError",
    "FidelityBudget",
    "FidelityBudgetError",
    "ValidationError",
    "export_bundle",
]
