"""The one place that creates inference sessions (engine, providers, threads, options).

Every variant runs on onnxruntime, except those whose manifest names the
``openvino`` backend (see ``openvino_session``), which get an object with the
same ``get_inputs``/``get_outputs``/``run`` methods.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from .errors import BundleError, BundleFileMissingError
from .extras import require_extra
from .model_cache import cached_directory, compiled_key, storing_directory

__all__ = [
    "BACKENDS", "DEFAULT_PROVIDERS", "INPUT_NAME", "ORT_ERRORS", "OUTPUT_NAME", "create_session", "default_threads",
    "release_freed_memory", "require_backend", "run_logits", "run_outputs",
]

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"  # picked by name: other exports may add outputs

BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino")

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
    if backend != "onnxruntime":  # a base dependency; every other engine is the extra of its name
        require_extra(backend)


def create_session(
    path: Path,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    optimization: str = "all",
    backend: str = "onnxruntime",
    backend_options: Mapping[str, str] | None = None,
    cache_key: str | None = None,
) -> Any:
    """Open ``path`` with graph optimizations (default: all) and a fixed thread count.

    ``inter_op`` stays at 1: the graph is one sequential chain, and a second pool
    would only compete with the intra-op pool for the same cores. ``backend``
    comes from the variant's manifest entry; ``providers`` apply to onnxruntime only.
    ``cache_key`` (the verified sha256 of ``path``) keeps onnxruntime's optimized copy of the
    model in the user cache and loads that copy next time (see ``model_cache``; CPU provider
    and optimization "all" only).
    """
    if not path.is_file():
        raise BundleFileMissingError(f"{path}: model file is missing")
    if backend == "openvino":
        require_backend(backend)
        from .openvino_session import OpenVINOSession

        return OpenVINOSession(path, threads=threads or default_threads(), options=backend_options,
                               cache_key=cache_key)
    if backend != "onnxruntime":
        raise BundleError(f"{path}: unknown backend {backend!r} (this runtime knows {', '.join(BACKENDS)})")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPTIMIZATION[optimization]
    options.log_severity_level = 3  # errors only; ORT's warnings are not the user's concern
    # The memory pattern pre-plans one block for every activation of a run, on top of the arena: on
    # the base-512 int8 model it raised peak RSS by about 33 MB with no measurable speed gain.
    # (Disabling the arena instead doubled the peak.)
    options.enable_mem_pattern = False
    chosen = list(providers) if providers else list(DEFAULT_PROVIDERS)
    unknown = [p for p in chosen if p not in ort.get_available_providers()]
    if unknown:
        raise BundleError(
            f"execution providers {unknown} are not available; this onnxruntime has {ort.get_available_providers()}"
        )
    if cache_key and optimization == "all" and chosen == list(DEFAULT_PROVIDERS):
        session = _cached_session(path, cache_key, options, chosen)
    else:
        session = _session(path, options, chosen)
    release_freed_memory()
    return session


def _session(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except ORT_ERRORS as exc:
        raise BundleError(f"{path}: onnxruntime cannot load this model ({type(exc).__name__}: {exc})") from exc


OPTIMIZED_MODEL, OPTIMIZED_DATA = "model.onnx", "model.data"


def _cached_session(path: Path, source: str, options: ort.SessionOptions, providers: list[str]
                    ) -> ort.InferenceSession:
    """Load onnxruntime's optimized copy of ``path`` from the user cache, creating it on the first load.

    The copy keeps its weights in a separate aligned file, which onnxruntime memory-maps.
    """
    key = compiled_key(source, f"onnxruntime {ort.__version__}")
    cached = cached_directory("optimized", key)
    if cached is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimized
        try:
            return ort.InferenceSession(str(cached / OPTIMIZED_MODEL), sess_options=options, providers=providers)
        except ORT_ERRORS:
            options.graph_optimization_level = _OPTIMIZATION["all"]  # unusable copy: rebuild it below
    with storing_directory("optimized", key) as directory:
        if directory is not None:
            options.optimized_model_filepath = str(directory / OPTIMIZED_MODEL)
            for name, value in (("session.optimized_model_external_initializers_file_name", OPTIMIZED_DATA),
                                ("session.optimized_model_external_initializers_min_size_in_bytes", "1024")):
                options.add_session_config_entry(name, value)
        return _session(path, options, providers)


def release_freed_memory() -> None:
    """Give memory freed to the C heap back to the OS (glibc only; elsewhere this does nothing).

    glibc keeps freed small and mid-sized blocks in the process, so they count in the RSS under
    every later run. Measured on the base-512 int8 model: 35 MB after loading (the parsed protobuf,
    unpacked weights), 10 MB after decoding a 1080p JPEG. It takes well under a millisecond.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or the name is unknown
        return None
    if not libc.startswith("glibc"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def run_logits(session: Any, pixel_values: np.ndarray, *, per_image: bool) -> np.ndarray:
    """The model's logits for an NCHW batch: the one place that runs a session.

    ``per_image`` runs one image per call. Dynamically quantized variants need it:
    their activation scale is computed over the whole input, so batching would
    make an image's result depend on its neighbours. ``pixel_values`` must hold at least one image.
    """
    return run_outputs(session, pixel_values, (OUTPUT_NAME,), per_image=per_image)[0]


def run_outputs(session: Any, pixel_values: np.ndarray, names: Sequence[str], *, per_image: bool
                ) -> list[np.ndarray]:
    """The named outputs for an NCHW batch (see :func:`run_logits`); only these are fetched."""
    if not per_image or pixel_values.shape[0] == 1:
        return list(session.run(list(names), {INPUT_NAME: pixel_values}))
    runs = [session.run(list(names), {INPUT_NAME: pixel_values[i : i + 1]}) for i in range(len(pixel_values))]
    return [np.concatenate([run[j] for run in runs]) for j in range(len(names))]
