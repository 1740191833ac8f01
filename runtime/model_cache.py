"""A per-user cache that makes a second start cheap without trusting anything it cannot re-check.

Two things are kept, under :func:`cache_dir` (``$DEEPFAKE_EDGE_CACHE``, else
``$XDG_CACHE_HOME/deepfake-edge``, else ``~/.cache/deepfake-edge``):

* **sha256 results** (:func:`file_sha256`): a model file is hashed in full once; the
  result is reused while the file's identity and state are unchanged: device, inode,
  size, mtime *and ctime*. ctime cannot be set from user space: rewriting bytes and
  restoring the mtime still moves it. A result is recorded only when the file was last
  changed at least ``RACY_SECONDS`` before hashing began, so a write landing within
  the same clock tick as the hash cannot hide (git's "racy" rule).
* **compiled models** (:func:`cached_directory`, :func:`storing_directory`): what an
  engine makes of a model at load time, saved once: onnxruntime's optimized graph with
  its weights in a separate aligned file it memory-maps instead of parsing and copying,
  and OpenVINO's compiled blob (its ``CACHE_DIR``). Keyed by the caller (the verified
  source sha256, engine version, this CPU); the sha256 of every file in an entry is
  recorded and checked like any model file's before the entry is used.

Every write is atomic (a temporary file, then ``os.replace``). Any doubt (a missing,
unreadable, malformed or mismatched record, a read-only cache) falls back to the full
path: hashing the file, optimizing the graph. Nothing here can make a damaged file
pass: at worst the cache is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["RACY_SECONDS", "cache_dir", "cached_directory", "compiled_key", "file_sha256", "sha256_file",
           "storing_directory", "write_atomic"]

RACY_SECONDS = 2.0
_VERSION = 1  # of the record layout; a change makes old records unreadable, hence ignored


def cache_dir() -> Path:
    explicit = os.environ.get("DEEPFAKE_EDGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepfake-edge"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The full sha256 of ``path`` (reads every byte)."""
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        while block := fp.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    Readers see the old file or the complete new one, never a partial write.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _identity(info: os.stat_result) -> dict[str, int]:
    return {"dev": info.st_dev, "ino": info.st_ino, "size": info.st_size,
            "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns}


def _record_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return cache_dir() / "sha256" / f"{key}.json"


def _read_record(record: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == _VERSION else None


def file_sha256(path: Path) -> str:
    """sha256 of ``path``, from the cache when the file provably has not changed since it was hashed."""
    info = path.stat()
    record_path = _record_path(path)
    record = _read_record(record_path)
    if record is not None and record.get("path") == str(path.resolve()) and record.get("identity") == _identity(info):
        digest = record.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    started = time.time_ns()
    digest = sha256_file(path)
    after = path.stat()
    # Record only a file that stayed put while it was read and had settled before.
    if _identity(after) == _identity(info) and started - info.st_ctime_ns >= RACY_SECONDS * 1e9:
        data = {"version": _VERSION, "path": str(path.resolve()), "identity": _identity(info), "sha256": digest}
        with contextlib.suppress(OSError):  # a read-only or full cache only costs the next start a full hash
            write_atomic(record_path, lambda tmp: tmp.write_text(json.dumps(data), encoding="utf-8"))
    return digest


# -- compiled models -------------------------------------------------------------------------------
_RECORD = "record.json"


def compiled_key(source_sha256: str, engine: str) -> str:
    """Cache key of an engine's compiled form of a model (``engine``: its name, version and options).

    The compiled graph may hold CPU-specific rewrites, hence the CPU architecture and flags too.
    """
    import platform

    from .variant_choice import cpu_info

    machine = f"{platform.machine()} {' '.join(sorted(cpu_info()[1]))}"
    return hashlib.sha256(f"{source_sha256} {engine} {machine}".encode()).hexdigest()


def _entry(kind: str, key: str) -> Path:
    return cache_dir() / kind / key


def cached_directory(kind: str, key: str) -> Path | None:
    """The directory stored under ``kind``/``key``, if every file recorded in it is intact; else None."""
    directory = _entry(kind, key)
    record = _read_record(directory / _RECORD)
    files = record.get("files") if record is not None and record.get("key") == key else None
    if not isinstance(files, dict) or not files:
        return None
    try:
        present = {p.name for p in directory.iterdir()} - {_RECORD}
        if present != set(files) or any(file_sha256(directory / name) != digest for name, digest in files.items()):
            return None
    except OSError:
        return None
    return directory


@contextlib.contextmanager
def storing_directory(kind: str, key: str) -> Iterator[Path | None]:
    """Yield a fresh directory to write into (None when the cache is not writable); on success,
    record the sha256 of every file written and move the directory into place as ``kind``/``key``.

    A failure inside the block propagates and leaves nothing behind.
    """
    final = _entry(kind, key)
    try:
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=final.parent))
    except OSError:
        yield None
        return
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        files = {p.name: sha256_file(p) for p in work.iterdir() if p.is_file()}
        if files:
            (work / _RECORD).write_text(json.dumps({"version": _VERSION, "key": key, "files": files}),
                                        encoding="utf-8")
            if final.exists():  # a damaged or stale entry makes way
                shutil.rmtree(final)
            os.replace(work, final)
    except OSError:
        pass  # a full or read-only cache, or another process storing the same key: only a lost shortcut
    finally:
        shutil.rmtree(work, ignore_errors=True)
