"""``deepfake-edge evaluate``: classification report, variant agreement and threshold calibration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_bundle_argument,
    add_fast_decode_option,
    count,
    names,
    positive_int,
    probability,
)

if TYPE_CHECKING:
    from ..evaluate import Evaluation

HELP = "classification report, variant agreement and threshold calibration on labelled images"
DESCRIPTION = """\
Evaluate every variant of a bundle on a labelled folder: one sub-folder per
label name (DATA_DIR/fake/, DATA_DIR/real/, ...; nested folders are searched).
Each image is decoded once and every variant gets the same input tensor.

For each variant: the classification report (the model card's layout), the
confusion matrix, ROC AUC of the manipulation score against the rest, and the
threshold on that score with the highest recall whose false positive rate
(share of authentic images scoring >= threshold) is <= --target-fpr. The score
is the bundle's rule (manifest decision): P(positive label), e.g. P(fake), or
1 - P(real label) for detectors with several manipulated labels.
Across variants: label agreement with fp32, max/mean |d score|, and the
images on which they disagree.

Writes OUT/report.json (all figures and every image's scores) and OUT/roc.png
(needs matplotlib: pip install 'deepfake-edge[evaluate]'). --write-threshold
stores the chosen threshold in the bundle's manifest, so 'predict' and 'serve'
label an image fake iff P(fake) >= threshold from then on.

Exit codes: 0 ok; 1 some images were unreadable (listed, the rest evaluated)
or no threshold could be written; 2 bad arguments or data folder; 4 bundle unusable."""

DEFAULT_OUT = Path("evaluation")


def configure(parser: argparse.ArgumentParser) -> None:
    from ..images import DEFAULT_MAX_PIXELS

    add_bundle_argument(parser)
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="folder with one sub-folder per label")
    parser.add_argument("--variants", type=names, default=None, metavar="V1,V2",
                        help="variants to evaluate, e.g. fp32,int8 (default: all; fp32 is the reference)")
    parser.add_argument("--target-fpr", type=probability, default=0.01, metavar="F",
                        help="largest acceptable share of non-fake images flagged fake (default: 0.01)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for report.json and roc.png (default: ./{DEFAULT_OUT})")
    parser.add_argument("--write-threshold", action="store_true",
                        help="store the chosen threshold in BUNDLE/manifest.json (predict and serve then use it)")
    parser.add_argument("--threshold-variant", metavar="NAME",
                        help="with --write-threshold: the variant whose scores choose it "
                             "(default: the bundle's default variant)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per model call (default: 8)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images declaring more pixels (default: {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--show", type=count(0), default=20, metavar="N",
                        help="list at most N images per listing on the terminal, -1 for all (default: 20)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw roc.png")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the model files")
    add_fast_decode_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--evidence", type=Path, metavar="DIR",
                        help="write the evidence maps of the false positives and false negatives of the threshold "
                             "variant (--threshold-variant, else the default) to DIR/false_positives/ and "
                             "DIR/false_negatives/, listed in DIR/index.json (bundles exported with patch_logits)")


def _note(message: str) -> None:
    print(f"deepfake-edge evaluate: {message}", file=sys.stderr, flush=True)


def _threshold_variant(ev: Evaluation, requested: str | None) -> str:
    if requested:
        return requested
    # The default variant is what predict/serve run, so its scores should set their threshold.
    return ev.default_variant if ev.default_variant in ev.variants else ev.reference


def _write_threshold(ev: Evaluation, variant: str) -> dict[str, Any] | None:
    from .. import __version__
    from ..evaluate import write_threshold

    point = ev.variants[variant].operating_point
    if point is None:
        _note(f"no threshold written: {variant} has no threshold meeting FPR <= {ev.target_fpr:g} on this data")
        return None
    chosen = {
        "method": "highest recall with FPR <= target_fpr on labelled images",
        "target_fpr": ev.target_fpr,
        "achieved_fpr": point.fpr,
        "recall": point.recall,
        "false_positives": point.false_positives,
        "negatives": point.negatives,
        "true_positives": point.true_positives,
        "positives": point.positives,
        "variant": variant,
        "data_dir": str(ev.dataset.root.resolve()),
        "images": int(ev.scored.true.size),
        "unreadable": len(ev.scored.failures),
        "previous_threshold": ev.decision_threshold,
        "chosen_at": ev.created,
        "tool": f"deepfake-edge {__version__} evaluate",
    }
    try:
        write_threshold(ev.bundle_dir, point.threshold, chosen)
    except OSError as exc:
        _note(f"no threshold written: cannot replace {ev.bundle_dir / 'manifest.json'} ({exc})")
        return None
    _note(f"wrote threshold {ev.score_text} >= {point.threshold!r} ({variant}) into "
          f"{ev.bundle_dir / 'manifest.json'}; predict and serve use it from now on (override with --threshold)")
    return {"threshold": point.threshold, **chosen}


def _write_evidence(ev: Evaluation, args: argparse.Namespace) -> None:
    from ..evaluate.overlays import INDEX_NAME, write_error_overlays

    variant = _threshold_variant(ev, args.threshold_variant)
    entries = write_error_overlays(ev, variant, args.evidence, threads=args.threads, verify=not args.no_verify)
    _note(f"wrote the evidence maps of {len(entries)} false positives and negatives of {variant} "
          f"({args.evidence / INDEX_NAME})")


def _check_threshold_request(args: argparse.Namespace) -> str | None:
    """Why --write-threshold/--threshold-variant cannot work on this bundle, found before any image is scored."""
    from ..bundle import Bundle
    from ..errors import UnsupportedBundleError

    bundle = Bundle.open(args.bundle)
    if args.evidence is not None and bundle.manifest.decision.positive_label not in bundle.labels:
        return f"--evidence: the bundle's positive label is not one of its labels {bundle.labels}"
    if args.threshold_variant:
        evaluated = args.variants or list(bundle.manifest.variants)
        if args.threshold_variant not in evaluated:
            return f"--threshold-variant {args.threshold_variant!r} is not among the evaluated variants {evaluated}"
    if args.write_threshold:
        try:
            bundle.require_rule("--write-threshold")
        except UnsupportedBundleError as exc:
            return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    from ..errors import ExtraNotInstalledError
    from ..evaluate import PLOT_NAME, REPORT_NAME, DatasetError, evaluate_bundle, format_text, plot_roc, write_json

    if args.batch_size < 1:
        _note("--batch-size must be >= 1")
        return EXIT_USAGE
    problem = _check_threshold_request(args)
    if problem:
        _note(problem)
        return EXIT_USAGE
    try:
        ev = evaluate_bundle(
            args.bundle, args.data_dir, variants=args.variants, target_fpr=args.target_fpr,
            batch_size=args.batch_size, threads=args.threads, verify=not args.no_verify,
            max_pixels=args.max_pixels, fast_decode=args.fast_decode, show_progress=not args.no_progress,
        )
    except DatasetError as exc:
        _note(str(exc))
        return EXIT_USAGE
    print(format_text(ev, limit=args.show), end="", flush=True)

    written = None
    if args.write_threshold:
        written = _write_threshold(ev, _threshold_variant(ev, args.threshold_variant))

    if args.evidence is not None:
        _write_evidence(ev, args)

    report = write_json(ev, args.out / REPORT_NAME, threshold_written=written)
    _note(f"wrote {report}")
    if not args.no_plot:
        try:
            _note(f"wrote {plot_roc(ev, args.out / PLOT_NAME)}")
        except (ExtraNotInstalledError, ValueError) as exc:  # no matplotlib, or no curve to draw
            _note(f"{PLOT_NAME} skipped: {exc}")
    if ev.scored.failures:
        _note(f"{len(ev.scored.failures)} of {len(ev.dataset.images)} images were unreadable (listed above)")
    failed = bool(ev.scored.failures) or (args.write_threshold and written is None)
    return EXIT_INPUT_FAILED if failed else EXIT_OK
