"""Variant recipes: how each ONNX file of a bundle is made from the fp32 export.

A recipe is data (name, file, description, settings recorded in the manifest)
plus one build function ``(fp32_model, out_path) -> None``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    file: str
    description: str
    build: Callable[[Path, Path], None]
    batch_invariant: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    def manifest_entry(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, **self.settings}


def _copy(fp32: Path, out: Path) -> None:
    if fp32 != out:
        shutil.copyfile(fp32, out)


# Dynamic int8, per-channel weights, MatMul only. MatMulConstBOnly leaves the
# attention matmuls (activation x activation) in fp32: quantizing them cost
# fidelity and bought no speed on this model (shared/notes/MEASUREMENTS.md).
_INT8_DYNAMIC: dict[str, Any] = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "per_channel": True,
    "reduce_range": False,  # VNNI has no u8 x s8 overflow issue, so the full 8 bits are usable
    "weight_type": "QInt8",
    "op_types_to_quantize": ["MatMul"],
    "extra_options": {"MatMulConstBOnly": True},
}


def _int8_dynamic(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32,
        out,
        per_channel=_INT8_DYNAMIC["per_channel"],
        reduce_range=_INT8_DYNAMIC["reduce_range"],
        weight_type=QuantType.QInt8,
        op_types_to_quantize=_INT8_DYNAMIC["op_types_to_quantize"],
        extra_options=_INT8_DYNAMIC["extra_options"],
    )


RECIPES: dict[str, Recipe] = {
    "fp32": Recipe(
        name="fp32",
        file="model.onnx",
        description="The fp32 export, validated against torch; the reference for every other variant.",
        build=_copy,
        settings={"method": "optimum.exporters.onnx"},
    ),
    "int8": Recipe(
        name="int8",
        file="model_int8.onnx",
        description="Dynamic int8: per-channel int8 weights for every MatMul with a constant weight; "
        "activations quantized per tensor at run time; attention matmuls stay fp32.",
        build=_int8_dynamic,
        # one activation scale per run over the whole batch -> run per image
        batch_invariant=False,
        settings=_INT8_DYNAMIC,
    ),
}

DEFAULT_VARIANTS: tuple[str, ...] = ("fp32", "int8")
DEFAULT_VARIANT = "int8"
