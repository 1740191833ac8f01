"""results.json (every row, every raw sample) and results.md (the tables people read).

Every ratio in results.md is taken from the rows' ``vs_baseline`` values, which
``stats.vs_baseline`` computes from the rows' own summaries; nothing in the
table is typed in by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .limits import render_limits
from .machine import summary_line

__all__ = ["render_markdown", "write_reports"]

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _name(row: dict[str, Any]) -> str:
    return f"{row['label']} **(baseline)**" if row["baseline"] else row["label"]


def _p(row: dict[str, Any], key: str, stat: str = "p50") -> float | None:
    summary = row.get(key)
    return summary[stat] if summary else None


def _ratio(row: dict[str, Any], key: str) -> float | None:
    ratios = row.get("vs_baseline")
    return ratios.get(key) if ratios else None


def _engine_table(rows: list[dict[str, Any]], header: str, cells: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    """One line per engine: ``cells`` gives the columns after the name; a failed engine says so."""
    columns = header.count("|") - 1
    lines = [header, "|---|" + "---:|" * (columns - 1)]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {_name(row)} | failed (see below) |" + " |" * (columns - 2))
            continue
        lines.append("| " + " | ".join([_name(row), *cells(row)]) + " |")
    return lines


def _batch1_table(rows: list[dict[str, Any]]) -> list[str]:
    return _engine_table(
        rows,
        "| Engine | Model p50 (ms) | Model p95 (ms) | Speed-up | End-to-end p50 (ms) | Speed-up | "
        "Cold start (s) | Peak RSS (MB) | RSS vs torch |",
        lambda row: [
            _ms(_p(row, "latency_ms")), _ms(_p(row, "latency_ms", "p95")), _x(_ratio(row, "latency_speedup")),
            _ms(_p(row, "e2e_ms")), _x(_ratio(row, "e2e_speedup")), _num(row.get("cold_start_s"), 2),
            _num(row.get("peak_rss_mb"), 0), _x(_ratio(row, "rss_ratio")),
        ],
    )


def _batch_n_table(rows: list[dict[str, Any]]) -> list[str]:
    return _engine_table(
        rows,
        "| Engine | Batch p50 (ms) | Batch p95 (ms) | Throughput (img/s) | vs torch | Peak RSS (MB) | RSS vs torch |",
        lambda row: [
            _ms(_p(row, "latency_ms")), _ms(_p(row, "latency_ms", "p95")), _num(row["throughput_ips"], 2),
            _x(_ratio(row, "throughput_ratio")), _num(row.get("peak_rss_mb"), 0), _x(_ratio(row, "rss_ratio")),
        ],
    )


def _preprocess_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| Engine | Preprocessor | p50 (ms) | p95 (ms) | Speed-up |", "|---|---|---:|---:|---:|"]
    for row in rows:
        if row["status"] == "ok" and row.get("preprocess_ms"):
            lines.append(
                f"| {_name(row)} | {row['preprocessor']} | {_ms(_p(row, 'preprocess_ms'))} | "
                f"{_ms(_p(row, 'preprocess_ms', 'p95'))} | {_x(_ratio(row, 'preprocess_speedup'))} |"
            )
    return lines


def _footprint_table(footprint: dict[str, Any]) -> list[str]:
    base = footprint.get("torch_transformers", {}).get("total_mb")
    lines = ["| Stack | Installed (MB) | vs torch stack | Largest packages (MB) |", "|---|---:|---:|---|"]
    for stack in footprint.values():
        largest = ", ".join(f"{name} {size:,.0f}" for name, size in list(stack["packages"].items())[:4])
        ratio = stack["total_mb"] / base if base else None
        missing = f" (not installed: {', '.join(stack['missing'])})" if stack["missing"] else ""
        lines.append(f"| {stack['label']}{missing} | {stack['total_mb']:,.0f} | {_x(ratio)} | {largest} |")
    return lines


def _torch_wins(rows: list[dict[str, Any]]) -> list[str]:
    """Every metric on which some engine is worse than torch, said plainly."""
    names = {
        "latency_speedup": ("model latency", False), "e2e_speedup": ("end-to-end latency", False),
        "preprocess_speedup": ("preprocessing", False), "throughput_ratio": ("throughput", False),
        "cold_start_speedup": ("cold start", False), "rss_ratio": ("peak memory", True),
    }
    found = []
    for row in rows:
        for key, value in (row.get("vs_baseline") or {}).items():
            if row["baseline"] or value is None:
                continue
            label, lower_is_better = names[key]
            if (value > 1.0) if lower_is_better else (value < 1.0):
                found.append(f"{row['label']} at batch {row['batch_size']}: {label} ({value:.2f}× torch)")
    return found


def render_markdown(results: dict[str, Any]) -> str:
    """The human report: headline facts, then one table per question."""
    rows = results["rows"]
    settings = results["settings"]
    machine = results["machine"]
    libs = machine["libraries"]
    batch_n = settings["batch_size"]
    model = results["model"]
    out: list[str] = ["# deepfake-edge benchmark", ""]
    if model["random_weights"]:
        out += [f"> **{model['description']}.** Latency and memory only: random weights say nothing about "
                "accuracy, so none is reported.", ""]
    load = machine.get("load_average_at_start")
    load_end = machine.get("load_average_at_end")
    out += [
        f"- **Model:** {model['description']}",
        f"- **Machine:** {summary_line(machine)}; 1-min load average {load[0] if load else '?'} at start, "
        f"{load_end[0] if load_end else '?'} at end",
        "- **Libraries:** " + ", ".join(f"{k} {v}" for k, v in libs.items() if v),
        f"- **Settings:** {settings['threads']} threads for every engine; batch 1: {settings['warmup']} warm-up, "
        f"{settings['runs']} model-only and {settings['e2e_runs']} end-to-end runs; batch {batch_n}: "
        f"{settings['batch_runs']} runs; engines interleaved over {settings['rounds']} rounds, each in its own process",
        f"- **Input:** {results['inputs']['jpeg']['source']} ({results['inputs']['jpeg']['megapixels']} MP JPEG), "
        f"model input {'x'.join(map(str, results['inputs']['pixel_values_shape']))}",
        f"- **Command:** `{' '.join(results['command'])}` ({results['elapsed_s']:.0f} s)",
        "",
        "Speed-up = torch time ÷ engine time (higher is better); RSS vs torch = engine ÷ torch (lower is better). "
        "Model = inference on the prepared tensor; end-to-end = decode + preprocess + inference + softmax of the "
        "12 MP JPEG; cold start = new process to first end-to-end prediction, imports included (warm file cache).",
        "",
        "## Batch 1",
        "",
        *_batch1_table([r for r in rows if r["batch_size"] == 1]),
        "",
        f"## Batch {batch_n}",
        "",
        *_batch_n_table([r for r in rows if r["batch_size"] == batch_n]),
        "",
        "## This machine's limits, and each engine against them",
        "",
        *(render_limits(results["limits"]) if results.get("limits") else ["Not measured in this run.", ""]),
        "## Preprocessing the 12 MP JPEG (decode + resize + normalize)",
        "",
        *_preprocess_table([r for r in rows if r["batch_size"] == 1]),
        "",
        "## Installed footprint (dependency closure, files on disk)",
        "",
        *_footprint_table(results["footprint"]),
        "",
        "## Bundle files",
        "",
        "| File | MB |",
        "|---|---:|",
        *(f"| {name} | {size / 1e6:,.1f} |" for name, size in results["bundle_files"].items()),
        "",
    ]
    wins = _torch_wins(rows)
    out += ["## Where torch wins", ""]
    out += [f"- {w}" for w in wins] if wins else ["Nowhere in this run: every engine beat torch on every metric."]
    failures = [r for r in rows if r["status"] != "ok"]
    if failures:
        out += ["", "## Engines that could not run", ""]
        out += [f"- {r['label']} (batch {r['batch_size']}): `{r['error']}`" for r in failures]
    return "\n".join(out) + "\n"


def write_reports(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out_dir / RESULTS_MD).write_text(render_markdown(results), encoding="utf-8")
