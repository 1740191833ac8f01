"""Ship a bundle to cluster nodes that do not share the driver's disk.

The driver packs the files one variant needs into a :class:`BundlePayload`,
which goes into Ray's object store once; each node materialises it once into
its own temp dir, checked file by file against the sha256 taken on the driver
(and the model, once more, against the manifest by ``Detector.load``).
No Ray import here: packing and materialising are plain file work.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..bundle import CONFIG_NAME, PREPROCESSOR_NAME, Bundle, sha256_file
from ..errors import ChecksumMismatchError
from ..manifest import MANIFEST_NAME

__all__ = ["BundlePayload", "materialise", "pack_bundle"]

CACHE_FOLDER = "deepfake-edge-bundles"
_COMPLETE = ".complete"  # written last: a folder without it was interrupted


@dataclass(frozen=True)
class BundlePayload:
    """The files of one bundle variant, in memory, with their sha256."""

    variant: str
    files: dict[str, bytes]
    digests: dict[str, str]

    @property
    def key(self) -> str:
        """One digest over every file: the folder name on each node."""
        joined = "".join(f"{name}\0{digest}\0" for name, digest in sorted(self.digests.items()))
        return hashlib.sha256(joined.encode()).hexdigest()[:32]


def pack_bundle(bundle_dir: str | Path, variant: str | None = None) -> BundlePayload:
    """Read the manifest, config, preprocessor config and ``variant``'s model (verified against the manifest)."""
    bundle = Bundle.open(bundle_dir)
    name, spec = bundle.variant(variant)
    model = bundle.model_path(spec, verify=True)
    names = [MANIFEST_NAME, CONFIG_NAME, PREPROCESSOR_NAME, spec.file]
    files = {n: (model if n == spec.file else bundle.root / n).read_bytes() for n in names}
    return BundlePayload(name, files, {n: hashlib.sha256(data).hexdigest() for n, data in files.items()})


def materialise(payload: BundlePayload, root: str | Path | None = None) -> Path:
    """The bundle folder for ``payload`` under ``root`` (default: this node's temp dir), written once.

    Actors on one node race here: each writes a private folder and renames it
    into place; the loser discards its copy and uses the winner's.
    """
    base = Path(root or tempfile.gettempdir()) / CACHE_FOLDER
    final = base / payload.key
    if (final / _COMPLETE).is_file():
        _verify(final, payload)
        return final
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{payload.key}-", dir=base))
    try:
        for name, data in payload.files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        _verify(staging, payload)
        (staging / _COMPLETE).write_text(payload.variant, encoding="utf-8")
        try:
            os.rename(staging, final)
        except OSError:  # another actor got there first (or a stale, incomplete folder is in the way)
            if not (final / _COMPLETE).is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _verify(final, payload)
    return final


def _verify(folder: Path, payload: BundlePayload) -> None:
    for name, digest in payload.digests.items():
        path = folder / name
        actual = sha256_file(path) if path.is_file() else "missing"
        if actual != digest:
            raise ChecksumMismatchError(f"{path}: sha256 {actual} does not match the driver's {digest}")
