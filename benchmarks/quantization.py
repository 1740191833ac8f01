"""Reproduce the quantization tables: fidelity on real weights, latency on base-512.

    python -m deepfake_edge.benchmarks.quantization fidelity --out quant-results
    python -m deepfake_edge.benchmarks.quantization latency  --out quant-results --threads 2

*fidelity* builds the real-weights proxy (pretrained DINOv2-small weights in a
SigLIP classifier, see ``deepfake_edge.export.proxy``), exports every recipe
with the normal export path, then compares each variant with fp32 ONNX of the
same checkpoint on ~128 held-out images (never the images the head was fitted
on or the recipes calibrated on), one image per run.

*latency* builds the siglip-base-patch16-512 architecture with **random
weights** (speed only: no accuracy figure comes from it), exports every recipe
with ``tune=False`` (same graphs) and times them with the project's benchmark
harness (``deepfake-edge bench``: one process per engine, interleaved rounds,
torch fp32 eager as the baseline), then profiles the per-op time of fp32, the
onnxruntime baseline and our int8 (``int8-ov`` runs on OpenVINO, as the
runtime runs it). More int8 graphs are added to that bundle as variants
and timed beside them: ``int8-unfused``, without the graph fusions (attention,
GELU), so their gain is measured in the same run; ``int8-att8``, with 8-bit
attention (``export/attention_int8.py``, not shipped: see docs/attention-int8.md
for its fidelity), so its gain on the machine at hand is measured; and, when a fidelity run left
a proxy bundle whose int8 kept MatMuls in fp32, ``int8-mixed``, with the same
MatMuls in fp32, so the cost of the mixed precision the tuned export chose is
timed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

GPU_ONLY = ("fp16",)  # slower than fp32 on CPU by design: not timed
UNFUSED, MIXED, ATTENTION_INT8 = "int8-unfused", "int8-mixed", "int8-att8"


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


# -- fidelity --------------------------------------------------------------------------
def fidelity(out: Path, proxy: Path | None, crops_per_photo: int, synthetic: int, seed: int = 1, *,
             variants: list[str] | None = None, effort: str | None = None, bundle: Path | None = None,
             crop_range: tuple[float, float] = (0.2, 0.9)) -> dict[str, Any]:
    """Export the proxy (``variants``, default every recipe; ``effort``) unless ``bundle`` is given, then compare."""
    from deepfake_edge import Detector
    from deepfake_edge.export import RECIPES, export_bundle
    from deepfake_edge.export.fidelity import compare
    from deepfake_edge.export.proxy import build_proxy
    from deepfake_edge.export.sample_images import heldout_images
    from deepfake_edge.labels import softmax
    from deepfake_edge.manifest import MANIFEST_NAME, Manifest
    from deepfake_edge.session import run_logits

    checkpoint = proxy or out / "proxy-checkpoint"
    if proxy is None and not (checkpoint / "config.json").is_file():
        build_proxy(checkpoint)
    if bundle is None:
        bundle = out / "proxy-bundle"
        export_bundle(str(checkpoint), bundle, variants=variants or list(RECIPES), overwrite=True,
                      **({"effort": effort} if effort else {}))
    manifest = Manifest.read(bundle / MANIFEST_NAME)
    images = heldout_images(synthetic=synthetic, crops_per_photo=crops_per_photo, seed=seed, crop_range=crop_range)
    names = [item.name for item in images]
    reference = Detector.load(bundle, "fp32")
    pixel_values = reference.preprocess([item.image for item in images])
    ref_logits = run_logits(reference.session, pixel_values, per_image=True)
    rows = []
    fake = reference.labels.index("fake")
    for name in manifest.variants:
        detector = Detector.load(bundle, name)
        logits = run_logits(detector.session, pixel_values, per_image=True)
        f = compare(ref_logits, logits, names, detector.labels, "fake")
        recipe = manifest.variants[name].recipe
        rows.append({
            "variant": name, "file_mb": round(_mb(bundle / manifest.variants[name].file), 1),
            "label_agreement": f["label_agreement"], "flips": f["flips"],
            "flips_within_margin": f["flips_within_margin"],
            "max_abs_dp": f["max_abs_dp"], "p99_abs_dp": f["p99_abs_dp"], "mean_abs_dp": f["mean_abs_dp"],
            "boundary_max_abs_dp": f["boundary_max_abs_dp"], "boundary_mean_abs_dp": f["boundary_mean_abs_dp"],
            "worst_image": f["worst_image"],
            # per image, so held-out sets can be judged together (pooled mean, p99, max)
            "abs_dp": [round(float(v), 6) for v in np.abs(softmax(ref_logits)[:, fake] - softmax(logits)[:, fake])],
            "notes": {k: recipe[k] for k in ("smoothing_alpha", "weight_rounding", "excluded_nodes") if k in recipe},
        })
    p_fake = softmax(ref_logits)[:, reference.labels.index("fake")]
    return {"images": len(images), "seed": seed, "crop_range": list(crop_range), "checkpoint": str(checkpoint),
            "bundle": str(bundle), "rows": rows,
            "fp32_p_fake_quantiles": [float(q) for q in np.quantile(p_fake, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1])],
            "images_near_boundary": int(((p_fake > 0.4) & (p_fake < 0.6)).sum())}


def fidelity_table(result: dict[str, Any]) -> str:
    lines = [
        f"Real-weights proxy, {result['images']} held-out images (seed {result.get('seed', 1)}, crops "
        f"{result.get('crop_range', [0.2, 0.9])} of each side), each variant vs "
        "fp32 ONNX, one image per run.",
        "",
        "| variant | file MB | label agreement (flips within 0.02) | max \\|ΔP(fake)\\| | p99 | mean \\|ΔP(fake)\\| "
        "| boundary max | boundary mean | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        notes = ", ".join(f"{k}={len(v) if isinstance(v, list) else v}" for k, v in r["notes"].items())
        flips = f" ({r['flips_within_margin']} of {r['flips']})" if r.get("flips") else ""
        lines.append(f"| {r['variant']} | {r['file_mb']} | {r['label_agreement']:.1%}{flips} | {r['max_abs_dp']:.4f} | "
                     f"{r.get('p99_abs_dp', float('nan')):.4f} | {r['mean_abs_dp']:.5f} | "
                     f"{r['boundary_max_abs_dp']:.4f} | {r['boundary_mean_abs_dp']:.5f} | {notes} |")
    return "\n".join(lines)


# -- latency ---------------------------------------------------------------------------
def latency(out: Path, threads: int, runs: int | None = None, *, quick: bool = False,
            argv: list[str] | None = None) -> dict[str, Any]:
    """Time every CPU recipe (and the two extra int8 graphs) against torch; ``quick``: the tiny architecture."""
    from deepfake_edge.export import RECIPES, export_bundle, quiet_third_party_logs
    from deepfake_edge.export.sample_images import heldout_images
    from deepfake_edge.manifest import MANIFEST_NAME, Manifest

    from .bench import BenchOptions, run_bench
    from .models import ARCHITECTURES, RANDOM_LABEL, build_random_checkpoint
    from .op_profile import profile_ops

    quiet_third_party_logs()
    arch = ARCHITECTURES["tiny" if quick else "siglip-base-patch16-512"]
    recipes = [name for name in RECIPES if name not in GPU_ONLY]
    checkpoint = out / f"{arch.name}-checkpoint"
    if not (checkpoint / "config.json").is_file():
        build_random_checkpoint(arch, checkpoint)
    bundle = out / f"{arch.name}-bundle"
    manifest_path = bundle / MANIFEST_NAME
    if not manifest_path.is_file() or not set(recipes) <= set(Manifest.read(manifest_path).variants):
        export_bundle(str(checkpoint), bundle, variants=recipes, overwrite=True, tune=False,
                      validation_images=heldout_images()[:4], calibration_limit=8)
    _add_int8_variants(out, bundle, arch.num_attention_heads, arch.hidden_size)

    options = BenchOptions.create(quick=quick, out_dir=out / f"{arch.name}-latency", model=str(checkpoint),
                                  bundle=bundle, threads=threads, runs=runs, engines=("torch", "deepfake-edge"))
    bench = run_bench(options, argv, program=("python", "-m", "deepfake_edge.benchmarks.quantization"))
    manifest = Manifest.read(bundle / MANIFEST_NAME)
    shape = (1, 3, arch.image_size, arch.image_size)
    profiled = {"fp32": "fp32", "int8-ort": "int8-ort", "int8 unfused": UNFUSED, "int8": "int8",
                "int8 att8": ATTENTION_INT8}
    profiles = {label: profile_ops(bundle / manifest.variants[name].file, shape, threads=threads, runs=2)
                for label, name in profiled.items()}
    return {"label": RANDOM_LABEL, "architecture": arch.name, "threads": bench["settings"]["threads"],
            "runs": bench["settings"]["runs"],
            "rows": _latency_rows(bench), "bench_results": str(options.out_dir / "results.json"), "profiles": profiles}


def _add_int8_variants(out: Path, bundle: Path, num_heads: int, hidden_size: int) -> None:
    """int8 without the graph fusions, with 8-bit attention and, if a proxy bundle kept MatMuls fp32, with those."""
    import dataclasses

    import onnx

    from deepfake_edge import Detector
    from deepfake_edge.export.bundle_writer import add_variant, write_manifest
    from deepfake_edge.export.int8 import untuned_int8
    from deepfake_edge.export.sample_images import heldout_images
    from deepfake_edge.manifest import MANIFEST_NAME, Manifest

    manifest = Manifest.read(bundle / MANIFEST_NAME)  # drop what an earlier run added
    write_manifest(bundle, dataclasses.replace(
        manifest, variants={k: v for k, v in manifest.variants.items() if k not in (UNFUSED, MIXED, ATTENTION_INT8)}))
    # Speed only (random weights): the smoothing alpha and weight rounding do not change the graph.
    calibration = Detector.load(bundle, "fp32").preprocess([i.image for i in heldout_images()[:4]])
    fp32 = onnx.load(bundle / "model.onnx")
    extra: dict[str, tuple[dict[str, Any], str]] = {
        UNFUSED: ({"fuse": False}, "int8 without the attention and GELU fusions"),
        ATTENTION_INT8: ({"attention": "int8"}, "int8 with 8-bit attention (SageAttention-style; speed only)"),
    }
    proxy_manifest = out / "proxy-bundle" / MANIFEST_NAME
    tuned = Manifest.read(proxy_manifest).variants.get("int8") if proxy_manifest.is_file() else None
    excluded = tuned.recipe.get("excluded_nodes", []) if tuned is not None else []
    if excluded:
        missing = sorted(set(excluded) - {n.name for n in fp32.graph.node})
        if missing:
            raise SystemExit(f"the proxy kept {missing} in fp32, which this architecture's graph does not have")
        # Same names on both checkpoints: same exporter, same architecture family.
        extra[MIXED] = ({"exclude": excluded}, f"int8 with the {len(excluded)} MatMul(s) the proxy's tuned "
                                               "export kept in fp32")
    for name, (options, description) in extra.items():
        model, record = untuned_int8(fp32, calibration, num_heads, hidden_size, **options)
        file = f"model_{name.replace('-', '_')}.onnx"
        onnx.save(model, bundle / file)
        add_variant(bundle, name, file, {"description": description, **record}, batch_invariant=True)


def _latency_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """Batch-1 rows of a bench run, with the ratio against this runtime's fp32 beside the one against torch."""
    from .stats import ratio

    rows = [r for r in bench["rows"] if r["batch_size"] == 1]
    fp32 = next((r for r in rows if r["engine"] == "deepfake-edge" and r["variant"] == "fp32"
                 and r["status"] == "ok"), None)
    out = []
    for r in rows:
        ok = r["status"] == "ok"
        out.append({
            "engine": r["label"], "status": r["status"], "error": r.get("error"),
            "median_ms": round(r["latency_ms"]["p50"], 1) if ok else None,
            "p95_ms": round(r["latency_ms"]["p95"], 1) if ok else None,
            "speedup_vs_torch": (r.get("vs_baseline") or {}).get("latency_speedup"),
            "speedup_vs_ort_fp32": ratio(fp32["latency_ms"]["p50"], r["latency_ms"]["p50"]) if ok and fp32 else None,
            "file_mb": None if r["engine"] == "torch" else round(bench["bundle_files"][r["model_file"]] / 1e6, 1),
        })
    return out


def latency_table(result: dict[str, Any]) -> str:
    from .op_profile import format_profile

    def times(value: float | None) -> str:
        return f"{value:.2f}×" if value is not None else "–"

    lines = [
        f"{result['architecture']} ({result['label']}), batch 1, {result['threads']} threads, "
        f"median of {result['runs']} runs, engines interleaved, each in its own process "
        f"(all figures: {result['bench_results']}).",
        "",
        "| engine | median ms | p95 ms | vs torch eager | vs onnxruntime fp32 | file MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['engine']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['engine']} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | {times(r['speedup_vs_torch'])} | "
                     f"{times(r['speedup_vs_ort_fp32'])} | {r['file_mb'] if r['file_mb'] is not None else '–'} |")
    lines += ["", "Per-op kernel time (ms per image, onnxruntime profiler):", "",
              format_profile(result["profiles"], top=16)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["fidelity", "latency", "all"])
    parser.add_argument("--out", type=Path, default=Path("quant-results"))
    parser.add_argument("--proxy", type=Path, default=None, help="existing real-weights proxy checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=None, help="timed batch-1 runs per engine (latency; default 10)")
    parser.add_argument("--quick", action="store_true",
                        help="latency on a tiny architecture with few runs: checks the harness, measures nothing")
    parser.add_argument("--crops-per-photo", type=int, default=8)
    parser.add_argument("--synthetic", type=int, default=20)
    parser.add_argument("--variants", type=lambda text: [v for v in text.split(",") if v], default=None,
                        help="fidelity: recipes to export (default: every recipe)")
    parser.add_argument("--effort", default=None, help="fidelity: the export's --effort (default: its default)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="fidelity: measure this existing proxy bundle instead of exporting one")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the held-out crops and synthetic images (another seed: another held-out set)")
    parser.add_argument("--crop-range", type=lambda text: tuple(float(v) for v in text.split(",")),
                        default=(0.2, 0.9),
                        metavar="LO,HI", help="held-out crops take LO-HI of each side (default 0.2,0.9)")
    args = parser.parse_args(argv)
    for option in ("threads", "runs"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"argument --{option}: expected a positive integer, got {getattr(args, option)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what in ("fidelity", "all"):
        result = fidelity(args.out, args.proxy, args.crops_per_photo, args.synthetic, args.seed,
                          variants=args.variants, effort=args.effort, bundle=args.bundle, crop_range=args.crop_range)
        (args.out / "fidelity.json").write_text(json.dumps(result, indent=2))
        (args.out / "fidelity.md").write_text(fidelity_table(result) + "\n")
        print(fidelity_table(result), flush=True)
    if args.what in ("latency", "all"):
        result = latency(args.out, args.threads, args.runs, quick=args.quick,
                         argv=list(sys.argv[1:] if argv is None else argv))
        (args.out / "latency.json").write_text(json.dumps(result, indent=2))
        (args.out / "latency.md").write_text(latency_table(result) + "\n")
        print(latency_table(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
