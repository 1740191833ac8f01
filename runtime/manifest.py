"""The bundle manifest: one JSON file that says what a bundle holds.

The export step writes it and the runtime reads it through the same dataclasses,
so the schema lives in exactly one place. Example (abridged)::

    {
      "format": "deepfake-edge-bundle", "format_version": 1,
      "source": {"model": "prithivMLmods/deepfake-detector-model-v1", "revision": "..."},
      "default_variant": "int8",
      "decision": {"positive_label": "fake", "threshold": null},
          (or {"positive_label": null, "real_label": "Real", "score": "1 - P(Real)", "threshold": null})
      "variants": {
        "fp32": {"file": "model.onnx", "sha256": "...", "bytes": 346000000,
                 "recipe": {"name": "fp32", "description": "..."},
                 "batch_invariant": true, "fidelity": null},
        "int8": {..., "batch_invariant": true,
                 "fidelity": {"label_agreement": 1.0, "max_abs_dp": 0.01, ...}}
      },
      "validation": {...}, "versions": {...}
    }
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import UnsupportedBundleError
from .jsonfile import read_json_object

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
    # The engine that runs the file; absent in older manifests, which were all onnxruntime.
    backend: str = "onnxruntime"
    backend_options: dict[str, str] | None = None


@dataclass(frozen=True)
class Decision:
    """Which labels mean manipulated, and how a label is chosen from the scores.

    The manipulation score is P(``positive_label``), or 1 - P(``real_label``) when that is set
    (then ``positive_label`` is None and ``score`` spells the formula); see ``decision.ScoreRule``.
    ``threshold`` is ``None`` for argmax; otherwise the flagged labels win when the score is
    >= threshold. ``chosen`` records how a threshold was picked.
    """

    positive_label: str | None = "fake"
    threshold: float | None = None
    chosen: dict[str, Any] | None = None
    # Written only when set, so runtimes that predate them still read every positive-label bundle.
    real_label: str | None = None
    score: str | None = None


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
        for variant in data["variants"].values():
            # Written only when not onnxruntime, so runtimes that predate the field still read
            # every bundle whose variants they can run.
            if variant.get("backend") == "onnxruntime" and variant.get("backend_options") is None:
                del variant["backend"], variant["backend_options"]
        for key in ("real_label", "score"):
            if data["decision"][key] is None:
                del data["decision"][key]
        # Put the identification first so a human reading the file sees it first.
        return {"format": data.pop("format"), "format_version": data.pop("format_version"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = MANIFEST_NAME) -> Manifest:
        if data.get("format") != FORMAT:
            raise UnsupportedBundleError(f"{source}: not a deepfake-edge manifest (format={data.get('format')!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
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
                decision=_decision(data.get("decision", {})),
                validation=dict(data.get("validation", {})),
                versions=dict(data.get("versions", {})),
                created=data.get("created"),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise UnsupportedBundleError(f"{source}: malformed manifest ({type(exc).__name__}: {exc})") from exc
        if manifest.default_variant not in variants:
            raise UnsupportedBundleError(
                f"{source}: default_variant {manifest.default_variant!r} is not one of {sorted(variants)}"
            )
        problems = _problems(manifest)
        if problems:
            raise UnsupportedBundleError(f"{source}: malformed manifest: {'; '.join(problems)}")
        return manifest

    @classmethod
    def read(cls, path: Path) -> Manifest:
        data = read_json_object(path, "manifest", "is this a deepfake-edge bundle?")
        return cls.from_dict(data, source=str(path))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _decision(data: dict[str, Any]) -> Decision:
    data = dict(data)
    if data.get("real_label") is not None:  # {"real_label": "Real"} alone means no positive label
        data.setdefault("positive_label", None)
    return Decision(**data)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problems(manifest: Manifest) -> list[str]:
    """Type and range checks the dataclasses do not make, so a hand-edited or
    damaged manifest fails here, at load, instead of deep inside inference."""
    problems: list[str] = []
    for name, v in manifest.variants.items():
        where = f"variants.{name}"
        # The file must stay inside the bundle: no absolute paths, no "..".
        if not isinstance(v.file, str) or not v.file or any(
            p.is_absolute() or ".." in p.parts for p in (PurePosixPath(v.file), PureWindowsPath(v.file))
        ):
            problems.append(f"{where}.file must be a relative path inside the bundle, got {v.file!r}")
        if not isinstance(v.sha256, str) or not _SHA256.fullmatch(v.sha256):
            problems.append(f"{where}.sha256 must be 64 lowercase hex digits, got {v.sha256!r}")
        if not isinstance(v.bytes, int) or isinstance(v.bytes, bool) or v.bytes < 0:
            problems.append(f"{where}.bytes must be a non-negative integer, got {v.bytes!r}")
        if not isinstance(v.batch_invariant, bool):
            problems.append(f"{where}.batch_invariant must be true or false, got {v.batch_invariant!r}")
        if not isinstance(v.recipe, dict) or not (v.fidelity is None or isinstance(v.fidelity, dict)):
            problems.append(f"{where}.recipe must be an object and fidelity an object or null")
        if not isinstance(v.backend, str):
            problems.append(f"{where}.backend must be a string, got {v.backend!r}")
        if v.backend_options is not None and not (
            isinstance(v.backend_options, dict)
            and all(isinstance(k, str) and isinstance(x, str) for k, x in v.backend_options.items())
        ):
            problems.append(f"{where}.backend_options must be an object of strings, got {v.backend_options!r}")
    decision = manifest.decision
    if not (decision.positive_label is None or isinstance(decision.positive_label, str)):
        problems.append(f"decision.positive_label must be a string or null, got {decision.positive_label!r}")
    for key in ("real_label", "score"):
        if not (getattr(decision, key) is None or isinstance(getattr(decision, key), str)):
            problems.append(f"decision.{key} must be a string or null, got {getattr(decision, key)!r}")
    if decision.real_label is not None and decision.positive_label is not None:
        problems.append("decision names both positive_label and real_label; a bundle has one rule")
    if decision.threshold is not None and not (_is_number(decision.threshold) and 0.0 <= decision.threshold <= 1.0):
        problems.append(f"decision.threshold must be null or a number within [0, 1], got {decision.threshold!r}")
    return problems
