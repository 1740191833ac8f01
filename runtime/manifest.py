"""The bundle manifest: one JSON file that says what a bundle holds.

The export step writes it and the runtime reads it through the same dataclasses,
so the schema lives in exactly one place. Example (abridged)::

    {
      "format": "deepfake-edge-bundle", "format_version": 1,
      "source": {"model": "prithivMLmods/deepfake-detector-model-v1", "revision": "..."},
      "default_variant": "int8",
      "decision": {"positive_label": "fake", "threshold": null},
      "variants": {
        "fp32": {"file": "model.onnx", "sha256": "...", "bytes": 346000000,
                 "recipe": {"name": "fp32", "description": "..."},
                 "batch_invariant": true, "fidelity": null},
        "int8": {..., "batch_invariant": false,
                 "fidelity": {"label_agreement": 1.0, "max_abs_dp": 0.01, ...}}
      },
      "validation": {...}, "versions": {...}
    }
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleFileMissingError, UnsupportedBundleError

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "Decision", "Manifest", "Variant"]

FORMAT = "deepfake-edge-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Variant:
    """One ONNX file of the bundle and how it was made."""

    file: str
    sha256: str
    bytes: int
    recipe: dict[str, Any]
    # False for dynamically quantized models: their activation scale is computed
    # over the whole batch, so the runtime feeds them one image at a time.
    batch_invariant: bool = True
    fidelity: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    """How a label is chosen from the scores.

    ``threshold`` is ``None`` for argmax; otherwise the positive label wins when
    its probability is >= threshold. ``chosen`` records how a threshold was picked.
    """

    positive_label: str | None = "fake"
    threshold: float | None = None
    chosen: dict[str, Any] | None = None


@dataclass(frozen=True)
class Manifest:
    source: dict[str, Any]
    default_variant: str
    variants: dict[str, Variant]
    decision: Decision = field(default_factory=Decision)
    validation: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    created: str | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Put the identification first so a human reading the file sees it first.
        return {"format": data.pop("format"), "format_version": data.pop("format_version"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = MANIFEST_NAME) -> Manifest:
        if data.get("format") != FORMAT:
            raise UnsupportedBundleError(f"{source}: not a deepfake-edge manifest (format={data.get('format')!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise UnsupportedBundleError(
                f"{source}: manifest format_version {version!r} is not supported by this runtime "
                f"(supports {FORMAT_VERSION}); upgrade deepfake-edge or re-export the bundle"
            )
        try:
            variants = {name: Variant(**spec) for name, spec in data["variants"].items()}
            manifest = cls(
                source=dict(data.get("source", {})),
                default_variant=str(data["default_variant"]),
                variants=variants,
                decision=Decision(**data.get("decision", {})),
                validation=dict(data.get("validation", {})),
                versions=dict(data.get("versions", {})),
                created=data.get("created"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise UnsupportedBundleError(f"{source}: malformed manifest ({type(exc).__name__}: {exc})") from exc
        if manifest.default_variant not in variants:
            raise UnsupportedBundleError(
                f"{source}: default_variant {manifest.default_variant!r} is not one of {sorted(variants)}"
            )
        return manifest

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise BundleFileMissingError(f"{path}: manifest is missing; is this a deepfake-edge bundle?") from exc
        except (OSError, ValueError) as exc:
            raise UnsupportedBundleError(f"{path}: not readable JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise UnsupportedBundleError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
