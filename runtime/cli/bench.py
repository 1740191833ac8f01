"""``deepfake-edge bench``: latency, memory and footprint of this runtime against torch and Optimum."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..extras import require_extra
from .common import EXIT_INPUT_FAILED, EXIT_OK, count

HELP = "compare latency, memory and install size against torch and Optimum (needs the [bench] extra)"
DESCRIPTION = """\
Benchmark, on this machine, the model card's torch code (transformers, fp32
eager: the baseline), Optimum's ORTModelForImageClassification, and this runtime
on every variant of the bundle. Each engine runs in its own process with the
same threads and inputs, interleaved over rounds. Measures batch-1 latency
(p50/p95, model only and end to end on a 12 MP JPEG), batch-8 throughput, peak
RSS, cold start, preprocessing, bundle sizes and installed footprint.

Without --model/--bundle, the siglip-base-patch16-512 architecture is built with
random weights: speed only, labelled as such, no accuracy figures.

Also measures this machine's limits: fp32 GFLOP/s and int8 GOP/s from a short
GEMM micro-benchmark, the floor they set for this model, and how far each
engine is from it. --limits measures only that, in seconds, for the
architecture (default siglip-base-patch16-512).

Writes OUT/results.json, OUT/results.md and OUT/results.png (worker logs in OUT/logs).
Needs: pip install 'deepfake-edge[bench]'  (install torch==2.13.0 CPU first)."""



def configure(parser: argparse.ArgumentParser) -> None:
    from ..session import default_threads

    source = parser.add_argument_group("what to benchmark")
    source.add_argument("--model", metavar="DIR_OR_ID", default=None,
                        help="SigLIP classifier checkpoint (local dir or hub id); exported once into --cache-dir")
    source.add_argument("--bundle", type=Path, default=None,
                        help="use this existing bundle; the torch side loads --model or the manifest's source")
    source.add_argument("--architecture", default=None, choices=("siglip-base-patch16-512", "tiny"),
                        help="random-weights architecture when no model is given (default: siglip-base-patch16-512)")
    how = parser.add_argument_group("how")
    how.add_argument("--threads", type=count(1), default=None,
                     help=f"threads for every engine (default: all usable cores, here {default_threads()})")
    how.add_argument("--runs", type=count(1), default=None,
                     help="timed batch-1 model-only runs per engine (default: 10)")
    how.add_argument("--e2e-runs", type=count(1), default=None,
                     help="timed end-to-end and preprocessing runs per engine (default: 5)")
    how.add_argument("--batch-size", type=count(2), default=None,
                     help="batch size for the throughput rows (default: 8)")
    how.add_argument("--batch-runs", type=count(1), default=None, help="timed batch runs per engine (default: 3)")
    how.add_argument("--warmup", type=count(0), default=None, help="untimed batch-1 runs per engine (default: 2)")
    how.add_argument("--rounds", type=count(1), default=None,
                     help="interleaved rounds the runs are split into (default: 5)")
    how.add_argument("--limits", action="store_true",
                     help="only measure this machine's GEMM peaks and the model's floor (seconds; no engines run)")
    how.add_argument("--quick", action="store_true",
                     help="tiny random model and few runs: a smoke test that finishes in well under a minute")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("bench-results"),
                     help="results folder (default: ./bench-results)")
    out.add_argument("--cache-dir", type=Path, default=None,
                     help="where built checkpoints and exported bundles are kept "
                          "(default: ~/.cache/deepfake-edge/bench)")
    out.add_argument("--rebuild", action="store_true", help="build and export again even if cached")
    out.add_argument("--no-progress", action="store_true", help="no progress display on stderr")



def run(args: argparse.Namespace) -> int:
    require_extra("bench")
    if args.limits:
        return _limits_only(args)
    from ..benchmarks.bench import BenchOptions, run_bench
    from ..benchmarks.report import RESULTS_MD

    options = BenchOptions.create(
        quick=args.quick, out_dir=args.out, model=args.model, bundle=args.bundle, architecture=args.architecture,
        threads=args.threads, runs=args.runs, e2e_runs=args.e2e_runs, batch_size=args.batch_size,
        batch_runs=args.batch_runs, warmup=args.warmup, rounds=args.rounds, cache_dir=args.cache_dir,
        rebuild=args.rebuild, progress=not args.no_progress,
    )
    # Recorded in results.json so a run can be repeated; empty when called from Python rather than a shell.
    results = run_bench(options, argv=sys.argv[2:] if sys.argv[1:2] == ["bench"] else [])
    print((options.out_dir / RESULTS_MD).read_text(encoding="utf-8"))
    print(f"results: {options.out_dir.resolve()}/results.json, results.md, results.png "
          f"({results['elapsed_s']:.0f} s)", file=sys.stderr)
    failed = [r for r in results["rows"] if r["status"] != "ok"]
    return EXIT_INPUT_FAILED if any(r["baseline"] or r["engine"] == "deepfake-edge" for r in failed) else EXIT_OK


def _limits_only(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..benchmarks.limits import machine_limits, render_limits
    from ..benchmarks.machine import describe_machine, summary_line
    from ..benchmarks.models import ARCHITECTURES
    from ..session import default_threads

    architecture = ARCHITECTURES[args.architecture or "siglip-base-patch16-512"]
    limits = machine_limits(args.threads or default_threads(), asdict(architecture))
    print(f"{summary_line(describe_machine())}\n{architecture.name}:\n")
    print("\n".join(render_limits(limits)))
    return EXIT_OK
