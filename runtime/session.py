"""The one place that creates inference sessions (engine, providers, threads, options).

Every variant runs on onnxruntime, except those whose manifest names the
``openvino`` backend (see ``openvino_session``), which get an object with the
same ``get_inputs``/``get_outputs``/``run`` methods.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from .errors import BundleError, BundleFileMissingError
from .extras import require_extra

__all__ = ["BACKENDS", "DEFAULT_PROVIDERS", "ORT_ERRORS", "create_session", "default_threads", "require_backend"]

BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino")
# The optional extra each engine but onnxruntime (a base dependency) needs: {distribution: import names}.
_BACKEND_EXTRAS: dict[str, dict[str, tuple[str, ...]]] = {"openvino": {"openvino": ("openvino",)}}

DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)

# onnxruntime's Python errors derive straight from Exception; name them so a
# corrupt model becomes a BundleError while real bugs stay visible.
ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, OSError) + tuple(
    getattr(_ort_state, name)
    for name in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
                 "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    if hasattr(_ort_state, name)
)


def default_threads() -> int:
    """Physical parallelism available to this process (respects CPU affinity/cgroups)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_OPTIMIZATION = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


def require_backend(backend: str) -> None:
    """Raise ``ExtraNotInstalledError`` (naming the pip extra) when ``backend``'s engine is not installed."""
    if backend in _BACKEND_EXTRAS:
        require_extra(backend, _BACKEND_EXTRAS[backend])


def create_session(
    path: Path,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    optimization: str = "all",
    backend: str = "onnxruntime",
    backend_options: Mapping[str, str] | None = None,
) -> Any:
    """Open ``path`` with graph optimizations (default: all) and a fixed thread count.

    ``inter_op`` stays at 1: the graph is one sequential chain, and a second pool
    would only compete with the intra-op pool for the same cores. ``backend``
    comes from the variant's manifest entry; ``providers`` apply to onnxruntime only.
    """
    if not path.is_file():
        raise BundleFileMissingError(f"{path}: model file is missing")
    if backend == "openvino":
        require_backend(backend)
        from .openvino_session import OpenVINOSession

        return OpenVINOSession(path, threads=threads or default_threads(), options=backend_options)
    if backend != "onnxruntime":
        raise BundleError(f"{path}: unknown backend {backend!r} (this runtime knows {', '.join(BACKENDS)})")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPTIMIZATION[optimization]
    options.log_severity_level = 3  # errors only; ORT's warnings are not the user's concern
    chosen = list(providers) if providers else list(DEFAULT_PROVIDERS)
    unknown = [p for p in chosen if p not in ort.get_available_providers()]
    if unknown:
        raise BundleError(f"execution providers {unknown} are not available; this onnxruntime has {ort.get_available_providers()}")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except ORT_ERRORS as exc:
        raise BundleError(f"{path}: onnxruntime cannot load this model ({type(exc).__name__}: {exc})") from exc
