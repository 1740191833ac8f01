"""API keys for ``deepfake-edge serve`` and the Gradio demo: where they come from, and checking one.

Keys come from a key file (one per line, ``#`` comments), from the environment
variable ``DEEPFAKE_EDGE_API_KEY`` (one key, or several separated by commas), or
both. With neither, :func:`load_api_keys` generates a key on first use and keeps
it in a private file in the user's state directory, so the service is locked
with no setup at all (TorchServe does the same with its token file).

A key file readable or writable by group or others is refused, as ssh refuses
such a private key. Keys never appear in messages, ``repr`` or logs; only the
file's path does.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .credentials import refuse_shared
from .errors import CredentialError

__all__ = [
    "ENV_VAR", "MIN_KEY_LENGTH", "ApiKeys", "check_private_file", "default_key_file", "generate_key",
    "load_api_keys", "read_key_file",
]

ENV_VAR = "DEEPFAKE_EDGE_API_KEY"
MIN_KEY_LENGTH = 16
# RFC 6750's b64token: the characters a bearer token may hold, so every key can be sent as one.
_KEY_SYNTAX = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_KEY_BYTES = 32  # 256 bits from the OS's CSPRNG
_MAX_FILE_BYTES = 1 << 20
_FILE_HEADER = (
    "# deepfake-edge API keys: one per line; lines starting with # are comments.\n"
    "# Send one as 'Authorization: Bearer <key>'. Add a line to add a key, delete one to revoke it;\n"
    "# restart the service to apply. Keep this file private (mode 0600).\n"
)


def generate_key() -> str:
    """A new random key: 256 bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(_KEY_BYTES)


def default_key_file(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/deepfake-edge/api-keys``, or ``~/.local/state/deepfake-edge/api-keys``."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or ""
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"  # the spec ignores relative ones
    return base / "deepfake-edge" / "api-keys"


def check_private_file(path: str | os.PathLike[str], info: os.stat_result, what: str) -> None:
    """Refuse ``path`` (described as ``what``) unless it is a regular file only its owner can access."""
    if not stat.S_ISREG(info.st_mode):
        raise CredentialError(str(path), f"the {what} is not a regular file")
    refuse_shared(path, info, what)


def _parse_keys(candidates: Iterable[str], origin: str) -> list[str]:
    keys = []
    for number, key in enumerate(candidates, 1):
        # The message says which entry is bad and why, never what it holds.
        if len(key) < MIN_KEY_LENGTH:
            raise CredentialError(origin, f"key {number} is shorter than {MIN_KEY_LENGTH} characters")
        if not _KEY_SYNTAX.fullmatch(key):
            raise CredentialError(origin, f"key {number} has a character a bearer token cannot carry "
                                          "(allowed: letters, digits and - . _ ~ + / then trailing =)")
        keys.append(key)
    return keys


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """The keys in ``path``: one per line, blank lines and ``#`` comments skipped.

    Raises ``CredentialError`` for a missing, unreadable, shared (group/other
    access), non-regular or empty file, or a malformed key.
    """
    location = Path(path)
    try:
        # O_NONBLOCK: a FIFO put in the file's place is refused by the check, never waited on.
        fd = os.open(location, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CredentialError(str(location), f"cannot read the API key file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        check_private_file(location, os.fstat(file.fileno()), "API key file")  # the file read, not its name
        try:
            data = file.read(_MAX_FILE_BYTES + 1)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialError(str(location), f"cannot read the API key file ({exc})") from None
    if len(data) > _MAX_FILE_BYTES:  # never cut a key in two and accept the half
        raise CredentialError(str(location), f"the API key file is larger than {_MAX_FILE_BYTES:,} bytes")
    lines = (line.strip() for line in text.splitlines())
    keys = _parse_keys((line for line in lines if line and not line.startswith("#")), str(location))
    if not keys:
        raise CredentialError(str(location), "the API key file holds no key (one key per line)")
    return keys


def _create_key_file(path: Path) -> bool:
    """Write a new key to ``path`` with mode 0600; False if another process created it first."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(_FILE_HEADER + generate_key() + "\n")
    return True


@dataclass(frozen=True)
class ApiKeys:
    """The keys a service accepts, and where they came from (for messages; never the keys).

    ``repr`` and ``str`` show the origin only.
    """

    origin: str
    _keys: tuple[bytes, ...] = field(repr=False)
    #: set when the keys live in a file: the path users look in
    path: Path | None = None
    #: True when :func:`load_api_keys` generated the key file just now
    generated: bool = False

    @classmethod
    def of(cls, keys: Iterable[str], origin: str = "keys given in code") -> ApiKeys:
        checked = _parse_keys(keys, origin)
        if not checked:
            raise CredentialError(origin, "no API key given")
        return cls(origin, tuple(key.encode("ascii") for key in checked))

    def __len__(self) -> int:
        return len(self._keys)

    def matches(self, token: str | None) -> bool:
        """True iff ``token`` is one of the keys.

        Every key is compared, each in constant time (``hmac.compare_digest``),
        so the answer's timing does not say which key or how many characters matched.
        """
        if token is None:
            return False
        presented = token.encode("utf-8", "surrogateescape")
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(key, presented)
        return found


def load_api_keys(key_file: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys from ``key_file`` and the ``DEEPFAKE_EDGE_API_KEY`` variable.

    With neither, the key file of :func:`default_key_file`: created with a new
    random key (mode 0600) on first use, read on later uses. ``generated`` says
    which happened, so the caller can tell the user where the key is.
    """
    env = os.environ if environ is None else environ
    keys: list[str] = []
    origins: list[str] = []
    if key_file is not None:
        keys += read_key_file(key_file)
        origins.append(f"file {key_file}")
    if env.get(ENV_VAR):
        keys += _parse_keys((part.strip() for part in env[ENV_VAR].split(",") if part.strip()),
                            f"the environment variable {ENV_VAR}")
        origins.append(f"environment variable {ENV_VAR}")
    if keys:
        path = Path(key_file) if key_file is not None else None
        return ApiKeys(" and ".join(origins), tuple(key.encode("ascii") for key in keys), path)
    try:
        default = default_key_file(env)
    except (RuntimeError, KeyError):  # no home directory to be found (a bare container user)
        raise CredentialError("API keys", f"no home directory for the key file; give one with --api-key-file "
                                          f"or set {ENV_VAR}") from None
    try:
        generated = _create_key_file(default)
    except OSError as exc:
        raise CredentialError(str(default), f"cannot create the API key file ({exc.strerror}); "
                                            f"give one with --api-key-file or set {ENV_VAR}") from None
    keys = read_key_file(default)
    return ApiKeys(f"file {default}", tuple(key.encode("ascii") for key in keys), default, generated)
