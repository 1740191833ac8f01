"""Write a chosen decision threshold into a bundle's ``manifest.json``, atomically.

``Detector`` reads ``decision.threshold`` at load time, so ``predict`` and
``serve`` use it by default afterwards: a manipulated label wins iff the
manipulation score (``decision.ScoreRule``) is >= the threshold. ``decision.chosen`` records how it was picked.

The manifest is edited as JSON (every other key is kept as it was) and replaced
with ``os.replace``, so a reader (a running server, a concurrent ``predict``)
sees either the old or the new file, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..bundle import Bundle
from ..manifest import MANIFEST_NAME, Manifest

__all__ = ["atomic_write_text", "write_threshold"]


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` via a temporary file in the same folder.

    The new file keeps the old one's permission bits.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            fp.write(text)
            fp.flush()
            os.fsync(fp.fileno())  # the data is on disk before the rename makes it visible
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_threshold(bundle_dir: str | Path, threshold: float, chosen: Mapping[str, Any]) -> Manifest:
    """Set ``decision.threshold`` and ``decision.chosen`` in the bundle's manifest.

    Raises ``BundleError`` if the bundle is unreadable or has no manipulation-score
    rule (``Bundle.require_rule``: a threshold would then mean nothing), and
    ``OSError`` if the bundle folder is not writable. Returns the new manifest.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    Bundle.open(bundle_dir).require_rule("a decision threshold")  # raises a BundleError naming the file
    data = json.loads(path.read_text(encoding="utf-8"))
    decision = dict(data.get("decision") or {})
    decision.update(threshold=float(threshold), chosen=dict(chosen))
    data["decision"] = decision
    manifest = Manifest.from_dict(data, source=str(path))  # the edited document must still load
    try:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"  # NaN/inf are not JSON
    except ValueError as exc:
        raise ValueError(f"{path}: decision.chosen must hold finite numbers only ({exc})") from exc
    atomic_write_text(path, text)
    return manifest
