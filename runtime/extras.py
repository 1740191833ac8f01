"""The optional extras, as data, and the one check that an extra is installed.

Every command or backend with heavy dependencies calls :func:`require_extra`
first, so a missing extra is one clear ``ExtraNotInstalledError`` (exit 3 with
the pip command), never an ``ImportError`` traceback from a third-party package.
The check finds modules without importing them: it stays cheap and keeps
``import deepfake_edge`` free of torch, av, ray and openvino.
"""

from __future__ import annotations

import importlib.util

from .errors import ExtraNotInstalledError

__all__ = ["EXTRAS", "importable", "require_extra"]

#: extra -> {distribution pip installs: import names that provide it (any one suffices)}.
#: Mirrors ``[project.optional-dependencies]`` in pyproject.toml.
EXTRAS: dict[str, dict[str, tuple[str, ...]]] = {
    "export": {"torch": ("torch",), "transformers": ("transformers",),
               "optimum-onnx": ("optimum.exporters.onnx",), "onnx": ("onnx",), "scipy": ("scipy",)},
    "bench": {"torch": ("torch",), "transformers": ("transformers",), "optimum-onnx": ("optimum.onnxruntime",),
              "onnx": ("onnx",), "matplotlib": ("matplotlib",)},
    # python-multipart is ``python_multipart`` from 0.0.13 on and ``multipart`` before.
    "serve": {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",),
              "python-multipart": ("python_multipart", "multipart"), "prometheus-client": ("prometheus_client",),
              "fastapi-offline": ("fastapi_offline",)},
    "demo": {"gradio": ("gradio",)},
    "openvino": {"openvino": ("openvino",)},
    "video": {"av": ("av",)},
    "mqtt": {"paho-mqtt": ("paho.mqtt",)},
    "ray": {"ray": ("ray",), "pyarrow": ("pyarrow",)},
}


def importable(module: str) -> bool:
    """True if ``module`` can be imported (found on the path), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # parent package missing / a module object without __spec__
        return False


def require_extra(extra: str) -> None:
    """Raise ``ExtraNotInstalledError`` for the first distribution of ``extra`` that is not importable."""
    for distribution, modules in EXTRAS[extra].items():
        if not any(importable(module) for module in modules):
            raise ExtraNotInstalledError(extra, distribution)
