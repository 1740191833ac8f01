"""One engine in its own process: load it, time what the orchestrator asks, report JSON lines.

Run as a script by file path (``python .../engine_worker.py ARGS``), which is
how ``bench`` starts it: ``python -m deepfake_edge.benchmarks.engine_worker``
works too, but it first imports the ``deepfake_edge`` package (numpy, Pillow,
onnxruntime), which would charge about 20 MB and onnxruntime's import to the
torch engine's memory and cold start.

Protocol (one JSON object per line):

* on start-up the worker loads its engine, classifies the benchmark JPEG once
  and writes ``{"event": "ready", "cold_start_s": ..., ...}``: the cold start is
  measured from the orchestrator's spawn timestamp, so interpreter start-up and
  imports are included;
* then it answers requests read from stdin, in order:
  ``{"op": "model", "batch": 8, "runs": 2}``, ``{"op": "e2e", "runs": 1}``,
  ``{"op": "preprocess", "runs": 1}`` -> ``{"times_s": [...], "peak_rss_mb": ...}``;
  ``{"op": "exit"}`` ends it.

A worker that cannot load its engine dies with the traceback on stderr (a log
file); the orchestrator records the last line as the engine's error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import IO, Any

# Run by path, Python puts this file's folder first on sys.path, where our
# module names (models, inputs, report...) could shadow real packages.
if not __package__ and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)


def _engines_module() -> ModuleType:
    if __package__:
        from . import engines

        return engines
    path = Path(__file__).with_name("engines.py")
    spec = importlib.util.spec_from_file_location("_deepfake_edge_bench_engines", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (10^6 bytes).

    On Linux this is ``VmHWM`` from /proc/self/status, the high-water mark of
    *this* address space. ``ru_maxrss`` would be wrong here: the kernel carries
    it across ``execve``, so a worker spawned by an orchestrator holding torch
    would inherit the orchestrator's peak (every engine showed the same 845 MB).
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / 1e6, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass  # not Linux: fall back to getrusage below
    # ru_maxrss is in KiB on Linux, bytes on macOS; only reached off Linux.
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6, 1)


def _timed(fn: Any, arg: Any, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return times


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--jpeg", type=Path, required=True)
    parser.add_argument("--pixel-values", type=Path, required=True)
    parser.add_argument("--spawn-time", type=float, required=True, help="time.time() when the parent spawned us")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # The protocol owns the real stdout; anything a library prints goes to stderr (the log).
    protocol: IO[str] = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    engines = _engines_module()
    setup, _label = engines.ENGINES[args.engine]
    started = time.perf_counter()
    engine = setup(checkpoint=args.checkpoint, bundle=args.bundle, variant=args.variant, threads=args.threads)
    loaded = time.perf_counter()
    loaded_rss = peak_rss_mb()
    scores = engine.predict(args.jpeg)
    first = time.perf_counter()
    send({
        "event": "ready",
        "cold_start_s": time.time() - args.spawn_time,
        "load_s": loaded - started,  # imports + model load
        "first_prediction_s": first - loaded,
        "scores": [float(s) for s in scores],
        "loaded_peak_rss_mb": loaded_rss,  # after imports and model load, before any image
        "peak_rss_mb": peak_rss_mb(),
    })

    import numpy as np  # every engine has numpy loaded by now; importing it here costs nothing

    pixel_values = np.load(args.pixel_values)
    batches: dict[int, Any] = {}  # made on first use, so a batch-8 tensor never inflates batch-1 memory

    def batch(size: int) -> Any:
        if size not in batches:
            batches[size] = engine.prepare(np.ascontiguousarray(np.repeat(pixel_values, size, axis=0)))
        return batches[size]

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "exit":
            break
        runs = int(request.get("runs", 1))
        if op == "model":
            times = _timed(engine.infer, batch(int(request["batch"])), runs)
        elif op == "e2e":
            times = _timed(engine.predict, args.jpeg, runs)
        elif op == "preprocess":
            times = _timed(engine.preprocess, args.jpeg, runs)
        else:
            raise ValueError(f"unknown request {request!r}")
        send({"times_s": times, "peak_rss_mb": peak_rss_mb()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
