"""Sources that carry credentials: the URL to open kept apart from the name to show.

A camera URL such as ``rtsp://admin:PASSWORD@cam/live`` must never reach stdout, MQTT,
logs or error messages. A :class:`Source` holds it privately: ``name`` (the URL with the
password and secret-looking query values replaced by ``***``) is what results, events and
errors carry, and :meth:`Source.secret_url` is the only way to the URL, called only by
the code that opens the source.

``${DEEPFAKE_EDGE_...}`` placeholders in a source URL are filled from the environment when it
is opened (never before), so a password need not be on the command line, where ``ps``
shows it to every local user. Only names with that prefix are filled, as Frigate fills
only ``FRIGATE_*``, so a URL cannot read out any other variable.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from .errors import CredentialError

__all__ = [
    "MASK", "PLACEHOLDER_PREFIX", "SECRET_PARAMETERS", "Source", "has_scheme", "mask_url", "placeholders",
    "read_private_lines", "read_private_text",
]

MASK = "***"
PLACEHOLDER_PREFIX = "DEEPFAKE_EDGE_"
#: Query parameters whose values are masked: a name that is one of these, or ends with one
#: (``access_token``, ``X-Amz-Signature``, ``apiKey``), trailing digits ignored.
SECRET_PARAMETERS = ("password", "passwd", "pass", "pwd", "token", "key", "auth", "authorization", "sig",
                     "signature", "secret", "credential", "credentials")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# name=value after ?, &, ; or # (a fragment can carry an OAuth token too)
_PARAMETER = re.compile(r"(?<=[?&;#])([^=&;#?/]*)=([^&;#]*)")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def has_scheme(text: str) -> bool:
    """``scheme://...``: the only sources that can hold credentials or placeholders."""
    return _SCHEME.match(text) is not None


def _secret_parameter(name: str) -> bool:
    plain = re.sub(r"[^a-z0-9]", "", unquote(name).lower()).rstrip("0123456789")
    return bool(plain) and plain.endswith(SECRET_PARAMETERS)


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """(user info, what follows its ``@``) of a URL after ``scheme://``.

    The user info ends at the *last* ``@``: a password with an unescaped ``@``, ``/``, ``?``
    or ``#`` is then still masked whole. A URL with ``@`` further on (an e-mail address in the
    query) is masked up to that ``@``: too much is shown as ``***``, never too little.
    """
    at = rest.rfind("@")
    return (None, rest) if at < 0 else (rest[:at], rest[at + 1:])


def mask_url(text: str) -> str:
    """``text`` with its password and secret-looking query values replaced by ``***``.

    ``rtsp://admin:pw@cam:554/live?token=abc&ch=1`` -> ``rtsp://admin:***@cam:554/live?token=***&ch=1``.
    Anything without ``scheme://`` (a file, a device) is returned as it is.
    """
    match = _SCHEME.match(text)
    if match is None:
        return text
    head, rest = text[:match.end()], text[match.end():]
    userinfo, after = _split_userinfo(rest)
    if userinfo is not None:
        user, sep, password = userinfo.partition(":")
        if sep and password:
            rest = f"{user}:{MASK}@{after}"

    def mask(parameter: re.Match[str]) -> str:
        name = parameter.group(1)
        return f"{name}={MASK}" if _secret_parameter(name) and parameter.group(2) else parameter.group(0)

    return head + _PARAMETER.sub(mask, rest)


def _secret_values(url: str) -> list[str]:
    """The password and secret query values in ``url``, as written and percent-decoded."""
    match = _SCHEME.match(url)
    if match is None:
        return []
    rest = url[match.end():]
    values: list[str] = []
    userinfo, _ = _split_userinfo(rest)
    if userinfo is not None and ":" in userinfo:
        values.append(userinfo.partition(":")[2])
    values += [m.group(2) for m in _PARAMETER.finditer(rest) if _secret_parameter(m.group(1))]
    return [v for value in values if value for v in {value, unquote(value)}]


def placeholders(text: str) -> list[str]:
    """The ``${NAME}`` placeholders in ``text``; a name without the ``DEEPFAKE_EDGE_`` prefix is refused."""
    names = _PLACEHOLDER.findall(text)
    for name in names:
        if not name.startswith(PLACEHOLDER_PREFIX) or not re.fullmatch(r"[A-Z0-9_]+", name):
            raise CredentialError(mask_url(text),
                                  f"${{{name}}} is not a DEEPFAKE_EDGE_* placeholder: only environment variables "
                                  f"named {PLACEHOLDER_PREFIX}<UPPER_CASE> are filled in")
    return names


@dataclass(frozen=True)
class Source:
    """A video source or input location: ``name`` to show, the URL to open kept private.

    Build one with :meth:`of`. ``str(source)`` and ``repr(source)`` show only ``name``.
    """

    name: str
    _given: str = field(repr=False)

    @classmethod
    def of(cls, given: str | Source) -> Source:
        """A source as given by a user (a path, device or URL, possibly with placeholders)."""
        if isinstance(given, Source):
            return given
        if has_scheme(given):
            placeholders(given)
        return cls(mask_url(given), given)

    def __str__(self) -> str:
        return self.name

    @property
    def has_secrets(self) -> bool:
        """True when what is opened differs from what is shown (a password, token or placeholder)."""
        return self.name != self._given or (has_scheme(self._given) and bool(_PLACEHOLDER.search(self._given)))

    def secret_url(self, error: Callable[[str, str], Exception] = CredentialError) -> str:
        """The location to open, placeholders filled from the environment. Never print it.

        A placeholder in the user info (``user:${...}@``) is filled percent-encoded, so a password
        may hold ``@``, ``:``, ``/`` or ``#`` (FFmpeg and pyarrow decode it); elsewhere the value is
        used as it is. An unset placeholder raises ``error(name, message)`` (default: ``CredentialError``),
        naming the variable, never a value. A local path or device is returned as it is.
        """
        if not has_scheme(self._given):
            return self._given

        def fill(match: re.Match[str], *, encode: bool) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                raise error(self.name, f"the environment variable {match.group(1)} is not set "
                                       f"(it fills the ${{{match.group(1)}}} placeholder)")
            return quote(value, safe="") if encode else value

        scheme = _SCHEME.match(self._given)
        assert scheme is not None
        userinfo, after = _split_userinfo(self._given[scheme.end():])
        filled_after = _PLACEHOLDER.sub(lambda m: fill(m, encode=False), after)
        if userinfo is None:
            return scheme.group(0) + filled_after
        return f"{scheme.group(0)}{_PLACEHOLDER.sub(lambda m: fill(m, encode=True), userinfo)}@{filled_after}"

    def cause(self, exc: BaseException) -> BaseException | None:
        """What to chain an error to (``raise ours from source.cause(exc)``): nothing when this source
        has secrets, since a library's exception (FFmpeg's, pyarrow's) may hold the URL."""
        return None if self.has_secrets else exc

    def scrub(self, text: str) -> str:
        """``text`` (an FFmpeg or pyarrow message, which may repeat the URL) with every secret of
        this source replaced: the URL by ``name``, passwords, tokens and filled-in values by ``***``."""
        if not self.has_secrets:
            return text
        given = [self._given]
        values = [os.environ.get(name) or "" for name in _PLACEHOLDER.findall(self._given)]
        try:
            filled = self.secret_url()
            given.insert(0, filled)
            values += _secret_values(filled)
        except CredentialError:
            pass
        values += _secret_values(self._given)
        for url in given:
            text = text.replace(url, self.name)
        for value in sorted({v for v in values if v}, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


def refuse_shared(path: str | os.PathLike[str], info: os.stat_result, what: str) -> None:
    """Refuse ``path`` (its ``stat``; ``what`` names it) when group or others may access it, as ssh
    refuses such a key: the message names the file, its mode and the ``chmod`` that fixes it."""
    if info.st_mode & 0o077:
        raise CredentialError(str(path), f"the {what} is accessible by group or others (mode "
                                         f"{stat.S_IMODE(info.st_mode):04o}); refused, as ssh refuses such a key. "
                                         f"Fix it with: chmod 600 {path}")


def read_private_text(path: str | os.PathLike[str], what: str) -> str:
    """The text of a file holding secrets (``what`` says which, for messages).

    A regular file is refused, as ssh refuses a private key, when group or others may read or
    write it: the message names the file, its mode and the ``chmod`` that fixes it. A pipe
    (``--mqtt-password-file <(pass show mqtt)``) is read as it is.
    """
    location = Path(path)
    try:
        info = location.stat()
        if stat.S_ISREG(info.st_mode):
            refuse_shared(location, info, what)
        return location.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(str(location), f"cannot read the {what} ({getattr(exc, 'strerror', None) or exc})"
                              ) from None


def read_private_lines(path: str | os.PathLike[str], what: str) -> list[str]:
    """The non-empty lines of a private file (see :func:`read_private_text`), without ``#`` comment lines."""
    lines = (line.strip() for line in read_private_text(path, what).splitlines())
    return [line for line in lines if line and not line.startswith("#")]
