"""``deepfake-edge batch``: classify an archive on Ray Data into a Parquet folder."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import CredentialError, ImageError
from ..extras import require_extra
from .common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_bundle_argument,
    add_detector_options,
    positive_int,
)

HELP = "classify many images on a Ray cluster into a Parquet folder"
DESCRIPTION = """\
Classify every image named by SOURCE on Ray Data (a local Ray instance, or the
cluster at --address) and write one Parquet row per input into --out:
  path, label, scores (label -> probability), error, message, variant, model_sha256
A bad file is a row with error/message (label and scores null); it never stops
the job. The bundle is shipped to the workers through Ray's object store, so
they need no access to BUNDLE.

SOURCE is a folder (searched recursively), a file, a glob ('photos/**/*.jpg'),
a manifest (.txt/.lst: one path per line; .parquet: a 'path' column), or a URI
pyarrow reads (s3://, gs://, file://...). Every worker must be able to read the
input paths; --out is a local folder on this machine. A URI's password and
secret query values are written as *** in 'path' and messages; its
${DEEPFAKE_EDGE_*} placeholders are filled from each worker's environment.

--out must hold no results yet, unless --resume is given: then inputs whose
path is already in --out are skipped, so a killed run continues where it
stopped and every input ends up with exactly one row.
Exit code 1 if any input failed."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_bundle_argument(parser)
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="folders, files, globs, manifests or URIs")
    parser.add_argument("--out", required=True, metavar="DIR", help="Parquet output folder (created if missing)")
    parser.add_argument("--resume", action="store_true", help="skip inputs already written to --out")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join, e.g. 10.0.0.5:6379 or 'auto' (default: start a local one)")
    parser.add_argument("--actors", type=positive_int, default=None,
                        help="model replicas (default: the cluster's CPUs // --cpus-per-actor)")
    parser.add_argument("--cpus-per-actor", type=positive_int, default=1,
                        help="CPUs each actor reserves, used as its onnxruntime intra-op threads (default: 1)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per actor call (default: 16)")
    parser.add_argument("--rows-per-file", type=positive_int, default=10_000,
                        help="rows per Parquet part file; a part is also closed every 60 s (default: 10000)")
    add_detector_options(parser, threads=False, verify=False)


def run(args: argparse.Namespace) -> int:
    require_extra("ray")
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a CLI run
    from ..batch import run_job

    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")  # every input's outcome is in its row
    try:
        summary = run_job(args.bundle, args.sources, args.out, resume=args.resume, address=args.address,
                          variant=args.variant, threshold=args.threshold, actors=args.actors,
                          cpus_per_actor=args.cpus_per_actor, batch_size=args.batch_size,
                          rows_per_file=args.rows_per_file, max_pixels=args.max_pixels, fast_decode=args.fast_decode,
                          log=lambda message: print(f"deepfake-edge batch: {message}", file=sys.stderr))
    except (FileExistsError, ImageError, CredentialError) as exc:  # --out not empty, a SOURCE that names nothing
        print(f"deepfake-edge batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"deepfake-edge batch: {summary.line(args.out)}", file=sys.stderr)
    return EXIT_INPUT_FAILED if summary.errors else EXIT_OK
