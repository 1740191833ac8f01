"""What every subcommand shares: exit codes, argument types and the detector options.

An argument type raises ``argparse.ArgumentTypeError``, which argparse turns
into a usage error (exit 2) that names the option and the bad value.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..images import DEFAULT_MAX_PIXELS
from ..preprocess import FAST_DECODE_FACTOR

if TYPE_CHECKING:
    from ..detector import Detector

__all__ = [
    "EXIT_BUNDLE", "EXIT_INPUT_FAILED", "EXIT_INTERRUPTED", "EXIT_MISSING_EXTRA", "EXIT_OK", "EXIT_USAGE",
    "add_bundle_argument", "add_detector_options", "add_fast_decode_option", "count", "load_detector", "names",
    "non_negative_float", "port", "positive_float", "positive_int", "probability",
]

EXIT_OK = 0
EXIT_INPUT_FAILED = 1  # some inputs failed; all others were still reported
EXIT_USAGE = 2
EXIT_MISSING_EXTRA = 3  # the message says which extra to install
EXIT_BUNDLE = 4  # the bundle or model is unusable, or the export/validation failed
EXIT_INTERRUPTED = 130


def count(minimum: int) -> Callable[[str], int]:
    """An argument type for an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


positive_int = count(1)


def port(text: str) -> int:
    value = count(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {value}")
    return value


def _float_in(expected: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    """An argument type for a float that ``ok`` accepts; the message says what was ``expected``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):  # comparisons with nan are false: nan is refused too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


positive_float = _float_in("a positive number", lambda v: 0 < v < math.inf)
non_negative_float = _float_in("a number >= 0", lambda v: 0 <= v < math.inf)
probability = _float_in("a number within [0, 1]", lambda v: 0.0 <= v <= 1.0)


def names(text: str) -> list[str]:
    """A comma-separated list of names, e.g. variants: ``fp32,int8``."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return items


def add_bundle_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE",
                        help="bundle directory written by 'deepfake-edge export'")


def add_detector_options(parser: argparse.ArgumentParser, *, threshold: bool = True, max_pixels: bool = True,
                         threads: bool = True, verify: bool = True) -> None:
    """--variant, [--threads], [--threshold], [--max-pixels], [--no-verify], --fast-decode: how a bundle is loaded."""
    parser.add_argument(
        "--variant", default="auto",
        help="bundle variant, or 'auto' (default): the fastest variant that passed the export's fidelity gate, "
             "has its engine installed and suits this machine (int8-ov with OpenVINO on a CPU with "
             "AVX512-BF16/AMX, fp16 under a GPU provider, otherwise int8); one stderr line says which and why",
    )
    if threads:
        parser.add_argument("--threads", type=positive_int, default=None,
                            help="onnxruntime intra-op threads (default: all cores)")
    if threshold:
        parser.add_argument(
            "--threshold", type=probability, default=None,
            help="decide 'manipulated' when the manipulation score (the bundle's rule: P(positive label), or "
                 "1 - P(real label)) is >= T: the most probable manipulated label wins, otherwise the most "
                 "probable other label (default: the bundle's threshold, else argmax)",
        )
    if max_pixels:
        parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                            help=f"refuse images declaring more pixels (default: {DEFAULT_MAX_PIXELS:,})")
    if verify:
        parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the model file")
    add_fast_decode_option(parser)


def add_fast_decode_option(parser: argparse.ArgumentParser) -> None:
    """--fast-decode (part of :func:`add_detector_options`; alone for commands that load bundles their own way)."""
    parser.add_argument(
        "--fast-decode", action="store_true",
        help=f"decode large JPEGs at 1/2, 1/4 or 1/8 scale, never below {FAST_DECODE_FACTOR}x the model input: "
             "faster and lighter on phone photos, but the model input is no longer bit-exact with transformers' "
             "preprocessing and P(fake) can move slightly (README: 'Fast JPEG decoding'); other formats, "
             "and JPEGs too small to reduce, are decoded exactly",
    )


def load_detector(args: argparse.Namespace) -> Detector:
    """``Detector.load`` with the options of :func:`add_detector_options`."""
    from ..detector import Detector

    detector = Detector.load(args.bundle, args.variant, threads=args.threads, verify=not args.no_verify,
                             threshold=getattr(args, "threshold", None),
                             max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS), fast_decode=args.fast_decode)
    if detector.choice is not None:
        print(f"deepfake-edge: variant {detector.choice.variant} ({detector.choice.reason})", file=sys.stderr)
    return detector
