"""Throughput of ``deepfake-edge batch`` on Ray Data against plain ``deepfake-edge predict``.

Each configuration runs as a fresh CLI process (so start-up counts, as a user
sees it) on the same JPEGs with the bundle's default variant:

* ``predict --threads C`` (one process, C intra-op threads);
* ``batch`` with 1 actor x C threads, and with C actors x 1 thread (a local Ray).

Every configuration runs on a small and a large set of images; the difference
separates the per-image time (slope) from the fixed start-up cost. Ray's
overhead is then the slope and start-up of ``batch 1 x C`` minus ``predict``'s.
The scale-out estimate divides the best measured per-core throughput over
N nodes of C cores, assuming linear scaling and inputs that arrive as fast as
the actors take them (no storage bottleneck).

    python -m deepfake_edge.benchmarks.ray_batch                     # base-512, random weights
    python -m deepfake_edge.benchmarks.ray_batch --bundle B --images 32 --small 4 --rounds 2 --json ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepfake_edge.bundle import Bundle

from .bench import default_cache_dir
from .inputs import _large_photo
from .machine import describe_machine, load_average, summary_line
from .models import RANDOM_LABEL, prepare_model

__all__ = ["main"]

IMAGE_SIZE = (1920, 1080)  # a typical archive photo: decode is a real but minor share of the time
RUN_TIMEOUT = 1800.0
ARCHIVE_IMAGES = 100_000_000
SCALE_OUT = ((1, 2), (1, 16), (10, 16), (10, 64), (100, 64))  # (nodes, cores per node)


def _write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):  # distinct noise per seed: distinct files, same decode cost
        path = folder / f"img{seed:04d}.jpg"
        _large_photo(IMAGE_SIZE, seed)[1].save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _configs(cores: int) -> dict[str, list[str]]:
    return {
        f"predict --threads {cores}": ["predict", "--threads", str(cores), "--no-progress"],
        f"batch 1 actor x {cores} threads": ["batch", "--actors", "1", "--cpus-per-actor", str(cores)],
        f"batch {cores} actors x 1 thread": ["batch", "--actors", str(cores), "--cpus-per-actor", "1"],
    }


def _run(bundle: Path, folder: Path, args: list[str], work: Path) -> float:
    """Wall seconds of one CLI process classifying ``folder``."""
    command = [sys.executable, "-m", "deepfake_edge.cli", args[0], str(bundle), str(folder), *args[1:]]
    if args[0] == "batch":
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        command += ["--out", str(out)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                          timeout=RUN_TIMEOUT, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall


def measure(bundle: Path, *, images: int, small: int, rounds: int, cores: int, work: Path,
            log: Any = print) -> dict[str, Any]:
    sets = {n: _write_images(work / f"images-{n}", n) for n in (small, images)}
    walls: dict[str, dict[int, list[float]]] = {name: {small: [], images: []} for name in _configs(cores)}
    for round_index in range(rounds):
        for name, args in _configs(cores).items():  # interleaved, so machine noise hits every config alike
            for n, paths in sets.items():
                wall = _run(bundle, paths[0].parent, args, work)
                walls[name][n].append(wall)
                log(f"round {round_index + 1}/{rounds}  {name:<28} {n:>4} images  {wall:7.1f} s  "
                    f"load {load_average()}")
    rows = {}
    for name, by_size in walls.items():
        large, little = statistics.median(by_size[images]), statistics.median(by_size[small])
        per_image = (large - little) / (images - small)
        rows[name] = {"wall_s": {str(n): v for n, v in by_size.items()}, "median_wall_s": large,
                      "images_per_s": images / large, "per_image_s": per_image,
                      "steady_images_per_s": 1 / per_image, "startup_s": little - small * per_image}
    return rows


def scale_out(per_core_images_per_s: float) -> list[dict[str, float]]:
    core_hours = ARCHIVE_IMAGES / per_core_images_per_s / 3600
    return [{"nodes": n, "cores_per_node": c, "hours": core_hours / (n * c), "core_hours": core_hours}
            for n, c in SCALE_OUT]


def render(result: dict[str, Any]) -> str:
    rows = result["configs"]
    predict = next(v for k, v in rows.items() if k.startswith("predict"))
    lines = [
        f"Machine: {result['machine_line']} (shared with other jobs: absolute figures are noisy, ratios less so)",
        (f"Bundle: {result['bundle']} variant {result['variant']} ({result['weights']}); "
        f"{result['images']} JPEGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}; median of {result['rounds']} rounds"),
        "",
        (f"| configuration | wall, {result['images']} images (s) | images/s (incl. start-up) "
        "| steady images/s | start-up (s) | vs predict (steady) |"),
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['median_wall_s']:.1f} | {row['images_per_s']:.2f} | "
                     f"{row['steady_images_per_s']:.2f} | {row['startup_s']:.1f} | "
                     f"{row['steady_images_per_s'] / predict['steady_images_per_s']:.2f}x |")
    overhead = result["ray_overhead"]
    lines += ["", (f"Ray's overhead (batch 1 x {result['cores']} vs predict, same threads): "
                  f"{overhead['per_image_ms']:+.0f} ms per image, {overhead['startup_s']:+.1f} s start-up."),
              "", (f"Scale-out estimate for {ARCHIVE_IMAGES:,} images at {result['per_core_images_per_s']:.3f} "
                  "images/s per core (best steady batch configuration; linear scaling assumed):"), "",
              "| nodes x cores | hours | core-hours |", "|---|---|---|"]
    for row in result["scale_out"]:
        lines.append(f"| {row['nodes']} x {row['cores_per_node']} | {row['hours']:,.1f} | {row['core_hours']:,.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None,
                        help=f"bundle to run (default: base-512 architecture, {RANDOM_LABEL}, built and cached once)")
    parser.add_argument("--images", type=int, default=32, help="large set size (default: 32)")
    parser.add_argument("--small", type=int, default=4, help="small set size, for the start-up cost (default: 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; medians are reported (default: 2)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="cores to use (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.images:
        parser.error("need 0 < --small < --images")
    if args.bundle is None:
        model = prepare_model(model=None, bundle=None, architecture="siglip-base-patch16-512",
                              cache_dir=default_cache_dir(), rebuild=False, log=print)
        bundle, weights = model.bundle, RANDOM_LABEL
    else:
        bundle, weights = args.bundle, "as given"
    variant = Bundle.open(bundle).manifest.default_variant
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as work:
        configs = measure(bundle, images=args.images, small=args.small, rounds=args.rounds, cores=args.cores,
                          work=Path(work))
    predict = next(v for k, v in configs.items() if k.startswith("predict"))
    one_actor = next(v for k, v in configs.items() if k.startswith("batch 1 actor"))
    best = max(v["steady_images_per_s"] for k, v in configs.items() if k.startswith("batch"))
    result = {
        "machine": machine, "machine_line": summary_line(machine), "bundle": str(bundle), "variant": variant,
        "weights": weights, "images": args.images, "small": args.small, "rounds": args.rounds, "cores": args.cores,
        "configs": configs,
        "ray_overhead": {"per_image_ms": 1000 * (one_actor["per_image_s"] - predict["per_image_s"]),
                         "startup_s": one_actor["startup_s"] - predict["startup_s"]},
        "per_core_images_per_s": best / args.cores,
        "scale_out": scale_out(best / args.cores),
    }
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
