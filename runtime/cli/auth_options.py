"""``--api-key-file`` and ``--no-auth`` (``serve`` and ``demo``); ``--tls-cert`` and ``--tls-key`` (``serve``)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from ..apikeys import ENV_VAR, ApiKeys, check_private_file, load_api_keys
from ..errors import CredentialError

__all__ = ["add_auth_options", "add_tls_options", "api_keys_from", "describe_keys", "is_loopback", "tls_files_from"]


def add_auth_options(parser: argparse.ArgumentParser, *, applies: str) -> None:
    """The key options; ``applies`` says when the command asks for a key (for ``--help``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--api-key-file", type=Path, metavar="PATH",
        help=f"API keys, one per line ('#' comments), {applies}. The file must be private (chmod 600), as ssh "
             f"requires of a key. Keys also come from the environment variable {ENV_VAR} (comma-separated). "
             "With neither, the first start writes a random key to $XDG_STATE_HOME/deepfake-edge/api-keys "
             "(default ~/.local/state/deepfake-edge/api-keys, mode 0600) and later starts reuse it; the path, "
             "never the key, is printed on stderr",
    )
    group.add_argument("--no-auth", action="store_true",
                       help="no API key at all: anyone who reaches the port can use it (one warning line says so)")


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=Path, metavar="FILE",
                        help="serve HTTPS with this PEM certificate (chain); needs --tls-key")
    parser.add_argument("--tls-key", type=Path, metavar="FILE",
                        help="the certificate's PEM private key (unencrypted; must be private: chmod 600)")
    parser.add_argument("--behind-proxy", action="store_true",
                        help="trust X-Forwarded-For from a reverse proxy on this machine (127.0.0.1, or "
                             "$FORWARDED_ALLOW_IPS), so the failed-key lockout counts real client addresses; "
                             "off by default, so no client can claim another's address")


def api_keys_from(args: argparse.Namespace) -> ApiKeys | None:
    """The keys the options and environment give (generating the default key file if needed); None for --no-auth.

    Raises ``CredentialError`` for a shared, unreadable or malformed key file or variable.
    """
    if args.no_auth:
        return None
    return load_api_keys(args.api_key_file)


def describe_keys(keys: ApiKeys) -> str:
    """One line for stderr: where the keys are (a path or a variable name, never a key)."""
    count = f"{len(keys)} API key{'s' if len(keys) != 1 else ''}"
    if keys.generated:
        return (f"generated a new API key in {keys.path} (mode 0600); clients send it as "
                "'Authorization: Bearer <key>'")
    return f"{count} from {keys.origin}; clients send one as 'Authorization: Bearer <key>'"


def tls_files_from(args: argparse.Namespace) -> tuple[str, str] | None:
    """(certificate, key) paths for uvicorn, or None; checks both exist and that the key is private.

    Raises ``CredentialError`` naming the file, or ``ValueError`` when only one of the two is given.
    """
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together: give both")
    for path, what in ((args.tls_cert, "TLS certificate"), (args.tls_key, "TLS key file")):
        try:
            info = os.stat(path)
        except OSError as exc:
            raise CredentialError(str(path), f"cannot read the {what} ({exc.strerror})") from None
        if what == "TLS key file":
            check_private_file(path, info, what)
    return str(args.tls_cert), str(args.tls_key)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
