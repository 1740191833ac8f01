"""The ``deepfake-edge`` command: one entry point, one module per subcommand.

Subcommands are listed here as data; each module provides ``HELP``,
``configure(parser)`` and ``run(args) -> int`` and imports heavy dependencies
only inside ``run``, so ``deepfake-edge predict`` never loads torch.

Exit codes (documented in the README):
    0  success
    1  some inputs failed (all others were still reported)
    2  usage error (bad arguments)
    3  an optional extra is missing (the message says which to install)
    4  the bundle or model is unusable, or the export/validation failed
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import BundleError, DeepfakeEdgeError, ExtraNotInstalledError
from .common import EXIT_BUNDLE, EXIT_INTERRUPTED, EXIT_MISSING_EXTRA

SUBCOMMANDS: dict[str, str] = {
    "predict": "deepfake_edge.cli.predict",
    "export": "deepfake_edge.cli.export",
    "serve": "deepfake_edge.cli.serve",
    "demo": "deepfake_edge.cli.demo",
    "bench": "deepfake_edge.cli.bench",
    "evaluate": "deepfake_edge.cli.evaluate",
    "batch": "deepfake_edge.cli.batch",
    "scan": "deepfake_edge.cli.scan",
}


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from .. import __version__

        parser.exit(message=f"{parser.prog} {__version__}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-edge",
        description=(
            "Export a SigLIP deepfake-image classifier to a quantized ONNX bundle and run it on CPU, without torch."
        ),
        epilog="Run 'deepfake-edge COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args))
    except ExtraNotInstalledError as exc:
        print(f"deepfake-edge {args.command}: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except BundleError as exc:
        print(f"deepfake-edge {args.command}: bundle error: {exc}", file=sys.stderr)
        return EXIT_BUNDLE
    except DeepfakeEdgeError as exc:
        print(f"deepfake-edge {args.command}: {exc}", file=sys.stderr)
        return EXIT_BUNDLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
