"""Video scanning throughput: 1080p and 4K H.264 clips made here, at --fps 1, --fps 5 and --keyframes.

Per sampled frame: decode ms (demux + decode of every frame up to it + RGB conversion),
preprocess ms (``Detector.decode``), model ms; achieved frames/s of ``scan`` (decoding
overlapped with the model) against the model-only frames/s of the same variant; peak RSS.
Each clip and mode runs in its own process, so its peak RSS is its own.

    python -m deepfake_edge.benchmarks.video [--bundle DIR] [--variant int8] [--seconds 8]

Without ``--bundle`` it uses (or builds and exports) the random-weight base-512 model that
``deepfake-edge bench`` caches. Random weights: speed only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CLIPS = {"1080p": (1920, 1080), "4K": (3840, 2160)}
MODES = {"fps 1": {"fps": 1.0}, "fps 5": {"fps": 5.0}, "keyframes": {"keyframes": True, "fps": 30.0}}
RATE = 30
GOP = 30  # one keyframe a second, as cameras typically send


def make_clip(path: Path, width: int, height: int, seconds: int) -> Path:
    """A moving gradient with noise: every frame differs, so the decoder does real work."""
    import av

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE, options={"preset": "veryfast", "g": str(GOP),
                                                                     "keyint_min": str(GOP), "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        noise = rng.integers(0, 24, (height, width, 1), dtype=np.uint8)
        for i in range(seconds * RATE):
            frame = np.empty((height, width, 3), np.uint8)
            frame[..., 0] = (xx // 4 + i * 3) % 256
            frame[..., 1] = (yy // 4 + i * 2) % 256
            frame[..., 2] = ((xx + yy) // 8 + i) % 256
            frame += noise
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
        container.mux(stream.encode())
    return path


def measure(bundle: Path, variant: str | None, threads: int, clip: Path, mode: dict[str, Any]) -> dict[str, Any]:
    """One clip and mode, in this process."""
    from deepfake_edge import Detector
    from deepfake_edge.video import Sampling, ScanOptions, VideoReader, scan

    detector = Detector.load(bundle, variant, threads=threads)
    sampling = Sampling(**mode)
    cfg = detector.bundle.preprocess
    probe = np.zeros((1, 3, cfg.height, cfg.width), np.float32)
    for _ in range(2):
        detector.logits(probe)  # warm-up: onnxruntime plans memory on first runs

    started = time.perf_counter()  # decode alone
    with VideoReader(str(clip), sampling) as reader:
        images = [image for _, image in reader.samples()]
    decode_s = time.perf_counter() - started
    preprocess_ms, model_ms = [], []
    for image in images[:5]:
        t0 = time.perf_counter()
        tensor = detector.decode(image)
        t1 = time.perf_counter()
        detector.logits(tensor[None])
        preprocess_ms.append((t1 - t0) * 1000)
        model_ms.append((time.perf_counter() - t1) * 1000)
    del images

    started = time.perf_counter()  # the pipeline: decode thread overlapping the model
    items = list(scan(detector, str(clip), ScanOptions(sampling)))
    scan_s = time.perf_counter() - started
    frames = len(items) - 1
    model_fps = 1000 / statistics.median(model_ms)
    return {
        "frames": frames, "decode_ms": decode_s * 1000 / max(frames, 1),
        "preprocess_ms": statistics.median(preprocess_ms), "model_ms": statistics.median(model_ms),
        "scan_fps": frames / scan_s, "model_fps": model_fps, "ratio": frames / scan_s / model_fps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| clip | mode | sampled frames | decode ms/frame | preprocess ms | model ms | scan frames/s "
             "| model-only frames/s | scan / model-only | peak RSS MB |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['mode']} | {r['frames']} | {r['decode_ms']:.0f} | {r['preprocess_ms']:.0f} "
                     f"| {r['model_ms']:.0f} | {r['scan_fps']:.2f} | {r['model_fps']:.2f} | {r['ratio']:.0%} "
                     f"| {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="bundle to time (default: the cached random base-512 one)")
    parser.add_argument("--variant", default=None, help="bundle variant (default: the manifest's default)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default: 2)")
    parser.add_argument("--seconds", type=int, default=8, help="length of each clip (default: 8)")
    parser.add_argument("--clips", default="1080p,4K", help="which clips (default: 1080p,4K)")
    parser.add_argument("--out", type=Path, default=Path("video-bench.json"), help="results JSON")
    parser.add_argument("--one", nargs=2, metavar=("CLIP", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        result = measure(args.bundle, args.variant, args.threads, Path(args.one[0]), MODES[args.one[1]])
        print(json.dumps(result))
        return 0

    from .machine import describe_machine, load_average, summary_line

    bundle = args.bundle
    if bundle is None:
        from .models import prepare_model

        bundle = prepare_model(model=None, bundle=None, architecture="siglip-base-patch16-512",
                               cache_dir=Path.home() / ".cache" / "deepfake-edge" / "bench", rebuild=False,
                               log=lambda m: print(m, file=sys.stderr)).bundle
    machine = describe_machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="deepfake-edge-video-bench-") as tmp:
        for name in args.clips.split(","):
            width, height = CLIPS[name]
            print(f"encoding a {args.seconds} s {name} clip...", file=sys.stderr)
            clip = make_clip(Path(tmp) / f"{name}.mp4", width, height, args.seconds)
            for mode in MODES:
                command = [sys.executable, "-m", "deepfake_edge.benchmarks.video", "--bundle", str(bundle),
                           "--threads", str(args.threads), "--one", str(clip), mode]
                if args.variant:
                    command += ["--variant", args.variant]
                proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=True)
                rows.append({"clip": name, "mode": mode, **json.loads(proc.stdout.splitlines()[-1])})
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    machine["load_average_at_end"] = load_average()
    report = {"machine": machine, "bundle": str(bundle), "variant": args.variant, "threads": args.threads,
              "seconds": args.seconds, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"Machine: {summary_line(machine)}; 1-min load average {machine['load_average_at_start']} at start, "
          f"{machine['load_average_at_end']} at end\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
