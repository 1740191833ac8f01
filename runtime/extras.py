"""Check that an optional extra is installed, without importing it.

Every subcommand with heavy dependencies asks here first, so a missing extra is
one clear ``ExtraNotInstalledError`` (exit 3 with the pip command), never an
``ImportError`` traceback from deep inside a third-party package.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence

from .errors import ExtraNotInstalledError


def importable(module: str) -> bool:
    """True if ``module`` can be imported (found on the path), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # parent package missing / a module object without __spec__
        return False


def require_extra(extra: str, requirements: Mapping[str, Sequence[str]]) -> None:
    """Raise for the first distribution none of whose import names is importable.

    ``requirements`` maps a distribution name (what pip installs) to the import
    names that provide it (any one suffices, e.g. python-multipart's two names).
    """
    for distribution, modules in requirements.items():
        if not any(importable(module) for module in modules):
            raise ExtraNotInstalledError(extra, distribution)
