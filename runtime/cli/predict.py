"""``deepfake-edge predict``: classify files and folders, one JSON line per input."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from PIL import Image

from ..evidence import evidence_fields, save_overlay
from ..paths import expand_paths
from ..progress import progress
from ..results import Failure, Prediction
from .common import EXIT_INPUT_FAILED, EXIT_OK, add_bundle_argument, add_detector_options, load_detector, positive_int

HELP = "classify images with a bundle (JSON lines on stdout)"
DESCRIPTION = """\
Classify image files and folders with an exported bundle. Prints one JSON line
per input, in input order:
  {"path": ..., "label": "fake", "scores": {"fake": 0.97, "real": 0.03}, "score": 0.97, "variant": "int8"}
  {"path": ..., "error": "ImageDecodeError", "message": ...}
"score" is the manipulation score, by the rule the bundle's manifest records:
P(positive label), or 1 - P(real label) (see docs/models.md); bundles exported
without a rule have none.
A bad input never stops the others; the exit code is 1 if any input failed.
With --evidence DIR each line also gets "evidence" (the overlay picture written
to DIR/<name>.evidence.png) and "hotspots" (the cells leaning most toward the
positive label, as boxes in the original image's pixels, with their margins)."""

PROGRESS_MIN_INPUTS = 8


def configure(parser: argparse.ArgumentParser) -> None:
    add_bundle_argument(parser)
    parser.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders of folder PATHs")
    add_detector_options(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per model call (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--evidence", type=Path, metavar="DIR",
                        help="also write each image's evidence map over it to DIR/<name>.evidence.png and add "
                             "'evidence' and 'hotspots' to its JSON line (bundles exported with patch_logits)")


def run(args: argparse.Namespace) -> int:
    # Every input's outcome is printed on stdout; PIL's warnings about odd but
    # readable files (bad EXIF, short TIFF tags, images over PIL's own pixel
    # advisory) would only be noise on stderr. This process is ours to configure.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    detector = load_detector(args)
    files = [str(p) for p in expand_paths(args.paths, None, recursive=args.recursive)]
    if not files:
        print("deepfake-edge predict: no image files found", file=sys.stderr)
        return EXIT_INPUT_FAILED
    failed = 0
    positive = detector.require_evidence() if args.evidence else "fake"  # an old bundle fails before any input
    results = detector.iter_predict(files, batch_size=args.batch_size, evidence=args.evidence is not None)
    show = not args.no_progress and len(files) >= PROGRESS_MIN_INPUTS
    for result in progress(results, total=len(files), desc="classifying", enabled=show):
        failed += isinstance(result, Failure)
        line = (result.to_dict() if isinstance(result, Failure)
                else {**result.to_dict(), "variant": detector.variant_name})
        if args.evidence is not None and not isinstance(result, Failure):
            line.update(_evidence(result, args.evidence, positive))
        print(json.dumps(line), flush=True)
    if failed:
        print(f"deepfake-edge predict: {failed} of {len(files)} inputs failed", file=sys.stderr)
        return EXIT_INPUT_FAILED
    return EXIT_OK


def _evidence(result: Prediction, directory: Path, positive: str) -> dict[str, object]:
    """The overlay written beside the others, and the JSON fields that point to it."""
    with Image.open(result.source) as image:
        path = save_overlay(result, image, directory, Path(result.source).stem, positive_label=positive)
    return {"evidence": str(path), **evidence_fields(result)}
