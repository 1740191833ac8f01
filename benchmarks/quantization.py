"""Reproduce the quantization tables: fidelity on real weights, latency on base-512.

    python -m deepfake_edge.benchmarks.quantization fidelity --out quant-results
    python -m deepfake_edge.benchmarks.quantization latency  --out quant-results --threads 2

*fidelity* builds the real-weights proxy (pretrained DINOv2-small weights in a
SigLIP classifier, see ``real_weights_proxy``), exports every recipe with the
normal export path, then compares each variant with fp32 ONNX of the same
checkpoint on ~128 held-out images (never the images the head was fitted on or
the recipes calibrated on), one image per run.

*latency* builds the siglip-base-patch16-512 architecture with **random
weights** (speed only: no accuracy figure comes from it), exports every recipe
with ``tune=False`` (same graphs), and times batch-1 inference of torch fp32
eager and each ONNX variant side by side, interleaved round by round, then
profiles the per-op time of fp32, the onnxruntime baseline and our int8
(``int8-ov`` is timed on OpenVINO, through the runtime's own session).
Two more int8 graphs are timed beside them: one without the graph fusions
(attention, GELU), so their gain is measured in the same run, and, when a
fidelity run left a proxy bundle whose int8 kept MatMuls in fp32, one with the
same MatMuls in fp32, so the cost of the mixed precision the tuned export
chose is timed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

RECIPES = ["fp32", "int8", "int8-ort", "int8-static", "int8-ov", "int4", "fp16"]
SETTLE_S = 0.1  # pause before each timed run (see latency())
LATENCY_RECIPES = ["fp32", "int8", "int8-ort", "int8-static", "int8-ov", "int4"]  # fp16 is for GPUs


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


# -- fidelity --------------------------------------------------------------------------
def fidelity(out: Path, proxy: Path | None, crops_per_photo: int, synthetic: int, seed: int = 1) -> dict[str, Any]:
    from deepfake_edge import Detector
    from deepfake_edge.export import export_bundle
    from deepfake_edge.export.fidelity import compare
    from deepfake_edge.export.sample_images import heldout_images

    from .real_weights_proxy import build_proxy

    checkpoint = proxy or out / "proxy-checkpoint"
    if proxy is None and not (checkpoint / "config.json").is_file():
        build_proxy(checkpoint)
    bundle = out / "proxy-bundle"
    manifest = export_bundle(str(checkpoint), bundle, variants=RECIPES, overwrite=True)
    images = heldout_images(synthetic=synthetic, crops_per_photo=crops_per_photo, seed=seed)
    names = [item.name for item in images]
    reference = Detector.load(bundle, "fp32")
    pixel_values = reference.preprocess([item.image for item in images])

    def per_image(detector: Detector) -> np.ndarray:
        return np.concatenate([detector.logits(pixel_values[i : i + 1]) for i in range(len(pixel_values))])

    ref_logits = per_image(reference)
    rows = []
    for name in RECIPES:
        detector = Detector.load(bundle, name)
        f = compare(ref_logits, per_image(detector), names, detector.labels, "fake")
        recipe = manifest.variants[name].recipe
        rows.append({
            "variant": name, "file_mb": round(_mb(bundle / manifest.variants[name].file), 1),
            "label_agreement": f["label_agreement"], "max_abs_dp": f["max_abs_dp"], "mean_abs_dp": f["mean_abs_dp"],
            "boundary_max_abs_dp": f["boundary_max_abs_dp"], "boundary_mean_abs_dp": f["boundary_mean_abs_dp"],
            "worst_image": f["worst_image"],
            "notes": {k: recipe[k] for k in ("smoothing_alpha", "weight_rounding", "excluded_nodes") if k in recipe},
        })
    p_fake = _softmax_fake(ref_logits, reference.labels)
    return {"images": len(images), "seed": seed, "checkpoint": str(checkpoint), "rows": rows,
            "fp32_p_fake_quantiles": [float(q) for q in np.quantile(p_fake, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1])],
            "images_near_boundary": int(((p_fake > 0.4) & (p_fake < 0.6)).sum())}


def _softmax_fake(logits: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    from deepfake_edge.labels import softmax

    return softmax(logits)[:, labels.index("fake")]


def fidelity_table(result: dict[str, Any]) -> str:
    lines = [
        f"Real-weights proxy, {result['images']} held-out images (seed {result.get('seed', 1)}), each variant vs "
        "fp32 ONNX, one image per run.",
        "",
        "| variant | file MB | label agreement | max \\|ΔP(fake)\\| | mean \\|ΔP(fake)\\| | boundary max "
        "| boundary mean | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        notes = ", ".join(f"{k}={len(v) if isinstance(v, list) else v}" for k, v in r["notes"].items())
        lines.append(f"| {r['variant']} | {r['file_mb']} | {r['label_agreement']:.1%} | {r['max_abs_dp']:.4f} | "
                     f"{r['mean_abs_dp']:.5f} | {r['boundary_max_abs_dp']:.4f} | {r['boundary_mean_abs_dp']:.5f} "
                     f"| {notes} |")
    return "\n".join(lines)


# -- latency ---------------------------------------------------------------------------
def latency(out: Path, threads: int, runs: int) -> dict[str, Any]:
    import torch
    from transformers import SiglipForImageClassification

    from deepfake_edge.export import export_bundle
    from deepfake_edge.export.sample_images import heldout_images
    from deepfake_edge.manifest import Manifest
    from deepfake_edge.session import create_session

    from .models import ARCHITECTURES, RANDOM_LABEL, build_random_checkpoint
    from .op_profile import profile_ops

    arch = ARCHITECTURES["siglip-base-patch16-512"]
    checkpoint = out / "base512-checkpoint"
    if not (checkpoint / "config.json").is_file():
        build_random_checkpoint(arch, checkpoint)
    bundle = out / "base512-bundle"
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file() or set(Manifest.read(manifest_path).variants) != set(LATENCY_RECIPES):
        export_bundle(str(checkpoint), bundle, variants=LATENCY_RECIPES, overwrite=True, tune=False,
                      validation_images=heldout_images()[:4], calibration_limit=8)
    manifest = Manifest.read(bundle / "manifest.json")

    extra = _extra_int8_files(out, bundle, arch.num_attention_heads, arch.hidden_size)
    torch.set_num_threads(threads)
    model = SiglipForImageClassification.from_pretrained(checkpoint).eval()
    x = np.random.default_rng(0).normal(size=(1, 3, arch.image_size, arch.image_size)).astype(np.float32)
    xt = torch.from_numpy(x)

    # engine label -> (file, backend, backend options); every file is opened as Detector opens it
    # (int8-ov on OpenVINO), with the same thread count
    targets: dict[str, tuple[Path, str, dict[str, str] | None]] = {
        f"{spec.backend} {name}": (bundle / spec.file, spec.backend, spec.backend_options)
        for name, spec in ((n, manifest.variants[n]) for n in LATENCY_RECIPES)
    } | {label: (path, "onnxruntime", None) for label, path in extra.items()}
    engines: dict[str, Any] = {"torch fp32 eager": lambda: model(pixel_values=xt)}
    for label, (path, backend, backend_options) in targets.items():
        s = create_session(path, threads=threads, backend=backend, backend_options=backend_options)
        engines[label] = lambda s=s: s.run(["logits"], {"pixel_values": x})
    times: dict[str, list[float]] = {name: [] for name in engines}
    with torch.inference_mode():
        for fn in engines.values():
            fn()  # warm-up
        for _ in range(runs):  # interleaved: drift on a noisy machine hits every engine alike
            for name, fn in engines.items():
                # Let the previous engine's worker threads park first: onnxruntime's spin after a
                # run, and whichever engine came next measured up to 12 % slower (measured).
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    torch_ms, ort_ms = medians["torch fp32 eager"], medians["onnxruntime fp32"]
    rows = [{"engine": name, "median_ms": round(ms, 1),
             "p95_ms": round(float(np.percentile(times[name], 95)) * 1000, 1),
             "speedup_vs_torch": round(torch_ms / ms, 2), "speedup_vs_ort_fp32": round(ort_ms / ms, 2),
             "file_mb": None if name.startswith("torch") else round(_mb(targets[name][0]), 1)}
            for name, ms in medians.items()]
    shape = (1, 3, arch.image_size, arch.image_size)
    profiled = {"fp32": targets["onnxruntime fp32"][0], "int8-ort": targets["onnxruntime int8-ort"][0],
                "int8 unfused": targets["onnxruntime int8, no graph fusions"][0],
                "int8": targets["onnxruntime int8"][0]}
    profiles = {name: profile_ops(path, shape, threads=threads, runs=2) for name, path in profiled.items()}
    return {"label": RANDOM_LABEL, "architecture": arch.name, "threads": threads, "runs": runs, "rows": rows,
            "profiles": profiles}


def _int8_variant(bundle: Path, path: Path, num_heads: int, hidden_size: int, *, fuse: bool = True,
                  exclude: tuple[str, ...] = ()) -> Path:
    """The untuned int8 graph of ``bundle``'s fp32 model, with or without the graph fusions.

    Speed only (random weights): the smoothing alpha and weight rounding do not change the graph.
    """
    import onnx

    from deepfake_edge import Detector
    from deepfake_edge.export.graph_fusions import fuse_graph
    from deepfake_edge.export.per_token_int8 import quantize_per_token
    from deepfake_edge.export.sample_images import heldout_images
    from deepfake_edge.export.smoothing import DEFAULT_ALPHA, smooth_layernorms

    calibration = Detector.load(bundle, "fp32").preprocess([i.image for i in heldout_images()[:4]])
    model = onnx.load(bundle / "model.onnx")
    if fuse:
        model = fuse_graph(model, num_heads, hidden_size)[0]
    smoothed = smooth_layernorms(model, calibration, alpha=DEFAULT_ALPHA)[0]
    onnx.save(quantize_per_token(smoothed, exclude=exclude)[0], path)
    return path


def _extra_int8_files(out: Path, bundle: Path, num_heads: int, hidden_size: int) -> dict[str, Path]:
    """int8 without the graph fusions (their measured gain), and with the proxy's fp32 MatMuls, if any."""
    from deepfake_edge.manifest import Manifest

    files = {"onnxruntime int8, no graph fusions": _int8_variant(
        bundle, out / "base512-int8-unfused.onnx", num_heads, hidden_size, fuse=False)}
    proxy_manifest = out / "proxy-bundle" / "manifest.json"
    tuned = Manifest.read(proxy_manifest).variants.get("int8") if proxy_manifest.is_file() else None
    excluded = tuned.recipe.get("excluded_nodes", []) if tuned is not None else []
    if excluded:
        import onnx

        names = {n.name for n in onnx.load(bundle / "model.onnx", load_external_data=False).graph.node}
        missing = sorted(set(excluded) - names)
        if missing:
            raise SystemExit(f"the proxy kept {missing} in fp32, which base-512's graph does not have")
        # Same names on both checkpoints: same exporter, same architecture family.
        files[f"onnxruntime int8, {len(excluded)} MatMul(s) fp32 as tuned on the proxy"] = _int8_variant(
            bundle, out / "base512-int8-mixed.onnx", num_heads, hidden_size, exclude=tuple(excluded))
    return files


def latency_table(result: dict[str, Any]) -> str:
    from .op_profile import format_profile

    lines = [
        f"{result['architecture']} ({result['label']}), batch 1, {result['threads']} threads, "
        f"median of {result['runs']} interleaved runs.",
        "",
        "| engine | median ms | p95 ms | vs torch eager | vs onnxruntime fp32 | file MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['engine']} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | {r['speedup_vs_torch']:.2f}× | "
                     f"{r['speedup_vs_ort_fp32']:.2f}× | {r['file_mb'] if r['file_mb'] is not None else '–'} |")
    lines += ["", "Per-op kernel time (ms per image, onnxruntime profiler):", "",
              format_profile(result["profiles"], top=16)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["fidelity", "latency", "all"])
    parser.add_argument("--out", type=Path, default=Path("quant-results"))
    parser.add_argument("--proxy", type=Path, default=None, help="existing real-weights proxy checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--crops-per-photo", type=int, default=8)
    parser.add_argument("--synthetic", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the held-out crops and synthetic images (another seed: another held-out set)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what in ("fidelity", "all"):
        result = fidelity(args.out, args.proxy, args.crops_per_photo, args.synthetic, args.seed)
        (args.out / "fidelity.json").write_text(json.dumps(result, indent=2))
        (args.out / "fidelity.md").write_text(fidelity_table(result) + "\n")
        print(fidelity_table(result), flush=True)
    if args.what in ("latency", "all"):
        result = latency(args.out, args.threads, args.runs)
        (args.out / "latency.json").write_text(json.dumps(result, indent=2))
        (args.out / "latency.md").write_text(latency_table(result) + "\n")
        print(latency_table(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
