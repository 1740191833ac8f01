"""Build, on x86, everything the aarch64 check compares against (``.ci/arm64`` runs it).

    python tests/arm64/prepare.py OUT [--proxy] [--proxy-checkpoint DIR]

Needs the ``[export]`` extra (``[openvino]`` too, for the ``int8-ov`` variant). Writes to ``OUT``:

* ``bundles/``: the tiny random SigLIP classifiers of ``tests/conftest.py``, exported with the
  normal export path (``binary`` with every recipe, ``ternary`` with the default ones);
* ``images/``: files in every PIL mode (``tests/image_factory.py``), held-out photos, a 12 MP JPEG;
* ``preprocess.npz``: transformers' ``SiglipImageProcessor`` output for those files, per bundle
  (``bundle/NAME/IMAGE``) and per processor setting of ``tests/test_preprocess.py``
  (``setting/NAME/IMAGE``): the reference the aarch64 preprocessing must equal bit for bit;
* ``logits.npz``: x86 onnxruntime logits of every bundle variant on those pixel values, one image
  per run (``NAME/VARIANT``);
* ``reference.json``: what is where, and the x86 library versions (``.ci/arm64`` installs the
  same versions of the aarch64 wheels).

``--proxy`` adds the real-weights proxy (pretrained DINOv2-small weights in a SigLIP classifier,
``deepfake_edge.export.proxy``) exported with the default recipes, and its held-out images'
pixel values (``proxy_pixel_values.npy``) with x86 fp32 and int8 logits, for the int8 fidelity check.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # the fixtures' own builders and the preprocessing reference

from conftest import TINY_SPECS, build_tiny_checkpoint
from test_preprocess import PROCESSOR_SETTINGS, _reference

from deepfake_edge import Detector
from deepfake_edge.export import RECIPES, export_bundle
from deepfake_edge.export.bundle_writer import package_versions
from deepfake_edge.export.sample_images import heldout_images, photo_paths
from deepfake_edge.extras import importable

from image_factory import large_jpeg, mode_samples

# ``binary`` carries every recipe (built untuned, as the tests' variant fixture does: same graphs,
# seconds instead of minutes); ``ternary`` is a default export (fp32 + tuned int8).
BUNDLE_VARIANTS: dict[str, list[str] | None] = {"binary": list(RECIPES), "ternary": None}
PHOTOS = 4  # held-out photos copied as they ship (PNG and JPEG)
LARGE = "large-12mp.jpg"
LARGE_SETTING = "siglip-512-default"  # the 12 MP file is checked at the model card's size only
NO_RESIZE_IMAGES = ("modes/RGB.png",)  # without resize every file has its own shape; one covers the path
# The README's held-out set for the proxy fidelity table (128 images).
PROXY_HELDOUT = {"synthetic": 20, "crops_per_photo": 8, "seed": 1}
PACKAGES = ("onnxruntime", "numpy", "pillow", "pytest", "transformers", "torch")


def _write_images(root: Path) -> list[str]:
    photos = photo_paths("heldout")
    names: list[str] = []
    for name, data in mode_samples(photos[0]).items():
        (root / "modes").mkdir(parents=True, exist_ok=True)
        (root / "modes" / name).write_bytes(data)
        names.append(f"modes/{name}")
    (root / "photos").mkdir(exist_ok=True)
    for path in photos[:PHOTOS]:
        shutil.copyfile(path, root / "photos" / path.name)
        names.append(f"photos/{path.name}")
    (root / LARGE).write_bytes(large_jpeg())
    return names


def _expected(processor: Any, path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return _reference(processor, image)


def _export_tiny(out: Path, log: Any) -> dict[str, dict[str, Any]]:
    bundles: dict[str, dict[str, Any]] = {}
    for name, variants in BUNDLE_VARIANTS.items():
        checkpoint = build_tiny_checkpoint(TINY_SPECS[name], out / "checkpoints" / name)
        target = out / "bundles" / name
        unavailable = {}
        if variants is None:
            export_bundle(str(checkpoint), target, overwrite=True, log=log)
        else:
            # int8-ov needs OpenVINO on the exporting machine; without it the bundle lacks that variant.
            unavailable = {v: "openvino is not installed on the x86 side" for v in variants
                           if RECIPES[v].backend == "openvino" and not importable("openvino")}
            export_bundle(str(checkpoint), target, variants=[v for v in variants if v not in unavailable],
                          calibration_limit=8, tune=False, overwrite=True, log=log)
        manifest = json.loads((target / "manifest.json").read_text())
        bundles[name] = {
            "dir": f"bundles/{name}",
            "variants": {v: spec.get("backend", "onnxruntime") for v, spec in manifest["variants"].items()},
            "unavailable": unavailable,
        }
    return bundles


def _x86_logits(bundle: Path, variant: str, pixel_values: np.ndarray) -> np.ndarray:
    detector = Detector.load(bundle, variant)
    return np.concatenate([detector.logits(pixel_values[i : i + 1]) for i in range(len(pixel_values))])


def prepare_tiny(out: Path, log: Any) -> dict[str, Any]:
    from transformers import SiglipImageProcessor

    images = _write_images(out / "images")
    arrays: dict[str, np.ndarray] = {}
    settings: dict[str, Any] = {}
    for setting, kwargs in PROCESSOR_SETTINGS.items():
        processor = SiglipImageProcessor(**kwargs)
        chosen = list(NO_RESIZE_IMAGES) if setting == "no-resize" else [i for i in images if i.startswith("modes/")]
        if setting == LARGE_SETTING:
            chosen.append(LARGE)
        for image in chosen:
            arrays[f"setting/{setting}/{image}"] = _expected(processor, out / "images" / image)
        settings[setting] = {"config": processor.to_dict(), "images": chosen}
    bundles = _export_tiny(out, log)
    logits: dict[str, np.ndarray] = {}
    for name, spec in bundles.items():
        processor = SiglipImageProcessor.from_pretrained(out / spec["dir"])
        for image in images:
            arrays[f"bundle/{name}/{image}"] = _expected(processor, out / "images" / image)
        pixel_values = np.stack([arrays[f"bundle/{name}/{image}"] for image in images])
        for variant in spec["variants"]:
            logits[f"{name}/{variant}"] = _x86_logits(out / spec["dir"], variant, pixel_values)
        spec["images"] = images
    np.savez(out / "preprocess.npz", **arrays)
    np.savez(out / "logits.npz", **logits)
    return {"images": images, "settings": settings, "bundles": bundles}


def prepare_proxy(out: Path, checkpoint: Path | None, log: Any) -> dict[str, Any]:
    from deepfake_edge.export.proxy import build_proxy

    if checkpoint is None:
        checkpoint = build_proxy(out / "checkpoints" / "proxy")
    target = out / "bundles" / "proxy"
    export_bundle(str(checkpoint), target, overwrite=True, log=log)
    images = heldout_images(**PROXY_HELDOUT)
    reference = Detector.load(target, "fp32")
    pixel_values = reference.preprocess([item.image for item in images])
    np.save(out / "proxy_pixel_values.npy", pixel_values)
    logits = {f"proxy/{variant}": _x86_logits(target, variant, pixel_values) for variant in ("fp32", "int8")}
    np.savez(out / "proxy_logits.npz", **logits)
    return {"dir": "bundles/proxy", "checkpoint": str(checkpoint), "images": [item.name for item in images],
            "heldout": PROXY_HELDOUT, "variants": ["fp32", "int8"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="directory to write (replaced)")
    parser.add_argument("--proxy", action="store_true", help="also build the real-weights proxy fidelity set")
    parser.add_argument("--proxy-checkpoint", type=Path, default=None,
                        help="an existing real-weights proxy checkpoint (else it is built, about a minute)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    def log(message: str) -> None:
        print(f"[prepare] {message}", file=sys.stderr, flush=True)

    reference: dict[str, Any] = {
        "format": 1,
        "x86": {"machine": platform.machine(), "python": platform.python_version(),
                "versions": package_versions(PACKAGES)},
        **prepare_tiny(args.out, log),
    }
    if args.proxy:
        reference["proxy"] = prepare_proxy(args.out, args.proxy_checkpoint, log)
    (args.out / "reference.json").write_text(json.dumps(reference, indent=1))
    log(f"reference written to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
