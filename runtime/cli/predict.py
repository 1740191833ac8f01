"""``deepfake-edge predict``: classify files and folders, one JSON line per input."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ..detector import Detector
from ..images import DEFAULT_MAX_PIXELS
from ..progress import progress
from ..results import Failure

HELP = "classify images with a bundle (JSON lines on stdout)"
DESCRIPTION = """\
Classify image files and folders with an exported bundle. Prints one JSON line
per input, in input order:
  {"path": ..., "label": "fake", "scores": {"fake": 0.97, "real": 0.03}}
  {"path": ..., "error": "ImageDecodeError", "message": ...}
A bad input never stops the others; the exit code is 1 if any input failed."""

PROGRESS_MIN_INPUTS = 8


def _positive_int(text: str) -> int:
    # argparse turns this ArgumentTypeError into a usage error: exit code 2
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory written by 'deepfake-edge export'")
    parser.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders of folder PATHs")
    parser.add_argument("--variant", help="bundle variant (default: the manifest's default, usually int8)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per model call (default: 8)")
    parser.add_argument(
        "--threshold", type=_probability, default=None,
        help="label 'fake' when P(fake) >= T, otherwise argmax (default: the bundle's threshold, else argmax)",
    )
    parser.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images declaring more pixels (default: {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the model file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _image_suffixes() -> set[str]:
    Image.init()  # registers every plugin's extensions
    return {ext.lower() for ext in Image.registered_extensions()}


def expand_paths(paths: list[Path], *, recursive: bool) -> Iterator[Path]:
    """Files as given (always attempted); folders expanded to their image files, sorted."""
    suffixes = _image_suffixes()
    for path in paths:
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            yield from sorted(p for p in found if p.is_file() and p.suffix.lower() in suffixes)
        else:
            yield path  # a missing file becomes an ImageReadError line, not a crash


def run(args: argparse.Namespace) -> int:
    # Every input's outcome is printed on stdout; PIL's warnings about odd but
    # readable files (bad EXIF, short TIFF tags, images over PIL's own pixel
    # advisory) would only be noise on stderr. This process is ours to configure.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    detector = Detector.load(args.bundle, args.variant, threads=args.threads, verify=not args.no_verify,
                             threshold=args.threshold, max_pixels=args.max_pixels)
    files = [str(p) for p in expand_paths(args.paths, recursive=args.recursive)]
    if not files:
        print("deepfake-edge predict: no image files found", file=sys.stderr)
        return 1
    failed = 0
    results = detector.iter_predict(files, batch_size=args.batch_size)
    show = not args.no_progress and len(files) >= PROGRESS_MIN_INPUTS
    for result in progress(results, total=len(files), desc="classifying", enabled=show):
        failed += isinstance(result, Failure)
        print(json.dumps(result.to_dict()), flush=True)
    if failed:
        print(f"deepfake-edge predict: {failed} of {len(files)} inputs failed", file=sys.stderr)
        return 1
    return 0
