"""Write a bundle directory atomically: build it in a temp dir, then rename."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from deepfake_edge.bundle import sha256_file
from deepfake_edge.manifest import MANIFEST_NAME, Manifest, Variant

from .errors import ExportError
from .recipes import Recipe

VERSIONED_PACKAGES = ("deepfake-edge", "onnx", "onnxruntime", "optimum", "optimum-onnx", "transformers", "torch")


def package_versions(names: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def variant_entry(root: Path, recipe: Recipe, built: dict, fidelity: dict | None) -> Variant:
    path = root / recipe.file
    return Variant(
        file=recipe.file,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        recipe=recipe.manifest_entry(built),
        batch_invariant=recipe.batch_invariant,
        fidelity=fidelity,
        backend=recipe.backend,
        backend_options=recipe.backend_options,
    )


@contextmanager
def staging_directory(out_dir: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temp dir beside ``out_dir``; on success it becomes ``out_dir``.

    The manifest is written last and the directory appears under its final name
    only by ``rename``, so an interrupted export leaves no bundle that looks whole.
    """
    out_dir = out_dir.resolve()
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists; pass --overwrite to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staging
        if not (staging / MANIFEST_NAME).is_file():
            raise ExportError("internal error: bundle staged without a manifest")
        staging.chmod(0o755)  # mkdtemp makes it 0700; a bundle is meant to be shared
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(old / "bundle")
            staging.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_manifest(root: Path, manifest: Manifest) -> None:
    manifest.write(root / MANIFEST_NAME)
