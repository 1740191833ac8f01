"""Installed size of a software stack: the files of every distribution in its dependency closure.

The question a user asks is "how much do I have to install on a clean machine
to run this?", so a stack is measured as the closure of its requirements
(markers evaluated for this interpreter, extras only where the stack asks for
them) and each distribution's size is the sum of the files its ``RECORD`` lists,
as they are on disk now. Shared dependencies (numpy, say) count in every stack
that needs them, because each stack would install them on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["STACKS", "Stack", "closure", "distribution_bytes", "measure_stacks"]


@dataclass(frozen=True)
class Stack:
    """A named set of top-level requirements, e.g. what the model card's code imports."""

    key: str
    label: str
    requirements: tuple[str, ...]


STACKS: tuple[Stack, ...] = (
    Stack("deepfake_edge", "deepfake-edge runtime (numpy + Pillow + onnxruntime)", ("deepfake-edge",)),
    Stack("torch_transformers", "torch + transformers + Pillow (the model card's code)",
          ("torch", "transformers", "pillow")),
    Stack("optimum_ort", "Optimum ORTModel (optimum-onnx[onnxruntime] + Pillow)",
          ("optimum-onnx[onnxruntime]", "pillow")),
)


def _requirements_of(dist: metadata.Distribution, extras: Iterable[str]) -> list[Requirement]:
    wanted: list[Requirement] = []
    environments = [{"extra": ""}, *({"extra": extra} for extra in extras)]
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:  # a broken METADATA line must not hide the rest of the closure
            continue
        if req.marker is None or any(req.marker.evaluate(env) for env in environments):
            wanted.append(req)
    return wanted


def closure(requirements: Iterable[str]) -> tuple[dict[str, metadata.Distribution], list[str]]:
    """({canonical name: distribution} of every installed dependency, [names required but not installed])."""
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    queue = [Requirement(r) for r in requirements]
    seen_extras: dict[str, set[str]] = {}
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in found and extras <= seen_extras.get(name, set()):
            continue
        try:
            dist = found.get(name) or metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            if name not in missing:
                missing.append(name)
            continue
        found[name] = dist
        seen_extras.setdefault(name, set()).update(extras)
        queue.extend(_requirements_of(dist, extras))
    return found, sorted(missing)


def distribution_bytes(dist: metadata.Distribution) -> int:
    """Bytes on disk of the files listed in the distribution's RECORD (files since removed are skipped)."""
    total = 0
    for file in dist.files or []:
        try:
            total += Path(str(dist.locate_file(file))).stat().st_size
        except OSError:
            continue
    return total


def measure_stacks(stacks: Iterable[Stack] = STACKS) -> dict[str, Any]:
    """{stack key: {"label", "total_mb", "packages": {name: MB}, "missing": [...]}}, largest package first."""
    sizes: dict[str, int] = {}
    report: dict[str, Any] = {}
    for stack in stacks:
        dists, missing = closure(stack.requirements)
        for name, dist in dists.items():
            if name not in sizes:
                sizes[name] = distribution_bytes(dist)
        packages = sorted(((name, sizes[name]) for name in dists), key=lambda item: -item[1])
        report[stack.key] = {
            "label": stack.label,
            "requirements": list(stack.requirements),
            "total_mb": round(sum(size for _, size in packages) / 1e6, 1),
            "packages": {name: round(size / 1e6, 2) for name, size in packages},
            "missing": missing,
        }
    return report
