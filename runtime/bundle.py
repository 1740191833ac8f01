"""Open a bundle directory and check it is whole and self-consistent.

Every problem is found here, at load time, and reported with the file it is in;
inference never discovers a broken bundle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import (
    BundleError,
    BundleFileMissingError,
    BundleMismatchError,
    ChecksumMismatchError,
    UnsupportedBundleError,
)
from .labels import read_labels
from .manifest import MANIFEST_NAME, Manifest, Variant
from .preprocess import PreprocessConfig

__all__ = ["CONFIG_NAME", "PREPROCESSOR_NAME", "Bundle", "sha256_file"]

CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        while block := fp.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """The parsed, verified contents of a bundle directory (no session yet)."""

    root: Path
    manifest: Manifest
    labels: tuple[str, ...]
    preprocess: PreprocessConfig

    @classmethod
    def open(cls, root: str | Path) -> Bundle:
        root = Path(root)
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise BundleFileMissingError(f"{root}: bundle directory {what}")
        manifest = Manifest.read(root / MANIFEST_NAME)
        labels = read_labels(root / CONFIG_NAME)
        preprocess = PreprocessConfig.from_file(root / PREPROCESSOR_NAME)
        positive = manifest.decision.positive_label
        if manifest.decision.threshold is not None and positive not in labels:
            raise BundleMismatchError(
                f"{root / MANIFEST_NAME}: decision threshold is for label {positive!r}, "
                f"which is not among the model's labels {labels}"
            )
        return cls(root=root, manifest=manifest, labels=labels, preprocess=preprocess)

    def variant(self, name: str | None) -> tuple[str, Variant]:
        name = name or self.manifest.default_variant
        try:
            return name, self.manifest.variants[name]
        except KeyError:
            raise UnsupportedBundleError(
                f"{self.root}: no variant {name!r}; this bundle has {sorted(self.manifest.variants)}"
            ) from None

    def model_path(self, variant: Variant, *, verify: bool = True) -> Path:
        """The variant's file, checked against the manifest's size and sha256."""
        path = self.root / variant.file
        if not path.is_file():
            raise BundleFileMissingError(f"{path}: model file listed in the manifest is missing")
        # The size is always compared (it is free and catches truncation); the
        # sha256, which reads the whole file, only when ``verify`` is set.
        try:
            size = path.stat().st_size
            actual = sha256_file(path) if verify and size == variant.bytes else None
        except OSError as exc:
            raise BundleError(f"{path}: cannot read the model file ({exc.strerror or exc})") from exc
        if size != variant.bytes:
            raise ChecksumMismatchError(f"{path}: {size} bytes on disk, the manifest records {variant.bytes}")
        if actual is not None and actual != variant.sha256:
            raise ChecksumMismatchError(
                f"{path}: sha256 {actual} does not match the manifest's {variant.sha256} "
                "(file damaged or replaced; pass verify=False / --no-verify to skip this check)"
            )
        return path
