"""results.png: batch-1 latency and peak memory per engine, the torch baseline marked.

matplotlib is imported inside :func:`write_chart` with the non-interactive Agg
backend, so a headless machine can draw the chart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .machine import summary_line

__all__ = ["write_chart"]

MODEL_COLOR = "#4C72B0"
E2E_COLOR = "#DD8452"
RSS_COLOR = "#55A868"


def _label(row: dict[str, Any]) -> str:
    return f"{row['label']}\n(baseline)" if row["baseline"] else row["label"]


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Draw the batch-1 rows that ran; failed engines are named in the footer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [r for r in results["rows"] if r["batch_size"] == 1 and r["status"] == "ok"]
    failed = [r["label"] for r in results["rows"] if r["batch_size"] == 1 and r["status"] != "ok"]
    labels = [_label(r) for r in rows]
    y = list(range(len(rows)))
    height = 0.38

    fig, (ax_lat, ax_mem) = plt.subplots(1, 2, figsize=(14, 2.2 + 0.9 * max(len(rows), 2)), sharey=True,
                                         gridspec_kw={"width_ratios": [3, 2]})
    model_p50 = [r["latency_ms"]["p50"] for r in rows]
    model_p95 = [r["latency_ms"]["p95"] for r in rows]
    e2e_p50 = [r["e2e_ms"]["p50"] if r.get("e2e_ms") else 0.0 for r in rows]
    e2e_p95 = [r["e2e_ms"]["p95"] if r.get("e2e_ms") else 0.0 for r in rows]
    hatches = ["//" if r["baseline"] else "" for r in rows]

    base = next((r for r in rows if r["baseline"]), None)

    def labels_for(values: list[float], key: str, unit: str) -> list[str]:
        # value plus the ratio against torch that results.md prints for the same row
        out = []
        for row, value in zip(rows, values, strict=True):
            text = f"{value:,.0f}" if value >= 10 else f"{value:.2f}"
            ratio = (row.get("vs_baseline") or {}).get(key)
            if ratio is not None and not row["baseline"]:
                text += f" {unit} ({ratio:.2f}×)"
            else:
                text += f" {unit}"
            out.append(text)
        return out

    model_err = [b - a for a, b in zip(model_p50, model_p95, strict=True)]
    e2e_err = [b - a for a, b in zip(e2e_p50, e2e_p95, strict=True)]
    bars_model = ax_lat.barh([i - height / 2 for i in y], model_p50, height, color=MODEL_COLOR,
                             xerr=[[0] * len(rows), model_err], capsize=3)
    bars_e2e = ax_lat.barh([i + height / 2 for i in y], e2e_p50, height, color=E2E_COLOR,
                           xerr=[[0] * len(rows), e2e_err], capsize=3)
    for bars, values, key in ((bars_model, model_p50, "latency_speedup"), (bars_e2e, e2e_p50, "e2e_speedup")):
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax_lat.bar_label(bars, labels=labels_for(values, key, "ms"), padding=14, fontsize=8)
    ax_lat.set_xlabel("batch-1 latency, ms (lower is better)\nbar: p50, whisker: p95; (n×) = speed-up vs torch")
    ax_lat.set_yticks(y, labels)
    ax_lat.invert_yaxis()
    ax_lat.legend(
        handles=[
            Patch(facecolor=MODEL_COLOR, label="model only"),
            Patch(facecolor=E2E_COLOR, label="end to end: decode + preprocess 12 MP JPEG + model"),
            Patch(facecolor="white", edgecolor="0.2", hatch="//", label="baseline: torch fp32 eager (dashed lines)"),
        ],
        loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=3, fontsize=8, frameon=False,
    )
    ax_lat.margins(x=0.3)

    rss = [r["peak_rss_mb"] for r in rows]
    bars_rss = ax_mem.barh(y, rss, 0.6, color=RSS_COLOR)
    for bar, hatch in zip(bars_rss, hatches, strict=True):
        bar.set_hatch(hatch)
    ax_mem.bar_label(bars_rss, labels=labels_for(rss, "rss_ratio", "MB"), padding=3, fontsize=8)
    ax_mem.set_xlabel("peak RSS at batch 1, MB (lower is better)\n(n×) = ratio to torch")
    ax_mem.margins(x=0.35)

    if base is not None:
        ax_lat.axvline(base["latency_ms"]["p50"], color=MODEL_COLOR, linestyle="--", linewidth=1)
        if base.get("e2e_ms"):
            ax_lat.axvline(base["e2e_ms"]["p50"], color=E2E_COLOR, linestyle="--", linewidth=1)
        ax_mem.axvline(base["peak_rss_mb"], color="0.3", linestyle="--", linewidth=1)
    for ax in (ax_lat, ax_mem):
        ax.grid(axis="x", alpha=0.3)

    model = results["model"]
    title = f"deepfake-edge bench: {model['description']}"
    if model["random_weights"]:
        title += " (no accuracy figures)"
    fig.suptitle(title, fontsize=11)
    load = results["machine"].get("load_average_at_start")
    footer = f"{summary_line(results['machine'])}; {results['settings']['threads']} threads for every engine"
    if load:  # a busy machine slows every engine, torch's OpenMP pool most
        footer += f"; 1-min load average {load[0]} at start"
    if failed:
        footer += f"; could not run: {', '.join(failed)}"
    fig.text(0.01, 0.005, footer, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
