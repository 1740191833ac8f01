"""HTTP service for appliances (needs the [serve] extra: fastapi, uvicorn, python-multipart, prometheus-client).

>>> from deepfake_edge import Detector                          # doctest: +SKIP
>>> from deepfake_edge.apikeys import load_api_keys
>>> from deepfake_edge.serve import ServeConfig, create_app, serve
>>> keys = load_api_keys()  # DEEPFAKE_EDGE_API_KEY, else the generated key file
>>> app = create_app(Detector.load("bundle/"), ServeConfig(max_batch=8), api_keys=keys)
>>> serve(app, host="127.0.0.1", port=8000)

Importing this package stays light; FastAPI is imported on first use of
``create_app``/``serve``/``ServerThread``, and a missing extra raises
:class:`~deepfake_edge.errors.ExtraNotInstalledError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..extras import require_extra
from .config import ServeConfig

if TYPE_CHECKING:
    from .app import create_app
    from .server import ServerThread, serve

__all__ = ["ServeConfig", "ServerThread", "create_app", "serve"]

_LAZY = {"create_app": ".app", "serve": ".server", "ServerThread": ".server"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_extra("serve")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
