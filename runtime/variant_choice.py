"""``variant="auto"``: the fastest variant of a bundle that is faithful, installed and suits this machine.

The choice is a pure function of data, :func:`choose_variant` (manifest, machine)
-> (variant, reason), so every rule is tested over described machines;
:meth:`Machine.detect` is the only part that looks at the real one.

A variant is eligible when
* it passed the fidelity gate: fp32 is the reference; a gated recipe must have met
  its budget on the export's held-out images (the export records that under
  ``validation.fidelity_budget``; bundles from before the held-out gate record a
  calibration verdict too, and must have met both); a variant exported without the
  gate (``--no-tune``, or an ungated recipe) must show held-out fidelity within that budget;
* its engine is installed (OpenVINO is an extra);
* it suits the machine (``PREFERENCE`` below).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .extras import importable
from .manifest import Manifest

__all__ = ["AUTO", "GPU_PROVIDERS", "PREFERENCE", "Choice", "Machine", "choose_variant", "cpu_info", "passed_gate"]

AUTO = "auto"

# onnxruntime execution providers that run fp16 on a GPU.
GPU_PROVIDERS: tuple[str, ...] = (
    "CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
)
# OpenVINO runs int8-ov's non-GEMM work (attention included) in bf16 only where the CPU has it; without
# bf16 it falls back to fp32 and loses its lead over onnxruntime's int8.
BF16_FLAGS: frozenset[str] = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Requirement:
    """What a variant needs of the machine beyond its engine: any one CPU flag, any one provider."""

    cpu_flags: frozenset[str] = frozenset()
    providers: tuple[str, ...] = ()
    why: str = ""


# Fastest first (batch-1 latency measured on the base-512 model: README, "Speed"). A variant not
# listed is never picked automatically: nothing says where it ranks.
PREFERENCE: tuple[tuple[str, Requirement], ...] = (
    ("fp16", Requirement(providers=GPU_PROVIDERS, why="a GPU execution provider is available")),
    ("int8-ov", Requirement(cpu_flags=BF16_FLAGS, why="OpenVINO is installed and the CPU has bf16 (AVX512-BF16/AMX)")),
    ("int8", Requirement(why="onnxruntime int8 runs on every CPU")),
    ("int8-static", Requirement(why="onnxruntime int8 runs on every CPU")),
    ("int8-ort", Requirement(why="onnxruntime int8 runs on every CPU")),
    ("int4", Requirement(why="onnxruntime int4 runs on every CPU")),
    ("fp32", Requirement(why="the fp32 reference runs everywhere")),
)

# The export's default fidelity budget (``export.fidelity.FidelityBudget``), used for variants exported
# without a recorded one. A limit that is None is not judged.
DEFAULT_BUDGET: dict[str, float | None] = {"min_agreement": 1.0, "p99_abs_dp": 0.02, "mean_abs_dp": 0.0025,
                                           "max_abs_dp": None}


@dataclass(frozen=True)
class Machine:
    """What the choice needs to know of a machine."""

    cpu_flags: frozenset[str]
    engines: frozenset[str]  # inference engines installed: "onnxruntime", "openvino"
    providers: tuple[str, ...]  # onnxruntime execution providers the session may use

    @classmethod
    def detect(cls, providers: Sequence[str] | None = None) -> Machine:
        """This machine; ``providers`` are the caller's choice, else every provider this onnxruntime has."""
        import onnxruntime as ort

        engines = {"onnxruntime"} | ({"openvino"} if importable("openvino") else set())
        return cls(cpu_info()[1], frozenset(engines),
                   tuple(providers) if providers else tuple(ort.get_available_providers()))


@dataclass(frozen=True)
class Choice:
    variant: str
    reason: str
    providers: tuple[str, ...] | None = None  # None: the caller's (or the default CPU) providers


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> tuple[str | None, frozenset[str]]:
    """(model name, flags) of the first CPU listed in /proc/cpuinfo; (None, no flags) elsewhere."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, frozenset()
    model: str | None = None
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model is not None and flags:
            break
    return model, flags


def _number(value: object) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None  # type: ignore[arg-type]


def _misses(fidelity: Mapping[str, Any], budget: Mapping[str, Any]) -> list[str]:
    agreement = _number(fidelity.get("agreement_beyond_margin", fidelity.get("label_agreement")))
    max_dp, mean_dp = _number(fidelity.get("max_abs_dp")), _number(fidelity.get("mean_abs_dp"))
    # Records from before p99 was measured: their max bounds the p99 from above.
    p99_dp = _number(fidelity.get("p99_abs_dp", fidelity.get("max_abs_dp")))
    if agreement is None or max_dp is None or mean_dp is None or p99_dp is None:
        return ["its recorded fidelity is incomplete"]
    # A recorded budget from before the held-out gate has no p99 limit: it is judged as it was then.
    limits = budget if "max_abs_dp" in budget or "p99_abs_dp" in budget else DEFAULT_BUDGET
    misses = []
    checks = (("min_agreement", agreement, "label agreement {:.2%}", True),
              ("p99_abs_dp", p99_dp, "p99 |dP| {:.4f}", False),
              ("mean_abs_dp", mean_dp, "mean |dP| {:.5f}", False),
              ("max_abs_dp", max_dp, "max |dP| {:.4f}", False))
    for key, value, words, at_least in checks:
        limit = _number(limits.get(key))
        if limit is not None and (value < limit if at_least else value > limit):
            misses.append(words.format(value))
    return misses


def _figures(fidelity: Mapping[str, Any] | None, record: Mapping[str, Any]) -> str:
    """" on 208 held-out images (p99 |dP| 0.0133, mean 0.00190)", from what the export recorded."""
    if record.get("judged_on") != "held_out" or not isinstance(fidelity, Mapping):
        return ""
    p99, mean = _number(fidelity.get("p99_abs_dp")), _number(fidelity.get("mean_abs_dp"))
    numbers = f" (p99 |dP| {p99:.4f}, mean {mean:.5f})" if p99 is not None and mean is not None else ""
    return f" on {record.get('held_out_images')} held-out images{numbers}"


def passed_gate(manifest: Manifest, name: str) -> tuple[bool, str]:
    """Whether variant ``name`` passed the fidelity gate, and in what words."""
    if name == "fp32":
        return True, "the fp32 reference"
    records = manifest.validation.get("fidelity_budget")
    records = records if isinstance(records, dict) else {}
    record = records.get(name)
    if isinstance(record, dict) and "met_on_held_out" in record:
        judged = ("held_out",) if record.get("judged_on") == "held_out" else ("calibration", "held_out")
        missed = [where for where in judged if record.get(f"met_on_{where}") is not True]
        if missed:
            where = " and ".join(w.replace("_", "-") for w in missed)
            return False, f"missed its fidelity budget on the {where} images"
        return True, "met its fidelity budget" + _figures(manifest.variants[name].fidelity, record)
    fidelity = manifest.variants[name].fidelity
    if not isinstance(fidelity, dict):
        return False, "no fidelity recorded"
    budgets = (r["budget"] for r in records.values() if isinstance(r, dict) and isinstance(r.get("budget"), dict))
    recorded = next(budgets, DEFAULT_BUDGET)
    misses = _misses(fidelity, recorded)
    if misses:
        return False, "held-out fidelity outside the budget (" + ", ".join(misses) + ")"
    return True, "held-out fidelity within budget (not gated at export)"


def choose_variant(manifest: Manifest, machine: Machine) -> Choice:
    """The fastest variant that passed the fidelity gate, has its engine installed and suits ``machine``."""
    skipped: list[str] = []
    for name, need in PREFERENCE:
        if name not in manifest.variants:
            continue
        spec = manifest.variants[name]
        if spec.backend not in machine.engines:
            skipped.append(f"{name}: {spec.backend} not installed")
            continue
        if need.cpu_flags and not need.cpu_flags & machine.cpu_flags:
            skipped.append(f"{name}: CPU lacks {'/'.join(sorted(need.cpu_flags))}")
            continue
        gpu = next((p for p in need.providers if p in machine.providers), None)
        if need.providers and gpu is None:
            skipped.append(f"{name}: no GPU execution provider")
            continue
        ok, gate = passed_gate(manifest, name)
        if not ok:
            skipped.append(f"{name}: {gate}")
            continue
        providers = (gpu, "CPUExecutionProvider") if gpu else None
        others = f"; skipped {'; '.join(skipped)}" if skipped else ""
        return Choice(name, f"{need.why}; {gate}{others}", providers)
    default = manifest.default_variant
    return Choice(default, f"no ranked variant is eligible ({'; '.join(skipped) or 'none in the bundle'}); "
                           "using the bundle's default")
