"""Write a bundle: its directory atomically (built in a temp dir, then renamed), its manifest entries."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from deepfake_edge.bundle import sha256_file
from deepfake_edge.manifest import MANIFEST_NAME, Manifest, Variant

from .errors import ExportError
from .recipes import Recipe

# Every distribution whose version can change an exported file's bytes: the exporters and quantizers,
# Pillow and numpy (the calibration images are resized and scaled through them, so the int8 tuning
# follows), OpenVINO (it scores int8-ov's tuning) and the wheels that ship the photos.
VERSIONED_PACKAGES = (
    "deepfake-edge", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnx-ir", "onnxruntime",
    "openvino", "numpy", "pillow", "scikit-image", "scikit-learn", "matplotlib",
)


def package_versions(names: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def file_variant(root: Path, file: str, recipe: dict[str, Any], **fields: Any) -> Variant:
    """The manifest entry of ``root / file``: its hash and size, ``recipe`` and any other ``Variant`` field."""
    path = root / file
    return Variant(file=file, sha256=sha256_file(path), bytes=path.stat().st_size, recipe=recipe, **fields)


def variant_entry(root: Path, recipe: Recipe, built: dict[str, Any], fidelity: dict[str, Any] | None) -> Variant:
    return file_variant(root, recipe.file, recipe.manifest_entry(built), batch_invariant=recipe.batch_invariant,
                        fidelity=fidelity, backend=recipe.backend, backend_options=recipe.backend_options)


def add_variant(root: Path, name: str, file: str, recipe: dict[str, Any], *, batch_invariant: bool) -> Manifest:
    """Record one more model file of the bundle ``root`` in its manifest, as variant ``name``.

    The latency benchmark times graphs no recipe makes (int8 without the graph
    fusions, say) through the same harness as every variant.
    """
    manifest = Manifest.read(root / MANIFEST_NAME)
    variant = file_variant(root, file, {"name": name, **recipe}, batch_invariant=batch_invariant)
    manifest = dataclasses.replace(manifest, variants={**manifest.variants, name: variant})
    write_manifest(root, manifest)
    return manifest


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader of ``b``
    always finds a whole directory. False where the call or the filesystem does not support it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 / not Linux
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


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
            if exchange_paths(staging, out_dir):
                shutil.rmtree(staging, ignore_errors=True)  # now holds the previous bundle
            else:
                # No atomic exchange here: between these two renames OUT_DIR is briefly absent.
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
