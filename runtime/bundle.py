"""Open a bundle directory and check it is whole and self-consistent.

Every problem is found here, at load time, and reported with the file it is in;
inference never discovers a broken bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .decision import ScoreRule, rule_of
from .errors import (
    BundleError,
    BundleFileMissingError,
    BundleMismatchError,
    ChecksumMismatchError,
    UnsupportedBundleError,
)
from .labels import read_labels
from .manifest import MANIFEST_NAME, Manifest, Variant
from .model_cache import file_sha256, sha256_file
from .preprocess import PreprocessConfig
from .variant_choice import AUTO, Machine, choose_variant

__all__ = ["CONFIG_NAME", "PREPROCESSOR_NAME", "Bundle", "sha256_file"]

CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"


@dataclass(frozen=True)
class Bundle:
    """The parsed, verified contents of a bundle directory (no session yet)."""

    root: Path
    manifest: Manifest
    labels: tuple[str, ...]
    preprocess: PreprocessConfig

    @property
    def rule(self) -> ScoreRule | None:
        """The manipulation-score rule the manifest records (None for an old bundle whose model has
        no ``fake`` label)."""
        return rule_of(self.manifest.decision, self.labels)

    @classmethod
    def open(cls, root: str | Path) -> Bundle:
        root = Path(root)
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise BundleFileMissingError(f"{root}: bundle directory {what}")
        manifest = Manifest.read(root / MANIFEST_NAME)
        labels = read_labels(root / CONFIG_NAME)
        preprocess = PreprocessConfig.from_file(root / PREPROCESSOR_NAME)
        decision = manifest.decision
        named = decision.real_label if decision.real_label is not None else decision.positive_label
        if (decision.threshold is not None or decision.real_label is not None) and named not in labels:
            raise BundleMismatchError(
                f"{root / MANIFEST_NAME}: decision is for label {named!r}, "
                f"which is not among the model's labels {labels}"
            )
        return cls(root=root, manifest=manifest, labels=labels, preprocess=preprocess)

    def require_rule(self, purpose: str) -> ScoreRule:
        """The manipulation-score rule, which ``purpose`` (a phrase: "a video verdict") cannot do without.

        Raises ``UnsupportedBundleError`` when the manifest names no label the model has.
        """
        rule = self.rule
        if rule is None:
            raise UnsupportedBundleError(
                f"{self.root}: {purpose} needs the bundle's manipulation score: a positive label "
                f"(decision.positive_label) or a real label (decision.real_label) among its labels {self.labels}, "
                f"and this one has positive label {self.manifest.decision.positive_label!r}; re-export it with "
                "--positive-label or --real-label"
            )
        return rule

    def variant(self, name: str | None) -> tuple[str, Variant]:
        """The named variant; None means the manifest's default, ``"auto"`` the choice for this machine
        (see ``variant_choice``; ``Detector.load`` also keeps the reason)."""
        if name == AUTO:
            name = choose_variant(self.manifest, Machine.detect()).variant
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
        # sha256 only when ``verify`` is set: read in full once, then reused while the
        # file's inode, size, mtime and ctime are unchanged (see model_cache).
        try:
            size = path.stat().st_size
            actual = file_sha256(path) if verify and size == variant.bytes else None
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
