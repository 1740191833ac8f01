"""``deepfake-edge demo``: the model card's Gradio page on the ONNX runtime (needs the [demo] extra)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..apikeys import ApiKeys
from .auth_options import add_auth_options, api_keys_from, describe_keys, is_loopback
from .common import EXIT_OK, EXIT_USAGE, add_bundle_argument, add_detector_options, load_detector, port

HELP = "run the model card's Gradio demo on the ONNX runtime (needs [demo])"
DESCRIPTION = """\
Start the model card's Gradio interface (upload an image, see the fake/real
probabilities), powered by the bundle instead of torch. Binds to 127.0.0.1 by
default; nothing is shared publicly. Bound to any other address, the page asks
for a login: any user name, and an API key as the password (the same keys as
'deepfake-edge serve'). For appliances use 'deepfake-edge serve'."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_bundle_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=7860, help="TCP port (default: 7860)")
    add_auth_options(parser, applies="asked for as the login password when --host is not a loopback address")
    add_detector_options(parser)


def demo_keys(args: argparse.Namespace) -> ApiKeys | None:
    """The keys the login checks: none on loopback (only this machine reaches it) or with --no-auth.

    Raises ``CredentialError`` for a refused key file.
    """
    if is_loopback(args.host):
        return None
    keys = api_keys_from(args)
    if keys is None:
        print(f"deepfake-edge demo: authentication is off (--no-auth): anyone who can reach {args.host}:{args.port} "
              "can use the demo", file=sys.stderr)
    else:
        print(f"deepfake-edge demo: {describe_keys(keys)}; on the page: any user name, the key as the password",
              file=sys.stderr)
    return keys


def launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """Gradio's ``launch()`` keywords: the address, and ``auth`` with the keys when bound beyond loopback.

    Raises ``CredentialError`` for a refused key file.
    """
    from ..demo import AUTH_MESSAGE, gradio_auth

    auth = gradio_auth(demo_keys(args))
    return {"server_name": args.host, "server_port": args.port, "share": False, "show_error": True,
            "auth": auth, "auth_message": AUTH_MESSAGE if auth else None}


def run(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("demo")  # ExtraNotInstalledError -> exit 3, before the model is loaded
    from ..demo import build_demo

    try:
        options = launch_options(args)
    except ValueError as exc:  # CredentialError: names the file and the fix, never a key
        print(f"deepfake-edge demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    build_demo(load_detector(args)).launch(**options)
    return EXIT_OK
