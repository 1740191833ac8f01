"""SOURCE arguments of ``deepfake-edge batch``, resolved on the driver to one list of input paths.

A SOURCE is a local file, folder (searched recursively) or glob; a manifest
(``.txt``/``.lst``: one path per line; ``.parquet``: a ``path`` column); or a
URI that pyarrow's filesystems read (``s3://``, ``gs://``, ``file://``...), a
file or a prefix listed recursively. Paths come out absolute and deduplicated,
in the order given, so the output has exactly one row per input.

A URI may carry credentials (``s3://KEY:SECRET@bucket/x?endpoint_override=...``) or
``${DEEPFAKE_EDGE_*}`` placeholders: a prefix is listed with them filled in, and the
files found keep the prefix's credentials and query as written, placeholders unfilled,
so they are filled again where each file is read. Errors name URIs masked.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..credentials import Source
from ..errors import ImageReadError
from ..paths import expand_paths, image_suffixes

__all__ = ["MANIFEST_SUFFIXES", "is_uri", "resolve_sources"]

TEXT_MANIFESTS = frozenset({".txt", ".lst"})
MANIFEST_SUFFIXES = TEXT_MANIFESTS | {".parquet"}
_GLOB_CHARS = frozenset("*?[")


def is_uri(text: str) -> bool:
    """``scheme://...`` (``s3://bucket/key``, ``file:///x``); a Windows drive letter is not a scheme."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def resolve_sources(sources: Iterable[str]) -> list[str]:
    """Every input path named by ``sources``, absolute, deduplicated, in order.

    A missing local file stays in the list: it becomes an error row, like
    ``predict`` reports it. A missing folder, an empty glob or an unreadable
    manifest raises ``ImageReadError`` naming the SOURCE, before any work starts.
    """
    found: dict[str, None] = {}
    for source in sources:
        found.update(dict.fromkeys(_resolve(source)))
    return list(found)


def _resolve(source: str) -> list[str]:
    if is_uri(source):
        return _resolve_uri(source)
    if _GLOB_CHARS & set(source):
        matches = sorted(glob.glob(source, recursive=True))
        if not matches:
            raise ImageReadError(source, "the glob matches no file")
        return [p for match in matches for p in _resolve_local(Path(match), from_glob=True)]
    return _resolve_local(Path(source), from_glob=False)


def _resolve_local(path: Path, *, from_glob: bool) -> list[str]:
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return _read_manifest(str(path.absolute()), base=str(path.absolute().parent))
    if from_glob and path.is_file() and path.suffix.lower() not in image_suffixes():
        return []  # a glob such as ``photos/*`` also matches notes and sidecar files
    if not path.exists() and path.suffix.lower() not in image_suffixes():
        raise ImageReadError(str(path), "no such file or folder")
    return [str(p.absolute()) for p in expand_paths([path], image_suffixes(), recursive=True)]


def _filesystem(uri: str) -> tuple[Any, str]:  # (pyarrow.fs.FileSystem, path inside it)
    from pyarrow import fs

    location = Source.of(uri)
    url = location.secret_url(ImageReadError)
    try:
        return fs.FileSystem.from_uri(url)
    except (ValueError, OSError) as exc:  # unknown scheme, missing credentials, ...; the message may hold the URI
        raise ImageReadError(location.name, f"pyarrow cannot open this URI ({location.scrub(str(exc))})") from None


def _uri_around(uri: str) -> tuple[str, str]:
    """What a file found under ``uri`` keeps of it: ``scheme://[user:password@]`` and ``?query`` (as written)."""
    scheme, _, rest = uri.partition("://")
    before_query, _, query = rest.partition("?")
    at = before_query.rfind("@")
    return f"{scheme}://{before_query[:at + 1]}", f"?{query}" if query else ""


def _resolve_uri(uri: str) -> list[str]:
    from pyarrow import fs

    filesystem, root = _filesystem(uri)
    head, tail = _uri_around(uri)
    try:
        info = filesystem.get_file_info(root)
        listed = filesystem.get_file_info(fs.FileSelector(root, recursive=True)) if (
            info.type == fs.FileType.Directory) else []
    except OSError as exc:
        location = Source.of(uri)
        raise ImageReadError(location.name, f"cannot list ({location.scrub(str(exc))})") from None
    if info.type == fs.FileType.Directory:
        suffixes = image_suffixes()
        return sorted(
            head + item.path + tail for item in listed
            if item.type == fs.FileType.File and os.path.splitext(item.path)[1].lower() in suffixes
            and not any(part.startswith(".") for part in item.path[len(root):].split("/"))
        )
    if info.type == fs.FileType.File and os.path.splitext(root)[1].lower() in MANIFEST_SUFFIXES:
        return _read_manifest(uri, base=uri.rsplit("/", 1)[0])
    return [uri]  # a missing object becomes an error row, like a missing local file


def _read_manifest(location: str, *, base: str) -> list[str]:
    """The paths a manifest lists; relative ones are taken relative to the manifest's folder."""
    if location.lower().endswith(".parquet"):
        entries = _parquet_paths(location)
    else:
        entries = [line.strip() for line in _read_text(location).splitlines()]
        entries = [line for line in entries if line and not line.startswith("#")]
    if is_uri(base):
        return [p if is_uri(p) else f"{base}/{p.lstrip('/')}" for p in entries]
    return [p if is_uri(p) else os.path.abspath(os.path.join(base, p)) for p in entries]


def _read_text(location: str) -> str:
    try:
        if is_uri(location):
            filesystem, path = _filesystem(location)
            with filesystem.open_input_stream(path) as stream:
                return stream.read().decode("utf-8")
        return Path(location).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        source = Source.of(location)
        raise ImageReadError(source.name, f"cannot read the manifest ({source.scrub(str(exc))})") from None


def _parquet_paths(location: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        if is_uri(location):
            filesystem, path = _filesystem(location)
            table = pq.read_table(path, filesystem=filesystem)
        else:
            table = pq.read_table(location)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        source = Source.of(location)
        raise ImageReadError(source.name, f"cannot read the Parquet manifest ({source.scrub(str(exc))})") from None
    if "path" not in table.column_names:
        raise ImageReadError(Source.of(location).name,
                             f"the Parquet manifest has no 'path' column (columns: {table.column_names})")
    return [str(p) for p in table.column("path").to_pylist() if p]
