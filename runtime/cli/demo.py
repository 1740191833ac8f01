"""``deepfake-edge demo``: the model card's Gradio page on the ONNX runtime (needs the [demo] extra)."""

from __future__ import annotations

import argparse

from .common import EXIT_OK, add_bundle_argument, add_detector_options, load_detector, port

HELP = "run the model card's Gradio demo on the ONNX runtime (needs [demo])"
DESCRIPTION = """\
Start the model card's Gradio interface (upload an image, see the fake/real
probabilities), powered by the bundle instead of torch. Binds to 127.0.0.1 by
default; nothing is shared publicly. For appliances use 'deepfake-edge serve'."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_bundle_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=7860, help="TCP port (default: 7860)")
    add_detector_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("demo")  # ExtraNotInstalledError -> exit 3, before the model is loaded
    from ..demo import build_demo

    detector = load_detector(args)
    build_demo(detector).launch(server_name=args.host, server_port=args.port, share=False, show_error=True)
    return EXIT_OK
