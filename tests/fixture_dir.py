"""The directory the tests take their bundles, photos and reference answers from.

It is built in the test session where the ``[export]`` extra is installed (in
a temp dir, or in ``$DEEPFAKE_EDGE_TEST_FIXTURES`` when that names a directory
that does not exist yet), and read back when ``$DEEPFAKE_EDGE_TEST_FIXTURES``
names a complete one, which is how the runtime tests run on a base install.

Layout::

    fixtures.json          written when the building session ends: the set is complete
    photos/                byte copies of the real photos shipped in the [export] wheels
    images/NN.png          evaluation images (photos and their crops), lossless
    <spec>/checkpoint/     tiny random SigLIP checkpoint (tests/tiny_models.py)
    <spec>/bundle/         its default export (fp32 + int8)
    variants/bundle/       the binary checkpoint with fp32, int8, int8-ort and int8-static
    references/            transformers / torch / onnx answers (tests/references.py)
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path

from PIL import Image

from references import References
from tiny_models import TINY_SPECS, build_tiny_checkpoint

ENV = "DEEPFAKE_EDGE_TEST_FIXTURES"
COMPLETE = "fixtures.json"
EXPORT_MODULES = ("torch", "transformers", "onnx", "optimum")
VARIANTS = ["fp32", "int8", "int8-ort", "int8-static"]


class FixtureUnavailable(Exception):
    """No fixture directory can be had here; the message says what to do (tests skip with it)."""


def export_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in EXPORT_MODULES)


class FixtureDir:
    """Accessors for one fixture directory; ``building`` ones create what is asked for on first use."""

    def __init__(self, root: Path, building: bool) -> None:
        self.root = root
        self.building = building
        self.references = References(root / "references", self.checkpoint if building else None)

    @classmethod
    def open(cls, scratch: Path) -> FixtureDir:
        """The directory named by the environment if complete, else a new one (needs ``[export]``)."""
        named = os.environ.get(ENV)
        root = Path(named) if named else scratch
        if (root / COMPLETE).is_file():
            return cls(root, building=False)
        if root.is_dir() and any(root.iterdir()):
            raise FixtureUnavailable(f"{ENV}={root} holds an incomplete fixture set (no {COMPLETE}: its build was "
                                     "interrupted); delete it, and build it again")
        if not export_installed():
            where = f"{ENV}={root} does not exist" if named else f"{ENV} is not set"
            raise FixtureUnavailable(
                f"{where}, and building the fixtures needs the [export] extra (torch, transformers, onnx, optimum); "
                "build them elsewhere with `python tests/prebuilt.py build DIR` and set " + ENV + "=DIR"
            )
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, building=True)

    def finish(self) -> None:
        """Mark a built directory complete, with the versions its references came from."""
        if not self.building:
            return
        versions: dict[str, str | None] = {}
        for name in ("numpy", "pillow", "onnxruntime", "torch", "transformers", "onnx"):
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        info = {"python": platform.python_version(), "machine": platform.machine(), "versions": versions,
                "references": len(list(self.references.root.glob("*"))) if self.references.root.is_dir() else 0}
        (self.root / COMPLETE).write_text(json.dumps(info, indent=2) + "\n")

    def _get(self, relative: str) -> Path:
        """A path that must exist in a read-only directory."""
        path = self.root / relative
        if not path.exists():
            raise FixtureUnavailable(f"{path} is not in the fixture set (it was built by a session that did not "
                                     "need it); rebuild it with `python tests/prebuilt.py build DIR`")
        return path

    # -- what the tests ask for ------------------------------------------------------
    def checkpoint(self, spec: str) -> Path:
        out = self.root / spec / "checkpoint"
        if self.building and not out.exists():
            build_tiny_checkpoint(TINY_SPECS[spec], out)
        return self._get(f"{spec}/checkpoint")

    def bundle(self, spec: str) -> Path:
        out = self.root / spec / "bundle"
        if self.building and not out.exists():
            from deepfake_edge.export import export_bundle

            # fp32 + int8 whatever is installed (the export adds int8-ov by default where OpenVINO is)
            export_bundle(str(self.checkpoint(spec)), out, variants=("fp32", "int8"), log=lambda _msg: None,
                          **TINY_SPECS[spec].export_options)
        return self._get(f"{spec}/bundle")

    def variants_bundle(self) -> Path:
        """The binary model with every onnxruntime variant whose batching differs (untuned, 8 calibration images)."""
        out = self.root / "variants" / "bundle"
        if self.building and not out.exists():
            from deepfake_edge.export import export_bundle

            export_bundle(str(self.checkpoint("binary")), out, variants=VARIANTS, calibration_limit=8, tune=False,
                          log=lambda _msg: None)
        return self._get("variants/bundle")

    def photos(self) -> list[Path]:
        """The held-out photos shipped in wheels, copied (order and bytes kept); empty if none is installed."""
        out = self.root / "photos"
        if self.building and not out.exists():
            from deepfake_edge.export.sample_images import photo_paths

            out.mkdir()
            for i, path in enumerate(photo_paths("heldout")):
                shutil.copyfile(path, out / f"{i:02d}-{path.name}")
        return sorted(self._get("photos").iterdir())

    def images(self) -> list[Image.Image]:
        """The first 20 held-out evaluation images (photos and their crops), as RGB."""
        out = self.root / "images"
        if self.building and not out.exists():
            from deepfake_edge.export.sample_images import heldout_images

            out.mkdir()
            for i, item in enumerate(heldout_images(synthetic=4)[:20]):
                item.image.save(out / f"{i:02d}.png")
        images = []
        for path in sorted(self._get("images").iterdir()):
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return images
