"""The ROC chart (PNG) of every variant, with each chosen threshold marked.

matplotlib is an optional dependency (the ``[evaluate]`` extra) and is imported
only when a chart is drawn. The object-oriented ``Figure`` API is used instead of
``pyplot`` so that drawing never touches the caller's global backend or figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ExtraNotInstalledError
from .evaluation import Evaluation
from .report import format_threshold

__all__ = ["PLOT_NAME", "plot_roc"]

PLOT_NAME = "roc.png"
# Below this target FPR the operating point is invisible on a full [0, 1] axis,
# so a second panel zooms into the low-FPR region.
_ZOOM_BELOW = 0.25
_LINESTYLES = ("-", "--", "-.", ":")


def _draw(ax: Any, ev: Evaluation, xmax: float, *, legend: bool) -> None:
    positive = ev.flagged_name
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", linewidth=1, label="chance")
    ax.axvline(ev.target_fpr, linestyle="--", color="0.4", linewidth=1, label=f"target FPR {100 * ev.target_fpr:g} %")
    for index, (name, v) in enumerate(ev.variants.items()):
        if v.roc is None:
            continue
        # Distinct dash patterns keep near-identical curves (fp32 vs int8) visible on top of each other.
        (line,) = ax.plot(v.roc.fpr, v.roc.tpr, linewidth=2.2 if index == 0 else 1.5,
                          linestyle=_LINESTYLES[index % len(_LINESTYLES)],
                          label=f"{name} (AUC {v.auc:.4f})")
        point = v.operating_point
        if point is not None:
            ax.plot([point.fpr], [point.recall], marker="o", markersize=7, color=line.get_color(),
                    markeredgecolor="black", linestyle="none",
                    label=f"{name}: {ev.score_text} >= {format_threshold(point.threshold, 4)} "
                          f"(FPR {100 * point.fpr:.2f} %, recall {100 * point.recall:.1f} %)")
    # A small margin below 0 keeps curves and markers on the axes visible.
    ax.set_xlim(-0.01 * xmax, xmax)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(f"false positive rate (non-{positive} images flagged {positive})")
    ax.set_ylabel(f"true positive rate (recall of {positive})")
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(loc="lower right", fontsize=8)


def plot_roc(ev: Evaluation, path: Path) -> Path:
    """Write the ROC chart to ``path`` (PNG).

    Raises ``ExtraNotInstalledError`` without matplotlib, and ``ValueError`` when
    no variant has a ROC curve (no positive label, or one-sided data).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ExtraNotInstalledError("evaluate", "matplotlib") from exc
    if not any(v.roc is not None for v in ev.variants.values()):
        raise ValueError(f"no ROC curve to draw: the data needs both {ev.flagged_name!r} and other images")
    zoom = ev.target_fpr < _ZOOM_BELOW
    fig = Figure(figsize=(13 if zoom else 7, 6), layout="constrained")
    axes = fig.subplots(1, 2 if zoom else 1, squeeze=False)[0]
    n = int(ev.scored.true.size)
    fig.suptitle(f"ROC, {ev.flagged_name} vs rest: {ev.bundle_dir.name} on {ev.dataset.root.name} ({n:,} images)")
    _draw(axes[0], ev, 1.0, legend=True)
    if zoom:
        _draw(axes[1], ev, min(1.0, max(4 * ev.target_fpr, 0.02)), legend=False)
        axes[1].set_title("low false-positive region")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
