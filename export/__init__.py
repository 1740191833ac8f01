"""The export side of deepfake-edge: checkpoint -> validated fp32 ONNX -> quantized variants -> bundle.

``export_bundle`` needs the ``[export]`` extra (torch, transformers,
optimum-onnx); its names load on first use, so the light modules
(``sample_images``, ``errors``) and :data:`DEFAULT_MODEL` import without it.

Modules, by concern:

* ``pipeline``: ``export_bundle``, the whole run;
* ``onnx_export``: checkpoint loading, Optimum's SigLIP config, the fp32 export and its validation against torch;
* ``recipes``: the recipe table and the recipes that drive a library (int8-ort, int8-static, int4, fp16);
* ``int8``: our int8 recipes (int8, int8-ov);
* ``calibration``: the one fp32 pass over the calibration images (reference logits, ranges, Hessians);
* ``tuning``: their calibration-driven passes (smoothing, GPTQ, sensitivity, the search);
* ``effort``: how hard the search looks (``--effort``), as data;
* ``quantize``: the int8 graph rewrites (per-token, weights-only);
* ``fusions``: attention and GELU fusion;
* ``graph``: graph lookups, rewrites and probes shared by the passes;
* ``fidelity``: fidelity against fp32 and the budget;
* ``bundle_writer``: the bundle directory and its manifest entries;
* ``sample_images``: photos shipped in wheels and synthetic images;
* ``proxy``: the real-weights proxy checkpoint (``python -m deepfake_edge.export.proxy``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ExportError, FidelityBudgetError, ValidationError

if TYPE_CHECKING:
    from .fidelity import FidelityBudget
    from .pipeline import export_bundle, quiet_third_party_logs
    from .recipes import DEFAULT_VARIANT, DEFAULT_VARIANTS, RECIPES

DEFAULT_MODEL = "prithivMLmods/deepfake-detector-model-v1"

# name -> the module that defines it, imported on first use: it needs the [export] extra.
_HEAVY: dict[str, str] = {
    "FidelityBudget": "fidelity",
    "export_bundle": "pipeline",
    "quiet_third_party_logs": "pipeline",
    "DEFAULT_VARIANT": "recipes",
    "DEFAULT_VARIANTS": "recipes",
    "RECIPES": "recipes",
}

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
    "quiet_third_party_logs",
]


def __getattr__(name: str) -> Any:
    if name not in _HEAVY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HEAVY[name]}", __name__), name)
    globals()[name] = value
    return value
