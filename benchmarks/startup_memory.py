"""Start-up overhead and peak memory of ``deepfake-edge predict``, as a user meets them.

* **start-up overhead**: wall time of a new ``deepfake-edge predict BUNDLE photo.jpg``
  process (1080p JPEG) minus one warm prediction of the same file in a process
  that has already loaded the bundle (median of several runs each);
* **peak RSS**: ``ru_maxrss`` of the predict process (what ``/usr/bin/time -v``
  prints), on a 12 MP and on a 1080p JPEG.

Each figure is the median of ``--runs`` child processes, after one untimed run
that warms the file cache. The runtime keeps a user cache (sha256 results and
optimized models, see ``deepfake_edge.model_cache``); the steady state reuses it,
and one extra run against an empty cache directory shows the first start.
``--compare DIR`` also measures another deepfake-edge source tree, round by round
in turn with the installed one, for a before/after pair from one sitting::

    git archive main runtime | tar -x -C /tmp/main && mv /tmp/main/runtime /tmp/main/deepfake_edge
    python -m deepfake_edge.benchmarks.startup_memory --bundle BUNDLE --compare /tmp/main --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .machine import describe_machine, summary_line

__all__ = ["main", "measure", "timed_child"]

SIZES = {"1080p": (1920, 1080), "12mp": (4000, 3000)}
WARM_RUNS = 3

# One warm prediction: load once, predict once untimed, then time each call on the same file.
_WARM = """
import json, sys, time
from deepfake_edge import Detector
from deepfake_edge.errors import UnsupportedBundleError
bundle, image, variant, runs = sys.argv[1], sys.argv[2], sys.argv[3] or None, int(sys.argv[4])
try:  # predict's default is "auto"; a tree from before "auto" falls back to the bundle's default
    detector = Detector.load(bundle, variant or "auto")
except UnsupportedBundleError:
    detector = Detector.load(bundle, variant)
detector.predict_one(image)
times = []
for _ in range(runs):
    start = time.perf_counter()
    detector.predict_one(image)
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "variant": detector.variant_name}))
"""


def _env(src: Path | None, cache: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DEEPFAKE_EDGE_CACHE"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)
    return env


def measure(bundle: Path, work: Path, *, runs: int, variant: str | None, trees: dict[str, Path | None],
            log: Any = print) -> dict[str, Any]:
    """Figures for each source tree (None: the installed deepfake_edge), interleaved run by run."""
    images = {key: work / f"{key}.jpg" for key in SIZES}
    # Written by a child: Linux carries a process's peak RSS into the children it forks, so this
    # process stays small (see timed_child).
    subprocess.run([sys.executable, "-m", __spec__.name if __spec__ else "deepfake_edge.benchmarks.startup_memory",
                    "--write-jpegs", str(work)], check=True, timeout=300)
    predict = [sys.executable, "-m", "deepfake_edge.cli", "predict", str(bundle), "--no-progress",
               *(["--variant", variant] if variant else [])]
    warm_argv = [sys.executable, "-c", _WARM, str(bundle), str(images["1080p"]), variant or "", str(WARM_RUNS)]
    envs = {name: _env(src, work / f"cache-{i}") for i, (name, src) in enumerate(trees.items())}
    rows: dict[str, dict[str, Any]] = {name: {"cold_1080p": [], "cold_12mp": [], "warm_1080p": [], "variant": None}
                                       for name in trees}
    first: dict[str, float] = {}
    for name, src in trees.items():
        log(f"{name}: warming the file cache and the runtime's cache")
        timed_child([*predict, str(images["1080p"])], envs[name])
        empty = Path(tempfile.mkdtemp(prefix="empty-cache-", dir=work))
        first[name] = timed_child([*predict, str(images["1080p"])], _env(src, empty))[0]
    for i in range(runs):
        for name in trees:
            row = rows[name]
            for key in SIZES:
                wall, rss, cpu, _ = timed_child([*predict, str(images[key])], envs[name])
                row[f"cold_{key}"].append({"wall_s": wall, "cpu_s": cpu, "rss_bytes": rss})
            warm = json.loads(timed_child(warm_argv, envs[name])[3].strip().splitlines()[-1])
            row["warm_1080p"].append(statistics.median(warm["times"]))
            row["variant"] = warm["variant"]
            log(f"round {i + 1}/{runs}, {name}: new process {row['cold_1080p'][-1]['wall_s']:.2f} s, "
                f"warm {row['warm_1080p'][-1]:.2f} s, 12 MP peak {row['cold_12mp'][-1]['rss_bytes'] / 2**20:.0f} MB")
    results = {}
    for name, row in rows.items():
        overheads = [c["wall_s"] - w for c, w in zip(row["cold_1080p"], row["warm_1080p"], strict=True)]
        results[name] = {
            "src": str(trees[name]) if trees[name] else None,
            "variant": row["variant"],
            "cold_1080p_s": statistics.median(c["wall_s"] for c in row["cold_1080p"]),
            "cold_1080p_cpu_s": statistics.median(c["cpu_s"] for c in row["cold_1080p"]),
            "warm_1080p_s": statistics.median(row["warm_1080p"]),
            "startup_overhead_s": statistics.median(overheads),
            "first_start_empty_cache_s": first[name],
            "peak_rss_mb": {key: statistics.median(c["rss_bytes"] for c in row[f"cold_{key}"]) / 2**20
                            for key in SIZES},
            "samples": row,
        }
    return {"machine": describe_machine(), "bundle": str(bundle), "runs": runs, "trees": results}


def timed_child(argv: list[str], env: dict[str, str], timeout: float = 300.0) -> tuple[float, int, float, str]:
    """(wall seconds, peak RSS in bytes, CPU seconds, stdout) of one child, its rusage read with ``os.wait4``."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        deadline = start + timeout
        hwm = 0  # the child's own high-water mark, polled: VmHWM starts afresh at exec
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, _vm_hwm(proc.pid))
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise TimeoutError(f"{' '.join(argv)}: no result within {timeout:.0f} s")
            time.sleep(0.002)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        # ru_maxrss is exact but starts from this process's peak (Linux carries it into forked
        # children); when it is not above ours, the polled VmHWM is the child's figure.
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_kb = usage.ru_maxrss if usage.ru_maxrss > own else hwm
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: "
                               f"{err.read().decode(errors='replace')[-2000:]}")
        return wall, peak_kb * 1024, usage.ru_utime + usage.ru_stime, out.read().decode()


def _vm_hwm(pid: int) -> int:
    """Peak RSS so far of process ``pid`` in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def render(result: dict[str, Any]) -> str:
    trees = result["trees"]
    names = list(trees)
    cells = {
        "new process to first result, 1080p (s)": lambda t: f"{t['cold_1080p_s']:.3f}",
        "  its CPU time (s)": lambda t: f"{t['cold_1080p_cpu_s']:.3f}",
        "one warm prediction, 1080p (s)": lambda t: f"{t['warm_1080p_s']:.3f}",
        "start-up overhead (s)": lambda t: f"{t['startup_overhead_s']:.3f}",
        "first start, empty user cache (s)": lambda t: f"{t['first_start_empty_cache_s']:.3f}",
        "peak RSS, 12 MP JPEG (MB)": lambda t: f"{t['peak_rss_mb']['12mp']:.0f}",
        "peak RSS, 1080p JPEG (MB)": lambda t: f"{t['peak_rss_mb']['1080p']:.0f}",
    }
    lines = [
        f"machine: {summary_line(result['machine'])}; load at start {result['machine']['load_average_at_start']}",
        f"bundle: {result['bundle']}; median of {result['runs']} interleaved rounds",
        "",
        "| | " + " | ".join(f"{n} ({trees[n]['variant']})" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {label} | " + " | ".join(cell(trees[n]) for n in names) + " |" for label, cell in cells.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="bundle to predict with (base-512 default bundle)")
    parser.add_argument("--variant", default=None, help="pass --variant to predict (default: predict's own default)")
    parser.add_argument("--runs", type=int, default=5, help="timed child processes per figure (default: 5)")
    parser.add_argument("--compare", type=Path, default=None, metavar="SRC",
                        help="also measure this deepfake_edge source tree (a directory holding deepfake_edge/), "
                             "interleaved with the installed one")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the JPEGs and the cache go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--write-jpegs", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_jpegs:
        from .inputs import write_jpeg

        for key, size in SIZES.items():
            if not (args.write_jpegs / f"{key}.jpg").is_file():
                write_jpeg(args.write_jpegs / f"{key}.jpg", size)
        return 0
    if args.bundle is None:
        parser.error("--bundle is required")
    with tempfile.TemporaryDirectory(prefix="startup-memory-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        trees: dict[str, Path | None] = {"this tree": None}
        if args.compare:
            trees = {"compared": args.compare, **trees}
        result = measure(args.bundle, work, runs=args.runs, variant=args.variant, trees=trees,
                         log=lambda m: print(m, file=sys.stderr))
    print(render(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
