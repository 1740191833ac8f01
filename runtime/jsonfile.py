"""Read a bundle's JSON files with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BundleFileMissingError, UnsupportedBundleError


def read_json_object(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; ``what`` (and ``hint``) complete "<path>: <what> is missing"."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleFileMissingError(f"{path}: {what} is missing" + (f"; {hint}" if hint else "")) from exc
    except (OSError, ValueError) as exc:
        raise UnsupportedBundleError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UnsupportedBundleError(f"{path}: expected a JSON object")
    return data
