"""``deepfake-edge demo``: the model card's Gradio page on the ONNX runtime (needs the [demo] extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the model card's Gradio demo on the ONNX runtime (needs [demo])"
DESCRIPTION = """\
Start the model card's Gradio interface (upload an image, see the fake/real
probabilities), powered by the bundle instead of torch. Binds to 127.0.0.1 by
default; nothing is shared publicly. For appliances use 'deepfake-edge serve'."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory written by 'deepfake-edge export'")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="TCP port (default: 7860)")
    parser.add_argument("--variant", help="bundle variant (default: the manifest's default, usually int8)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the model file")


def run(args: argparse.Namespace) -> int:
    from ..demo import build_demo, import_gradio

    import_gradio()  # ExtraNotInstalledError -> exit 3, before the model is loaded
    from ..detector import Detector

    detector = Detector.load(args.bundle, args.variant, threads=args.threads, verify=not args.no_verify)
    build_demo(detector).launch(server_name=args.host, server_port=args.port, share=False, show_error=True)
    return 0
