"""Describe the machine a benchmark ran on: CPU, ISA flags that matter, cores, memory, versions.

A latency table without the machine is not reproducible, so every results file
carries this description. Besides the standard library it reads the CPU the way
the runtime's ``variant="auto"`` does (``variant_choice.cpu_info``), and imports
no measured library of its own (torch, optimum).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from deepfake_edge.variant_choice import cpu_info

__all__ = ["ISA_FLAGS", "LIBRARIES", "describe_machine", "library_versions", "load_average", "summary_line"]

# The flags that decide which kernels onnxruntime and torch pick: AVX-512 VNNI
# is the int8 dot product dynamic quantization relies on, BF16/AMX would allow
# faster paths. Listed in order of increasing capability.
ISA_FLAGS: tuple[str, ...] = (
    "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
)

# Distributions whose versions change the numbers (missing ones are reported as None).
LIBRARIES: tuple[str, ...] = (
    "deepfake-edge", "numpy", "pillow", "onnxruntime", "torch", "transformers", "optimum", "optimum-onnx",
)


def _memory_gb(path: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)  # kB -> GiB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: a busy machine makes every number slower, so it is recorded."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_machine() -> dict[str, Any]:
    """A JSON-ready description of this machine and the library versions installed."""
    model, flags = cpu_info()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "architecture": platform.machine(),
        "isa_flags": [flag for flag in ISA_FLAGS if flag in flags],
        "logical_cpus": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "memory_gib": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "load_average_at_start": load_average(),
    }


def summary_line(machine: dict[str, Any]) -> str:
    """One human line, e.g. 'AMD EPYC, 2 cores, 23.4 GiB, avx512_vnni avx512_bf16; Python 3.11.2'."""
    special = [f for f in machine.get("isa_flags", []) if f.startswith(("avx512_", "amx", "avx_vnni"))]
    flags = " ".join(special) or "no VNNI/AMX"
    memory = f"{machine['memory_gib']} GiB" if machine.get("memory_gib") else "memory unknown"
    return f"{machine['cpu']}, {machine['usable_cores']} cores, {memory}, {flags}; Python {machine['python']}"
