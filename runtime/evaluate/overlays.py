"""``evaluate --evidence DIR``: the evidence maps of the images a variant gets wrong.

False positives (flagged with the positive label, labelled otherwise) and false negatives
(labelled positive, not flagged) are the cases a user most wants to look at; each gets
``DIR/false_positives/<name>.evidence.png`` or ``DIR/false_negatives/<name>.evidence.png``,
listed with their hotspots in ``DIR/index.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from ..detector import Detector
from ..errors import ImageError
from ..evidence import evidence_fields, save_overlay
from .evaluation import Evaluation

__all__ = ["INDEX_NAME", "write_error_overlays"]

INDEX_NAME = "index.json"


def write_error_overlays(ev: Evaluation, variant: str, directory: Path, *, threads: int | None = None,
                         verify: bool = True) -> list[dict[str, Any]]:
    """Write the overlays of ``variant``'s false positives and negatives; the index entries written.

    Raises ``UnsupportedBundleError`` (naming the re-export) for a bundle without evidence maps,
    and ``ValueError`` when the bundle has no positive label among the evaluated labels.
    """
    positive = ev.positive_index
    if positive is None:
        raise ValueError(f"{ev.bundle_dir}: --evidence needs the bundle's positive label among its labels")
    detector = Detector.load(ev.bundle_dir, variant, threads=threads, verify=verify)
    detector.require_evidence()
    predicted = ev.variants[variant].predicted
    entries: list[dict[str, Any]] = []
    for path, true, guess in zip(ev.scored.paths, ev.scored.true, predicted, strict=True):
        kind = ("false_positives" if guess == positive and true != positive
                else "false_negatives" if true == positive and guess != positive else None)
        if kind is None:
            continue
        try:
            result = detector.predict_one(path, evidence=True)
            with Image.open(path) as image:
                written = save_overlay(result, image, directory / kind, Path(path).stem,
                                       positive_label=ev.labels[positive])
        except (ImageError, OSError) as exc:  # it was read once already; a file changed since is reported
            entries.append({"path": path, "kind": kind, "error": str(exc)})
            continue
        entries.append({"path": path, "kind": kind, "true": ev.labels[int(true)], "predicted": ev.labels[int(guess)],
                        "evidence": str(written), **evidence_fields(result)})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / INDEX_NAME).write_text(json.dumps({"variant": variant, "errors": entries}, indent=2) + "\n",
                                        encoding="utf-8")
    return entries
