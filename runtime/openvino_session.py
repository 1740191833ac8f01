"""An OpenVINO compiled model behind the three methods the runtime uses of an onnxruntime session.

Only variants whose manifest names ``backend: "openvino"`` come here (the
``int8-ov`` recipe). OpenVINO is an optional extra (``deepfake-edge[openvino]``)
and is imported only when such a variant is loaded.

Why a second engine at all: on this project's target CPUs OpenVINO's CPU plugin
runs int8-weight GEMMs with dynamically quantized activations (groups of 64
channels per token) and everything else in bf16 where the CPU has it
(AVX512-BF16, AMX), with its own fused attention. That is about 20 % faster
than onnxruntime's int8 here, with fidelity in the same range (README,
"Quantization"); onnxruntime has no bf16 CPU kernels and no fused
low-precision attention.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError

__all__ = ["OpenVINOSession"]

_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)"}
# The options a bundle may set: how to compute, never where to write (CACHE_DIR) or how many threads.
ALLOWED_OPTIONS = frozenset({"INFERENCE_PRECISION_HINT", "DYNAMIC_QUANTIZATION_GROUP_SIZE"})


@dataclass(frozen=True)
class Port:
    """What ``Detector`` reads of an onnxruntime ``NodeArg``: name, shape (int or symbolic), type."""

    name: str
    shape: list[int | str]
    type: str


def _ports(port: Any) -> list[Port]:
    """One ``Port`` per name of the tensor: OpenVINO merges the names of tensors its
    conversion made identical (``pixel_values`` and the ``Cast`` after it), and any of
    them addresses the same input."""
    dims: list[int | str] = [int(d.get_length()) if d.is_static else f"dim{i}"
                             for i, d in enumerate(port.get_partial_shape())]
    kind = _TYPES.get(port.get_element_type().get_type_name(), "tensor(unknown)")
    return [Port(name, dims, kind) for name in sorted(port.get_names())]


def _compile(core: Any, path: Path, config: dict[str, str]) -> Any:
    """Compile from the file path: with ``CACHE_DIR`` set, a cached blob is then loaded without reading the model."""
    try:
        return core.compile_model(str(path), "CPU", config)
    except RuntimeError as exc:
        shown = {k: v for k, v in config.items() if k != "CACHE_DIR"}
        raise BundleError(f"{path}: OpenVINO cannot read or compile this model with options {shown} ({exc})") from exc


class OpenVINOSession:
    """Compiled on the CPU device; ``run`` is safe to call from several threads (one at a time)."""

    def __init__(self, path: Path, *, threads: int, options: Mapping[str, str] | None = None,
                 cache_key: str | None = None) -> None:
        """``cache_key`` (the verified sha256 of ``path``) keeps OpenVINO's compiled blob in the user
        cache, checked like any model file (see ``model_cache``): compiling costs more than loading it."""
        import openvino as ov  # create_session checked that the extra is installed

        refused = sorted(set(options or {}) - ALLOWED_OPTIONS)
        if refused:
            raise BundleError(
                f"{path}: the manifest sets OpenVINO options {refused}; allowed: {sorted(ALLOWED_OPTIONS)}"
            )
        config = {**(options or {}), "INFERENCE_NUM_THREADS": str(threads)}  # the caller's thread count wins
        core = ov.Core()
        if cache_key is None:
            self._compiled = _compile(core, path, config)
        else:
            from .model_cache import cached_directory, compiled_key, storing_directory

            # One directory per model, options and engine: whatever OpenVINO hashes, a blob never
            # serves another model, and our record catches a damaged one.
            key = compiled_key(cache_key, f"openvino {ov.get_version()} {sorted(config.items())}")
            cached = cached_directory("openvino", key)
            if cached is not None:
                self._compiled = _compile(core, path, {**config, "CACHE_DIR": str(cached)})
            else:
                with storing_directory("openvino", key) as directory:
                    extra = {"CACHE_DIR": str(directory)} if directory is not None else {}
                    self._compiled = _compile(core, path, {**config, **extra})
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # an infer request serves one call at a time

    def get_inputs(self) -> list[Port]:
        return [named for p in self._compiled.inputs for named in _ports(p)]

    def get_outputs(self) -> list[Port]:
        return [named for p in self._compiled.outputs for named in _ports(p)]

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            results = self._request.infer(dict(feeds))
            return [np.array(results[self._compiled.output(name)]) for name in output_names]
