"""Files and folders named by the user, expanded to the input files to classify."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from PIL import Image

__all__ = ["expand_paths", "image_suffixes"]


@lru_cache(maxsize=1)
def image_suffixes() -> frozenset[str]:
    """Lower-case file suffixes PIL can open (``.jpg``, ``.png``, ``.webp``, ...)."""
    Image.init()  # registers every plugin's extensions
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def expand_paths(
    paths: Iterable[str | os.PathLike[str]], suffixes: frozenset[str] | None, *, recursive: bool
) -> Iterator[Path]:
    """Files as given (always attempted, so a missing one is reported, not dropped); folders expanded
    to their files with one of ``suffixes``, sorted, hidden ones (``.git``, ``.DS_Store``) skipped.

    ``suffixes=None`` means :func:`image_suffixes`, looked up only when a folder is given: it
    registers every PIL plugin, which costs more than a tenth of a second of start-up.
    """
    for path in map(Path, paths):
        if path.is_dir():
            suffixes = image_suffixes() if suffixes is None else suffixes
            found = path.rglob("*") if recursive else path.iterdir()
            yield from sorted(
                p for p in found
                if p.is_file() and p.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            yield path
