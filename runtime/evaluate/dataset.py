"""Find the images of a labelled folder: one sub-folder per label name.

::

    DATA_DIR/
      fake/   *.jpg, *.png, ... (nested folders are searched too)
      real/   ...

Folder names are matched to the bundle's labels (``config.json`` ``id2label``)
exactly, or case-insensitively when that is unambiguous (``Fake/`` is common in
published datasets). A sub-folder that matches no label is an error rather than
being skipped, because silently dropping a class would change every figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeepfakeEdgeError
from ..paths import image_suffixes

__all__ = ["DatasetError", "LabelledDataset", "LabelledImage", "scan_labelled_folder"]


class DatasetError(DeepfakeEdgeError, ValueError):
    """The evaluation folder is missing, empty, or has sub-folders that match no label."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str


@dataclass(frozen=True)
class LabelledDataset:
    """The images to evaluate, sorted by label folder then path.

    ``folders`` maps each label that has a folder to it; ``ignored`` lists files
    that were not attempted (no image suffix, or lying directly in the root).
    """

    root: Path
    images: tuple[LabelledImage, ...]
    folders: dict[str, Path]
    ignored: tuple[Path, ...]

    def counts(self) -> dict[str, int]:
        """Images per label, for labels that have a folder."""
        counts = dict.fromkeys(self.folders, 0)
        for item in self.images:
            counts[item.label] += 1
        return counts


def _hidden(path: Path, root: Path) -> bool:
    # .DS_Store, .ipynb_checkpoints/, .git/ ... are never data.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _match_folders(root: Path, folders: list[Path], labels: Sequence[str]) -> dict[str, Path]:
    by_lower: dict[str, list[str]] = {}
    for label in labels:
        by_lower.setdefault(label.lower(), []).append(label)
    matched: dict[str, Path] = {}
    unmatched: list[str] = []
    for folder in folders:
        if folder.name in labels:
            label = folder.name
        elif len(by_lower.get(folder.name.lower(), [])) == 1:
            label = by_lower[folder.name.lower()][0]
        else:
            unmatched.append(folder.name)
            continue
        if label in matched:
            raise DatasetError(
                f"{root}: folders {matched[label].name!r} and {folder.name!r} both match label {label!r}; "
                "keep one folder per label"
            )
        matched[label] = folder
    expected = ", ".join(repr(label) for label in labels)
    if unmatched:
        names = ", ".join(repr(name) for name in unmatched)
        raise DatasetError(
            f"{root}: sub-folder(s) {names} match no label of the bundle; expected one sub-folder per label, "
            f"named {expected} (case-insensitive); move or rename the others"
        )
    if not matched:
        raise DatasetError(f"{root}: no label sub-folders; expected one sub-folder per label, named {expected}")
    return matched


def scan_labelled_folder(root: str | Path, labels: Sequence[str]) -> LabelledDataset:
    """List the image files under ``root``'s label sub-folders (recursively, sorted).

    Files are chosen by suffix only; decoding happens later, so an unreadable
    file is reported by the evaluation instead of stopping the scan.
    Raises :class:`DatasetError` for a missing root, unmatched folders or no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; expected a folder with one sub-folder per label")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    matched = _match_folders(root, [p for p in entries if p.is_dir()], labels)
    folders = {label: matched[label] for label in labels if label in matched}  # in the model's label order
    ignored = [p for p in entries if not p.is_dir()]
    suffixes = image_suffixes()
    images: list[LabelledImage] = []
    for label, folder in folders.items():
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder)):
            if path.suffix.lower() in suffixes:
                images.append(LabelledImage(path, label))
            else:
                ignored.append(path)
    if not images:
        raise DatasetError(f"{root}: the label folders {[p.name for p in folders.values()]} hold no image files")
    return LabelledDataset(root=root, images=tuple(images), folders=folders, ignored=tuple(ignored))
