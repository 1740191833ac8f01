"""Exact against fast (``fast_decode``) JPEG decoding: speed, peak memory and fidelity, side by side.

* **speed**: ``Detector.decode`` (decode and preprocess) of one 12 MP JPEG, exact and with JPEG
  DCT scaling at each ``--factors`` value (the decoded image stays at least that many times the
  model input), interleaved round by round; medians, and ratios to exact;
* **peak RSS**: a new ``deepfake-edge predict`` process on that JPEG, with and without
  ``--fast-decode`` (medians of interleaved runs);
* **fidelity**: every shipped photo (``export.sample_images``) and every image in ``--images``,
  upscaled to a 4000 px long side with mild sensor noise and saved as a quality-90 JPEG: the
  max and mean |diff| of the preprocessed tensor against exact decoding, and with ``--variants``
  the max and mean |dP(positive label)| and label agreement of each variant. The ``--images``
  are also compared as they are (formats other than JPEG must come out identical).

|dP| needs real weights (the real-weights proxy bundle); on random weights only the tensor and
speed figures mean anything::

    python -m deepfake_edge.benchmarks.decode --bundle PROXY_BUNDLE --variants fp32,int8 --images DIR --no-speed
    python -m deepfake_edge.benchmarks.decode --bundle BASE512_BUNDLE --out decode.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepfake_edge import Detector
from deepfake_edge.export.sample_images import PHOTOS, photo_path
from deepfake_edge.images import load_rgb, load_rgb_scaled
from deepfake_edge.paths import image_suffixes
from deepfake_edge.preprocess import FAST_DECODE_FACTOR, draft_size

from .inputs import JPEG_QUALITY, phone_photo, write_jpeg
from .machine import describe_machine, summary_line
from .startup_memory import timed_child

__all__ = ["fidelity", "main", "peak_rss", "speed"]

EXACT = "exact"
LONG_SIDE = 4000  # a phone photo's long side


def _modes(detector: Detector, factors: list[int]) -> dict[str, tuple[int, int] | None]:
    """mode name -> the draft size ``Detector.decode`` uses (None: exact)."""
    return {EXACT: None, **{f"fast x{k}": draft_size(detector.bundle.preprocess, k) for k in factors}}


def _decode(detector: Detector, image: Path | bytes, size: tuple[int, int] | None) -> np.ndarray:
    detector.draft_size = size  # what Detector.load(fast_decode=True) sets, at another factor
    return detector.decode(image)


def speed(detector: Detector, jpeg: Path, factors: list[int], runs: int) -> dict[str, Any]:
    """Median seconds of ``Detector.decode`` per mode, interleaved after one untimed round."""
    modes = _modes(detector, factors)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(runs + 1):
        for mode, size in modes.items():
            start = time.perf_counter()
            _decode(detector, jpeg, size)
            if round_:
                times[mode].append(time.perf_counter() - start)
    exact = statistics.median(times[EXACT])
    return {mode: {"decoded_size": list(load_rgb_scaled(jpeg, draft=size)[0].size),
                   "median_s": statistics.median(times[mode]), "speedup": exact / statistics.median(times[mode]),
                   "samples": times[mode]}
            for mode, size in modes.items()}


# Decoding and preprocessing alone, in a new process: the part of the peak that decoding sets.
_DECODE_ONLY = """
import sys
from deepfake_edge.bundle import Bundle
from deepfake_edge.images import load_rgb_scaled
from deepfake_edge.preprocess import draft_size, resize, to_model_input
config = Bundle.open(sys.argv[1]).preprocess
image, box = load_rgb_scaled(sys.argv[2], draft=draft_size(config) if sys.argv[3] == "fast" else None)
to_model_input(resize(image, config, box), config)
"""


def peak_rss(bundle: Path, jpeg: Path, variant: str | None, runs: int) -> dict[str, dict[str, float]]:
    """Median peak RSS (MB) of ``deepfake-edge predict`` on ``jpeg`` and of decoding it alone, exact and fast."""
    predict = [sys.executable, "-m", "deepfake_edge.cli", "predict", str(bundle), str(jpeg), "--no-progress",
               *(["--variant", variant] if variant else [])]
    fast = f"fast x{FAST_DECODE_FACTOR}"
    children = {
        ("predict", EXACT): predict, ("predict", fast): [*predict, "--fast-decode"],
        ("decode only", EXACT): [sys.executable, "-c", _DECODE_ONLY, str(bundle), str(jpeg), "exact"],
        ("decode only", fast): [sys.executable, "-c", _DECODE_ONLY, str(bundle), str(jpeg), "fast"],
    }
    env = dict(os.environ)
    samples: dict[tuple[str, str], list[int]] = {key: [] for key in children}
    for _ in range(runs):
        for key, argv in children.items():
            samples[key].append(timed_child(argv, env)[1])
    result: dict[str, dict[str, float]] = {}
    for (what, mode), values in samples.items():
        result.setdefault(what, {})[mode] = statistics.median(values) / 2**20
    return result


def _large_jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    scale = LONG_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    buffer = io.BytesIO()
    phone_photo(image, size, rng).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def image_sets(images_dir: Path | None, shipped_limit: int | None = None, seed: int = 0) -> dict[str, dict[str, bytes]]:
    """Group name -> {image name: encoded file}: shipped photos and ``images_dir``, as large JPEGs and as they are."""
    rng = np.random.default_rng(seed)
    installed = {name: path for name in PHOTOS if (path := photo_path(name)) is not None}
    shipped = dict(list(installed.items())[:shipped_limit])
    given = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in image_suffixes()) if images_dir else []
    sets: dict[str, dict[str, bytes]] = {"shipped photos, large JPEG": {}}
    for name, path in shipped.items():
        sets["shipped photos, large JPEG"][name] = _large_jpeg(load_rgb(path), rng)
    if given:
        sets[f"{images_dir}, as they are"] = {p.name: p.read_bytes() for p in given}
        sets[f"{images_dir}, large JPEG"] = {p.name: _large_jpeg(load_rgb(p), rng) for p in given}
    return sets


def fidelity(decoder: Detector, scored: dict[str, Detector], sets: dict[str, dict[str, bytes]], factors: list[int],
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Per image set and mode: tensor |diff| against exact, and for each ``scored`` variant |dP| and agreement."""
    modes = _modes(decoder, factors)
    results: dict[str, Any] = {}
    for group, files in sets.items():
        log(f"fidelity: {group} ({len(files)} images)")
        tensors = {mode: np.stack([_decode(decoder, data, size) for data in files.values()])
                   for mode, size in modes.items()}
        scores: dict[str, dict[str, list[tuple[float, str]]]] = {}
        for name, detector in scored.items():
            positive = detector.positive_label or detector.labels[0]
            scores[name] = {}
            for mode, batch in tensors.items():
                rows = detector.results(list(files), detector.logits(batch))
                scores[name][mode] = [(r.scores[positive], r.label) for r in rows if hasattr(r, "scores")]
        row: dict[str, Any] = {"images": len(files)}
        for mode in modes:
            if mode == EXACT:
                continue
            diff = np.abs(tensors[mode] - tensors[EXACT])
            entry: dict[str, Any] = {"tensor_max_abs_diff": float(diff.max()),
                                     "tensor_mean_abs_diff": float(diff.mean())}
            for name, by_mode in scores.items():
                exact_p = np.array([p for p, _ in by_mode[EXACT]])
                fast_p = np.array([p for p, _ in by_mode[mode]])
                delta = np.abs(fast_p - exact_p)
                flips = [(img, round(float(p), 4)) for img, (p, label), (_, fast_label)
                         in zip(files, by_mode[EXACT], by_mode[mode], strict=True) if label != fast_label]
                entry[name] = {"max_abs_dp": float(delta.max()), "mean_abs_dp": float(delta.mean()),
                               "label_agreement": 1 - len(flips) / len(files), "flips_with_exact_p": flips}
            row[mode] = entry
        results[group] = row
    return results


def render(result: dict[str, Any]) -> str:
    lines = [f"machine: {summary_line(result['machine'])}; load at start {result['machine']['load_average_at_start']}",
             f"bundle: {result['bundle']}; model input {result['input_size'][0]}x{result['input_size'][1]}", ""]
    if "speed" in result:
        lines += [f"decode + preprocess of {result['jpeg']} (median of {result['runs']} interleaved rounds):", "",
                  "| mode | decoded at | ms | speed-up |", "|---|---|---|---|"]
        lines += [f"| {mode} | {s['decoded_size'][0]}x{s['decoded_size'][1]} | {s['median_s'] * 1e3:.0f} | "
                  f"{s['speedup']:.2f}x |" for mode, s in result["speed"].items()]
        lines.append("")
    for what, by_mode in result.get("peak_rss_mb", {}).items():
        lines += [f"peak RSS of a new process, {what} (MB): " + ", ".join(f"{m} {mb:.0f}" for m, mb in by_mode.items())]
    lines.append("")
    for group, row in result.get("fidelity", {}).items():
        lines += [f"fidelity against exact decoding, {group} ({row['images']} images):", ""]
        variants = result["variants"]
        lines.append("| mode | tensor max / mean abs diff |"
                     + "".join(f" {v}: max / mean abs dP, agreement |" for v in variants))
        lines.append("|---|---|" + "---|" * len(variants))
        for mode, entry in row.items():
            if mode == "images":
                continue
            cells = [f"{entry[v]['max_abs_dp']:.4f} / {entry[v]['mean_abs_dp']:.5f}, "
                     f"{entry[v]['label_agreement']:.1%}" for v in variants]
            lines.append(f"| {mode} | {entry['tensor_max_abs_diff']:.4f} / {entry['tensor_mean_abs_diff']:.5f} |"
                         + "".join(f" {cell} |" for cell in cells))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle whose preprocessing (and variants) to use")
    parser.add_argument("--variants", default="", help="comma-separated variants to score for |dP| (default: none; "
                                                       "use real weights only)")
    parser.add_argument("--images", type=Path, default=None, help="a folder of more images for the fidelity part")
    parser.add_argument("--shipped", type=int, default=None, metavar="N",
                        help="use only the first N shipped photos (default: all installed)")
    parser.add_argument("--factors", default="1,2", help="draft factors to compare (default: 1,2)")
    parser.add_argument("--runs", type=int, default=9, help="timed rounds for speed (default: 9)")
    parser.add_argument("--rss-runs", type=int, default=3, help="predict processes per mode for peak RSS (default: 3)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed and peak RSS parts")
    parser.add_argument("--no-fidelity", action="store_true", help="skip the fidelity part")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    factors = [int(k) for k in args.factors.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    detectors = {v: Detector.load(args.bundle, v) for v in variants} or {"default": Detector.load(args.bundle)}
    first = next(iter(detectors.values()))
    cfg = first.bundle.preprocess
    result: dict[str, Any] = {"machine": describe_machine(), "bundle": str(args.bundle),
                              "input_size": [cfg.width, cfg.height], "factors": factors, "variants": variants}
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if not args.no_speed:
        with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
            jpeg = Path(tmp) / "12mp.jpg"
            result["jpeg"] = f"12 MP JPEG ({write_jpeg(jpeg)})"
            result["runs"] = args.runs
            log("speed: decode + preprocess, exact and fast")
            result["speed"] = speed(first, jpeg, factors, args.runs)
            log("peak RSS: deepfake-edge predict processes")
            result["peak_rss_mb"] = peak_rss(args.bundle, jpeg, variants[0] if variants else None, args.rss_runs)
    if not args.no_fidelity:
        sets = image_sets(args.images, args.shipped)
        result["fidelity"] = fidelity(first, detectors if variants else {}, sets, factors, log)
    print(render(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
