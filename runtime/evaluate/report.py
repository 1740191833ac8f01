"""Present an :class:`~.evaluation.Evaluation`: terminal text and ``report.json``.

``report.json`` holds everything the text shows plus every image's scores, so a
report can be re-analysed (or re-checked with scikit-learn) without re-running
the models. Infinite ROC thresholds are written as ``null`` (JSON has no ``inf``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import Evaluation
from .metrics import OperatingPoint, RocCurve

__all__ = ["REPORT_NAME", "format_text", "format_threshold", "to_dict", "write_json"]

REPORT_NAME = "report.json"
JSON_VERSION = 1


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _roc_dict(roc: RocCurve) -> dict[str, Any]:
    return {"fpr": _finite(roc.fpr), "tpr": _finite(roc.tpr), "thresholds": _finite(roc.thresholds)}


def to_dict(ev: Evaluation, *, threshold_written: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document (plain types only)."""
    from .. import __version__

    counts = ev.dataset.counts()
    return {
        "report_version": JSON_VERSION,
        "tool": f"deepfake-edge {__version__}",
        "created": ev.created,
        "bundle": {
            "path": str(ev.bundle_dir),
            "default_variant": ev.default_variant,
            "labels": list(ev.labels),
            "positive_label": ev.positive_label,
            **({"real_label": ev.rule.real_label} if ev.rule is not None and ev.rule.real_label else {}),
            "score": ev.rule.text if ev.rule is not None else None,
            "decision_threshold": ev.decision_threshold,
        },
        "data": {
            "path": str(ev.dataset.root),
            "folders": {label: str(folder) for label, folder in ev.dataset.folders.items()},
            "images_per_label": counts,
            "images": len(ev.dataset.images),
            "scored": int(ev.scored.true.size),
            "unreadable": [f.to_dict() for f in ev.scored.failures],
            "ignored_files": [str(p) for p in ev.dataset.ignored],
        },
        "target_fpr": ev.target_fpr,
        "reference_variant": ev.reference,
        "variants": {
            name: {
                "file": v.file,
                "classification_report": v.report.to_dict(),
                "classification_report_text": v.report.to_text(),
                "confusion_matrix": {"labels": list(ev.labels), "rows": "true", "columns": "predicted",
                                     "matrix": v.confusion.tolist()},
                "roc_auc": v.auc,
                "operating_point": v.operating_point.to_dict() if v.operating_point else None,
                "roc_curve": _roc_dict(v.roc) if v.roc else None,
            }
            for name, v in ev.variants.items()
        },
        "comparisons": {
            name: {
                "reference": c.reference, "images": c.images, "agreeing": c.agreeing,
                "label_agreement": c.label_agreement, "max_abs_dp": c.max_abs_dp, "mean_abs_dp": c.mean_abs_dp,
                "dp_of": ev.score_text if ev.rule is not None else "any label", "worst_image": c.worst_image,
            }
            for name, c in ev.comparisons.items()
        },
        "disagreements": [
            {"path": d.path, "true": d.true, "labels": d.labels, "scores": d.scores} for d in ev.disagreements
        ],
        "threshold_written": threshold_written,
        "images": [
            {
                "path": path,
                "true": ev.labels[int(ev.scored.true[i])],
                "predicted": {name: ev.labels[int(v.predicted[i])] for name, v in ev.variants.items()},
                "scores": {name: dict(zip(ev.labels, map(float, ev.scored.probs[name][i]), strict=True))
                           for name in ev.variants},
            }
            for i, path in enumerate(ev.scored.paths)
        ],
    }


def write_json(ev: Evaluation, path: Path, *, threshold_written: dict[str, Any] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(ev, threshold_written=threshold_written), indent=1) + "\n", encoding="utf-8")
    return path


# -- terminal text -----------------------------------------------------------------

def format_threshold(threshold: float, digits: int = 6) -> str:
    """``digits`` significant digits, more if needed so that a threshold below 1 never prints as "1"."""
    for n in range(digits, 18):
        text = f"{threshold:.{n}g}"
        if threshold == 1.0 or float(text) != 1.0:
            return text
    return repr(threshold)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _confusion_text(labels: tuple[str, ...], matrix: np.ndarray) -> str:
    width = max(max(len(label) for label in labels), len(f"{int(matrix.max()):,}")) + 2
    lines = ["confusion matrix (rows: true label, columns: predicted label)",
             " " * width + "".join(f"{label:>{width}}" for label in labels)]
    lines += [f"{label:>{width}}" + "".join(f"{int(n):>{width},}" for n in row)
              for label, row in zip(labels, matrix, strict=True)]
    return "\n".join(lines)


def _operating_point_text(point: OperatingPoint | None, roc: RocCurve, positive: str, score: str,
                          target: float) -> str:
    if point is None:
        text = (f"threshold for FPR <= {_pct(target)}: none on this data (no threshold flags any {positive!r} "
                "image within the target; more non-positive images or a larger --target-fpr would help)")
    else:
        text = (f"threshold for FPR <= {_pct(target)}: {score} >= {format_threshold(point.threshold)}\n"
                f"  FPR {_pct(point.fpr)} ({point.false_positives:,} of {point.negatives:,} non-{positive} images "
                f"flagged), recall {_pct(point.recall)} ({point.true_positives:,} of {point.positives:,})")
    if 0.0 < target < 1.0 / roc.negatives:
        # The FPR moves in steps of 1/negatives: the data cannot tell this threshold from a stricter one.
        text += (f"\n  note: one false positive is already {_pct(1.0 / roc.negatives)} of {roc.negatives:,} "
                 f"non-{positive} images; a {_pct(target)} target needs well over {math.ceil(1 / target):,} of them")
    return text


def _decision_text(ev: Evaluation) -> str:
    if ev.decision_threshold is None or ev.rule is None:
        return "argmax (the bundle has no threshold)"
    threshold = format_threshold(ev.decision_threshold)
    return f"{ev.flagged_name!r} iff {ev.score_text} >= {threshold} (the bundle's threshold)"


def _listing(title: str, rows: list[str], limit: int, more: str) -> list[str]:
    if not rows:
        return []
    shown = rows if limit < 0 else rows[:limit]
    out = [title, *(f"  {row}" for row in shown)]
    if len(rows) > len(shown):
        out.append(f"  ... {len(rows) - len(shown):,} more {more}")
    return out


def format_text(ev: Evaluation, *, limit: int = 20) -> str:
    """The terminal report. ``limit`` caps each image listing (-1: no cap); report.json has them all."""
    positive = ev.flagged_name
    counts = ", ".join(f"{label} {n:,}" for label, n in ev.dataset.counts().items())
    lines = [
        f"bundle:   {ev.bundle_dir} (default variant {ev.default_variant})",
        f"data:     {ev.dataset.root}: {len(ev.dataset.images):,} images ({counts}); "
        f"{len(ev.scored.failures):,} unreadable",
        f"decision: {_decision_text(ev)}",
    ]
    for name, v in ev.variants.items():
        lines += ["", f"== {name} ({v.file}) ==", v.report.to_text().rstrip("\n"), "",
                  _confusion_text(ev.labels, v.confusion), ""]
        if ev.rule is None:
            lines.append("ROC and threshold: skipped (the bundle names no positive label among its labels)")
        elif v.auc is None or v.roc is None:
            lines.append(f"ROC and threshold: skipped (needs both {positive!r} and other images)")
        else:
            lines.append(f"ROC AUC ({positive} vs rest): {v.auc:.4f}")
            lines.append(_operating_point_text(v.operating_point, v.roc, positive, ev.score_text, ev.target_fpr))
    if ev.comparisons:
        dp = f"|d{ev.score_text}|" if ev.rule is not None and ev.rule.positive_label else (
            "|d score|" if ev.rule is not None else "|dP| (any label)")
        lines += ["", f"== variants vs {ev.reference} (same input tensors) =="]
        lines.append(f"{'variant':<10} {'label agreement':<28} {'max ' + dp:>16} {'mean ' + dp:>17}")
        for name, c in ev.comparisons.items():
            agreement = f"{_pct(c.label_agreement)} ({c.agreeing:,} of {c.images:,})"
            lines.append(f"{name:<10} {agreement:<28} {c.max_abs_dp:>16.4f} {c.mean_abs_dp:>17.4f}")
        rows = [
            f"{d.path}  true {d.true}: " + ", ".join(
                f"{name} {label}" + (f" ({d.scores[name]:.4f})" if name in d.scores else "")
                for name, label in d.labels.items())
            for d in ev.disagreements
        ]
        lines += [""] + (_listing(f"images where the variants disagree ({len(rows):,}):", rows, limit,
                                  "in report.json") or ["the variants agree on every image"])
    # ImageError.reason is the message without the path, which the line already starts with.
    failures = [f"{f.source}: {type(f.error).__name__}: {getattr(f.error, 'reason', f.error)}"
                for f in ev.scored.failures]
    if failures:
        lines += ["", *_listing(f"unreadable images ({len(failures):,}, not scored):", failures, limit,
                                "in report.json")]
    return "\n".join(lines) + "\n"
