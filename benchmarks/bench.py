"""``run_bench``: the whole benchmark, from model preparation to results.json, results.md and the chart.

How the numbers are kept honest:

* every engine runs in its own fresh process (``engine_worker``), so its peak
  RSS and cold start are its own: torch is never charged for onnxruntime's
  import, nor the runtime for torch's;
* every engine gets the same inputs (one 12 MP JPEG and the ``pixel_values``
  made from it) and the same thread count (torch intra-op threads, ORT intra-op
  threads, OMP/MKL pools);
* before the cold starts, the model files are read once and every library is
  imported once in a throwaway process, so each cold start is measured with a
  warm file cache instead of favouring whichever engine happens to start last;
* engines are interleaved: each round, every engine does a slice of its runs,
  in a rotating order, so machine drift (another job, thermal limits) hits all
  of them alike;
* batch-1 work happens before batch-8 work in every process, so the batch-1
  peak RSS is not inflated by batch-8 buffers.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfake_edge.bundle import Bundle
from deepfake_edge.progress import StepProgress
from deepfake_edge.session import default_threads

from .engines import ENGINES
from .footprint import measure_stacks
from .inputs import BenchInputs, make_inputs
from .limits import machine_limits
from .machine import describe_machine, load_average
from .models import RANDOM_LABEL, ModelUnderTest, prepare_model
from .stats import summarize, vs_baseline
from .workers import EngineSpec, WorkerError, WorkerProcess

__all__ = ["BASELINE", "QUICK", "BenchOptions", "default_cache_dir", "engine_specs", "run_bench"]

SCHEMA = "deepfake-edge-bench"
SCHEMA_VERSION = 1
BASELINE = ("torch", "fp32")  # (engine, variant) every ratio is taken against
# Optimum is run on the variants a Hugging Face user would have from this export.
OPTIMUM_VARIANTS = ("fp32", "int8")
PREPROCESSORS = {
    "torch": "transformers SiglipImageProcessor (slow, PIL)",
    "optimum": "transformers SiglipImageProcessor (slow, PIL)",
    "deepfake-edge": "deepfake-edge (PIL + numpy, bit-exact replica)",
}
IMPORT_WARMUP = "import torch, transformers, onnxruntime, optimum.onnxruntime, deepfake_edge"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepfake-edge" / "bench"


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark and how long; the defaults are the full run (about 6-8 min for base-512 on 2 cores)."""

    out_dir: Path = Path("bench-results")
    model: str | None = None
    bundle: Path | None = None
    architecture: str = "siglip-base-patch16-512"
    threads: int | None = None  # None: every usable core
    runs: int = 10  # timed batch-1 model-only runs per engine
    e2e_runs: int = 5  # timed end-to-end and preprocessing runs per engine
    batch_size: int = 8
    batch_runs: int = 3  # timed batch runs per engine
    warmup: int = 2  # untimed batch-1 runs after the cold start
    rounds: int = 5  # the runs are split over this many interleaved rounds
    quick: bool = False
    engines: tuple[str, ...] | None = None  # keys of engines.ENGINES to run (None: all); torch always runs
    cache_dir: Path = field(default_factory=default_cache_dir)
    rebuild: bool = False
    progress: bool = True
    timeout_s: float = 900.0  # for any single worker reply (cold start or one slice of runs)


    @classmethod
    def create(cls, *, quick: bool = False, **given: Any) -> BenchOptions:
        """Defaults, then the --quick settings if ``quick``, then every ``given`` value that is not None."""
        settings: dict[str, Any] = dict(QUICK) if quick else {}
        settings.update({key: value for key, value in given.items() if value is not None})
        return cls(quick=quick, **settings)


# --quick: a tiny model and few runs, for CI smoke tests (well under a minute).
QUICK: dict[str, Any] = {"architecture": "tiny", "runs": 6, "e2e_runs": 3, "batch_runs": 2, "warmup": 1, "rounds": 3}


def engine_specs(bundle: Bundle, engines: tuple[str, ...] | None = None) -> list[EngineSpec]:
    """The baseline first, then Optimum on fp32/int8, then this runtime on every variant of the bundle.

    ``engines`` keeps only those engine keys (the baseline always runs: every ratio is taken against it).
    """
    variants = bundle.manifest.variants
    specs = [EngineSpec("torch", "fp32", "torch fp32 eager (transformers)", "checkpoint")]
    specs += [EngineSpec("optimum", name, f"Optimum ORTModel {name}", variants[name].file)
              for name in OPTIMUM_VARIANTS if name in variants]
    specs += [EngineSpec("deepfake-edge", name, f"deepfake-edge {name}", spec.file) for name, spec in variants.items()]
    return [spec for spec in specs
            if engines is None or spec.engine in engines or (spec.engine, spec.variant) == BASELINE]


def _split(total: int, rounds: int) -> list[int]:
    """``total`` runs spread over ``rounds`` as evenly as possible (earlier rounds get the remainder)."""
    base, extra = divmod(total, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def _warm_file_cache(paths: list[Path]) -> None:
    for path in paths:
        with path.open("rb") as fp:
            while fp.read(1 << 24):
                pass


def _model_files(model: ModelUnderTest, specs: list[EngineSpec]) -> list[Path]:
    files = [model.bundle / spec.model_file for spec in specs if spec.engine != "torch"]
    checkpoint = Path(model.checkpoint)
    if checkpoint.is_dir():
        files += sorted(checkpoint.glob("*.safetensors")) + sorted(checkpoint.glob("*.bin"))
    return sorted(set(files))


class _Run:
    """Mutable state of one run: live workers, per-engine samples and errors."""

    def __init__(self, specs: list[EngineSpec], options: BenchOptions, threads: int, progress: StepProgress) -> None:
        self.specs = specs
        self.options = options
        self.threads = threads
        self.progress = progress
        self.workers: dict[str, WorkerProcess] = {}
        self.ready: dict[str, dict[str, Any]] = {}
        # key -> (batch size being measured when it failed, 0 for the start-up; message)
        self.errors: dict[str, tuple[int, str]] = {}
        self.samples: dict[tuple[str, int], dict[str, list[float]]] = {}
        self.rss: dict[tuple[str, int], float] = {}

    def live(self, order_shift: int = 0) -> list[WorkerProcess]:
        """Running workers, rotated by ``order_shift`` so no engine always goes first."""
        workers = [self.workers[s.key] for s in self.specs if s.key in self.workers]
        if not workers:
            return []
        shift = order_shift % len(workers)
        return workers[shift:] + workers[:shift]

    def start_all(self, model: ModelUnderTest, inputs: BenchInputs, logs: Path) -> None:
        """Start the engines one after another: each cold start has the machine to itself."""
        for spec in self.specs:
            self.progress.describe(f"cold start: {spec.label}")
            try:
                worker = WorkerProcess.start(
                    spec, checkpoint=model.checkpoint, bundle=model.bundle, threads=self.threads, jpeg=inputs.jpeg,
                    pixel_values=inputs.pixel_values, log=logs / f"{spec.engine}-{spec.variant}.log",
                    timeout=self.options.timeout_s,
                )
            except WorkerError as error:
                self.errors[spec.key] = (0, str(error))
                self.progress.log(f"!! {spec.label} could not run: {error}")
            else:
                self.workers[spec.key] = worker
                self.ready[spec.key] = worker.ready
                self.progress.log(f"   {spec.label}: cold start {worker.ready['cold_start_s']:.2f} s")
            self.progress.step()

    def measure(self, worker: WorkerProcess, op: str, runs: int, batch: int, metric: str | None) -> None:
        """Run ``op`` in ``worker``; keep the times (in ms) under ``metric`` unless it is a warm-up (None)."""
        if runs <= 0 or worker.spec.key not in self.workers:
            return
        try:
            reply = worker.request(op, runs=runs, batch=batch if op == "model" else None,
                                   timeout=self.options.timeout_s)
        except WorkerError as error:
            self.errors[worker.spec.key] = (batch, str(error))
            self.progress.log(f"!! {error}")
            worker.kill()
            worker.close()
            del self.workers[worker.spec.key]
            return
        self.rss[(worker.spec.key, batch)] = reply["peak_rss_mb"]
        if metric is not None:
            bucket = self.samples.setdefault((worker.spec.key, batch), {})
            bucket.setdefault(metric, []).extend(t * 1000.0 for t in reply["times_s"])

    def batch_one(self) -> None:
        """Warm-up, then the batch-1 model, end-to-end and preprocessing runs, interleaved over rounds."""
        o = self.options
        for worker in self.live():
            self.progress.describe(f"warm-up: {worker.spec.label}")
            self.measure(worker, "model", o.warmup, 1, None)
            self.progress.step()
        slices = zip(_split(o.runs, o.rounds), _split(o.e2e_runs, o.rounds), strict=True)
        for r, (runs, e2e) in enumerate(slices):
            for worker in self.live(r):
                self.progress.describe(f"batch 1, round {r + 1}/{o.rounds}: {worker.spec.label}")
                self.measure(worker, "model", runs, 1, "latency")
                self.measure(worker, "e2e", e2e, 1, "e2e")
                self.measure(worker, "preprocess", e2e, 1, "preprocess")
                self.progress.step()

    def batch_n(self) -> None:
        """One untimed batch per engine (new shapes make ORT plan new buffers), then one timed batch per round."""
        size, runs = self.options.batch_size, self.options.batch_runs
        for worker in self.live():
            self.progress.describe(f"batch {size} warm-up: {worker.spec.label}")
            self.measure(worker, "model", 1, size, None)
            self.progress.step()
        for r in range(runs):
            for worker in self.live(r):
                self.progress.describe(f"batch {size}, round {r + 1}/{runs}: {worker.spec.label}")
                self.measure(worker, "model", 1, size, "latency")
                self.progress.step()

    def close(self) -> None:
        for worker in list(self.workers.values()):
            worker.close()
        self.workers.clear()

    def row(self, spec: EngineSpec, batch: int) -> dict[str, Any]:
        """One results row: summaries, throughput, memory and (batch 1) cold start, from the raw samples."""
        row: dict[str, Any] = {
            "engine": spec.engine,
            "variant": spec.variant,
            "label": spec.label,
            "model_file": spec.model_file,
            "batch_size": batch,
            "baseline": (spec.engine, spec.variant) == BASELINE,
            "preprocessor": PREPROCESSORS[spec.engine],
        }
        samples = self.samples.get((spec.key, batch), {})
        failed_at, message = self.errors.get(spec.key, (None, None))
        if "latency" not in samples or (failed_at is not None and failed_at <= batch):
            row.update(status="failed", error=message or "no measurements")
            return row
        latency = samples["latency"]
        row.update(
            status="ok",
            error=None,
            latency_ms=summarize(latency),
            throughput_ips=batch * len(latency) / (sum(latency) / 1000.0),
            peak_rss_mb=self.rss[(spec.key, batch)],
            samples_ms={name: list(values) for name, values in samples.items()},
        )
        ready = self.ready.get(spec.key)
        if batch == 1 and ready is not None:
            row.update(
                e2e_ms=summarize(samples["e2e"]) if samples.get("e2e") else None,
                preprocess_ms=summarize(samples["preprocess"]) if samples.get("preprocess") else None,
                cold_start_s=ready["cold_start_s"],
                load_s=ready["load_s"],
                first_prediction_s=ready["first_prediction_s"],
                loaded_peak_rss_mb=ready["loaded_peak_rss_mb"],
                scores_on_bench_jpeg=ready["scores"],
            )
        return row


def _attach_ratios(rows: list[dict[str, Any]]) -> None:
    bases = {r["batch_size"]: r for r in rows if r["baseline"] and r["status"] == "ok"}
    for row in rows:
        base = bases.get(row["batch_size"])
        row["vs_baseline"] = vs_baseline(row, base) if base is not None and row["status"] == "ok" else None
        if base is not None and row.get("scores_on_bench_jpeg") and base.get("scores_on_bench_jpeg"):
            # A consistency check on one image (every engine sees the same model), not an accuracy figure.
            row["max_abs_dp_vs_baseline"] = max(
                abs(a - b) for a, b in zip(row["scores_on_bench_jpeg"], base["scores_on_bench_jpeg"], strict=True)
            )


def _total_steps(n_engines: int, o: BenchOptions) -> int:
    # prepare, warm caches, then per engine: cold start, warm-up, batch-1 rounds, batch warm-up, batch rounds; report
    return 2 + n_engines * (2 + o.rounds + 1 + o.batch_runs) + 1


def _warm_caches(model: ModelUnderTest, specs: list[EngineSpec]) -> None:
    _warm_file_cache(_model_files(model, specs))
    subprocess.run([sys.executable, "-c", IMPORT_WARMUP], check=False, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_bench(options: BenchOptions, argv: list[str] | None = None,
              program: tuple[str, ...] = ("deepfake-edge", "bench")) -> dict[str, Any]:
    """Run the benchmark and write results.json, results.md and results.png into ``options.out_dir``.

    ``program`` plus ``argv`` is recorded as the command that made the results.
    Returns the results dictionary (the content of results.json).
    """
    from .chart import write_chart
    from .report import write_reports

    for name in ("runs", "e2e_runs", "batch_runs", "rounds"):
        if getattr(options, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(options, name)}")
    unknown = sorted(set(options.engines or ()) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engines {unknown}; choose from {sorted(ENGINES)}")
    if options.batch_size < 2 or options.warmup < 0:
        raise ValueError(f"batch_size must be >= 2 (batch 1 is always measured) and warmup >= 0, "
                         f"got {options.batch_size} and {options.warmup}")
    threads = options.threads or default_threads()
    out_dir = options.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    machine = describe_machine()
    phases: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        result = fn()
        phases[name] = round(time.perf_counter() - t, 2)
        return result

    def log(message: str) -> None:  # before the progress bar exists (its length needs the engine list)
        if options.progress:
            print(message, file=sys.stderr, flush=True)

    model: ModelUnderTest = timed("prepare_s", lambda: prepare_model(
        model=options.model, bundle=options.bundle, architecture=options.architecture,
        cache_dir=options.cache_dir, rebuild=options.rebuild, log=log))
    specs = engine_specs(Bundle.open(model.bundle), options.engines)

    with StepProgress(_total_steps(len(specs), options), enabled=options.progress) as progress:
        progress.step()
        progress.describe("making the 12 MP JPEG, warming file cache and imports")
        # kept in the results folder, so anyone can rerun on the same input
        inputs: BenchInputs = timed("inputs_s", lambda: make_inputs(out_dir / "inputs", model.bundle))
        timed("warm_caches_s", lambda: _warm_caches(model, specs))
        progress.step()
        run = _Run(specs, options, threads, progress)
        try:
            timed("cold_starts_s", lambda: run.start_all(model, inputs, out_dir / "logs"))
            timed("batch_1_s", run.batch_one)
            timed(f"batch_{options.batch_size}_s", run.batch_n)
        finally:
            run.close()
        rows = [run.row(spec, batch) for batch in (1, options.batch_size) for spec in specs]
        _attach_ratios(rows)
        progress.describe("measuring this machine's GEMM peaks")
        limits = timed("limits_s", lambda: machine_limits(
            threads, model.architecture, rows, size=512 if options.quick else 2048))
        machine["load_average_at_end"] = load_average()
        results: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": created,
            "command": [*program, *(argv or [])],
            "model": model.to_dict(),
            "weights_note": RANDOM_LABEL if model.random_weights else None,
            "baseline": {"engine": BASELINE[0], "variant": BASELINE[1]},
            "settings": {
                "threads": threads, "runs": options.runs, "e2e_runs": options.e2e_runs,
                "preprocess_runs": options.e2e_runs, "warmup": options.warmup, "batch_size": options.batch_size,
                "batch_runs": options.batch_runs, "rounds": options.rounds, "quick": options.quick,
                "architecture": options.architecture if options.model is None and options.bundle is None else None,
            },
            "machine": machine,
            "inputs": inputs.description,
            "bundle_files": {p.name: p.stat().st_size for p in sorted(model.bundle.iterdir()) if p.is_file()},
            "footprint": measure_stacks(),
            "rows": rows,
            "limits": limits,
            "phases": phases,
        }
        progress.describe("writing results")
        results["elapsed_s"] = round(time.perf_counter() - started, 2)
        write_reports(results, out_dir)
        write_chart(results, out_dir / "results.png")
        progress.step()
    return results
