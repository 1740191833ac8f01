"""Run every bundle variant of a ``prepare.py`` reference on this machine (aarch64, base install).

    python tests/arm64/run_models.py REFERENCE OUT [--proxy [--limit N]]

Each variant is opened with ``Detector.load`` (manifest, sha256, input/output checks) and run on
the reference pixel values one image per call, as on x86. Writes ``OUT/logits.npz`` (same keys as
the reference's), and ``OUT/run.json``: the machine, library versions, the CPU features onnxruntime
saw, per-variant load errors (an engine that is not installed must fail with its pip hint) and
seconds per image. Only numpy, Pillow and onnxruntime are needed, so it runs under emulation.
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from deepfake_edge import DeepfakeEdgeError, Detector

# Linux auxv keys and arm64 HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h): the features the
# kernel (here: qemu) reports, which onnxruntime's kernel dispatch reads.
AT_HWCAP, AT_HWCAP2 = 16, 26
HWCAP_BITS = {"asimdhp": (AT_HWCAP, 10), "asimddp": (AT_HWCAP, 20), "sve": (AT_HWCAP, 22),
              "i8mm": (AT_HWCAP2, 13), "bf16": (AT_HWCAP2, 14), "sme": (AT_HWCAP2, 23)}
PROGRESS_EVERY_S = 30


def subset(count: int, limit: int | None) -> np.ndarray:
    """Indices of ``limit`` images spread evenly over ``count`` (photos, crops and synthetics alike)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def cpu_features() -> dict[str, Any]:
    aux = dict(struct.iter_unpack("QQ", Path("/proc/self/auxv").read_bytes()))
    part = next((line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("CPU part")), None)
    return {"cpu_part": part, **{name: bool(aux.get(key, 0) >> bit & 1) for name, (key, bit) in HWCAP_BITS.items()}}


def _log(message: str) -> None:
    print(f"[aarch64] {message}", file=sys.stderr, flush=True)


def run_variant(bundle: Path, variant: str, pixel_values: np.ndarray) -> tuple[np.ndarray, float]:
    detector = Detector.load(bundle, variant)
    start = last_log = time.perf_counter()
    rows = []
    for i in range(len(pixel_values)):
        rows.append(detector.logits(pixel_values[i : i + 1]))
        if time.perf_counter() - last_log > PROGRESS_EVERY_S:
            last_log = time.perf_counter()
            _log(f"{bundle.name}/{variant}: image {i + 1}/{len(pixel_values)}, "
                 f"{(last_log - start) / (i + 1):.1f} s per image (emulated)")
    return np.concatenate(rows), (time.perf_counter() - start) / len(pixel_values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--proxy", action="store_true",
                        help="run the real-weights proxy bundle instead of the tiny ones")
    parser.add_argument("--limit", type=int, default=None,
                        help="with --proxy: only this many held-out images, spread evenly over the set")
    args = parser.parse_args(argv)
    ref = json.loads((args.reference / "reference.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    if args.proxy:
        jobs = [("proxy", ref["proxy"]["dir"], variant) for variant in ref["proxy"]["variants"]]
        pixel_values = np.load(args.reference / "proxy_pixel_values.npy")
        inputs = {"proxy": pixel_values[subset(len(pixel_values), args.limit)]}
    else:
        jobs = [(name, spec["dir"], variant) for name, spec in ref["bundles"].items() for variant in spec["variants"]]
        with np.load(args.reference / "pixel_values.npz") as arrays:
            inputs = {name: arrays[name] for name in ref["bundles"]}
    logits: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, directory, variant in jobs:
        key = f"{name}/{variant}"
        try:
            logits[key], seconds[key] = run_variant(args.reference / directory, variant, inputs[name])
        except DeepfakeEdgeError as exc:
            errors[key] = f"{type(exc).__name__}: {exc}"
        _log(f"{key}: {'error: ' + errors[key] if key in errors else f'{seconds[key]:.2f} s per image'}")
    np.savez(args.out / "logits.npz", **logits)
    run = {
        "machine": platform.machine(), "python": platform.python_version(),
        "versions": {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                     "pillow": __import__("PIL").__version__},
        "cpu": cpu_features(), "errors": errors, "seconds_per_image": seconds
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
