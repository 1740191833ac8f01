"""mkdocs hook: make ``deepfake_edge`` importable (and readable by griffe) from this source tree.

The package is installed from three folders (pyproject's ``package-dir``: ``runtime/`` is
``deepfake_edge``, ``export/`` is ``deepfake_edge.export``, ``benchmarks/`` is
``deepfake_edge.benchmarks``). griffe reads packages from folders named like them and does
not follow setuptools' editable mapping, and a fresh clone may have no install at all. So
this hook builds that layout from symlinks in a temporary folder and puts it first on
``sys.path``, where mkdocstrings' static reader (griffe searches ``sys.path``) and the
other hooks' imports find this checkout's code.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]
_STAGE: tempfile.TemporaryDirectory[str] | None = None


def _stage() -> Path:
    global _STAGE
    _STAGE = tempfile.TemporaryDirectory(prefix="deepfake-edge-docs-")
    package = Path(_STAGE.name) / "deepfake_edge"
    package.mkdir()
    for entry in (ROOT / "runtime").iterdir():
        (package / entry.name).symlink_to(entry)
    for name in ("export", "benchmarks"):
        (package / name).symlink_to(ROOT / name)
    return Path(_STAGE.name)


@event_priority(100)  # before mkdocstrings reads its search paths
def on_config(config: Any) -> Any:
    for name in [m for m in sys.modules if m == "deepfake_edge" or m.startswith("deepfake_edge.")]:
        del sys.modules[name]  # an installed copy from another checkout must not answer for this one
    sys.path.insert(0, str(_stage()))
    return config


def on_shutdown() -> None:
    if _STAGE is not None:
        _STAGE.cleanup()
