"""Build, on x86, the logits the aarch64 parity and fidelity checks compare against (run by ``.ci/arm64``).

    python tests/arm64/prepare.py FIXTURES OUT [--proxy] [--proxy-checkpoint DIR]

``FIXTURES`` is a complete test fixture set (``python tests/prebuilt.py build FIXTURES``): its tiny
checkpoints, default bundles and evaluation images are reused. Needs the ``[export]`` extra
(``[openvino]`` too, for the ``int8-ov`` variant). Writes to ``OUT``:

* ``bundles/binary``: the two-label tiny checkpoint exported with every recipe (untuned, as the
  tests' variants bundle: the same graphs in seconds); ``bundles/ternary``: the three-label
  default export (fp32 and tuned int8), copied from the fixtures;
* ``pixel_values.npz``: the fixtures' evaluation images preprocessed for each bundle;
* ``logits.npz``: x86 onnxruntime logits of every variant on them, one image per run (``NAME/VARIANT``);
* ``reference.json``: what is where, and the x86 library versions.

``--proxy`` adds the real-weights proxy (pretrained DINOv2-small weights in a SigLIP classifier,
``deepfake_edge.export.proxy``) exported to fp32 and the default int8, its 128 held-out images'
pixel values (``proxy_pixel_values.npy``) and x86 fp32 and int8 logits (``proxy_logits.npz``).
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

from deepfake_edge import Detector
from deepfake_edge.export import RECIPES, export_bundle
from deepfake_edge.export.bundle_writer import package_versions
from deepfake_edge.export.sample_images import heldout_images
from deepfake_edge.extras import importable

# The README's held-out set for the proxy fidelity table (128 images).
PROXY_HELDOUT = {"synthetic": 20, "crops_per_photo": 8, "seed": 1}
PACKAGES = ("onnxruntime", "numpy", "pillow", "transformers", "torch")


def _variants(bundle: Path) -> dict[str, str]:
    """variant -> engine, from the bundle's manifest."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {name: spec.get("backend", "onnxruntime") for name, spec in manifest["variants"].items()}


def _bundles(fixtures: Path, out: Path, log: Any) -> dict[str, dict[str, Any]]:
    # int8-ov needs OpenVINO on the exporting machine; without it the bundle lacks that variant.
    unavailable = {name: "openvino is not installed on the x86 side" for name, recipe in RECIPES.items()
                   if recipe.backend == "openvino" and not importable("openvino")}
    binary = out / "bundles" / "binary"
    export_bundle(str(fixtures / "binary" / "checkpoint"), binary,
                  variants=[name for name in RECIPES if name not in unavailable],
                  calibration_limit=8, tune=False, log=log)
    shutil.copytree(fixtures / "ternary" / "bundle", out / "bundles" / "ternary")
    return {name: {"dir": f"bundles/{name}", "variants": _variants(out / "bundles" / name),
                   "unavailable": unavailable if name == "binary" else {}}
            for name in ("binary", "ternary")}


def x86_logits(bundle: Path, variant: str, pixel_values: np.ndarray) -> np.ndarray:
    """Logits one image per run, as the runtime feeds dynamically quantized variants."""
    detector = Detector.load(bundle, variant)
    return np.concatenate([detector.logits(pixel_values[i : i + 1]) for i in range(len(pixel_values))])


def prepare_tiny(fixtures: Path, out: Path, log: Any) -> dict[str, Any]:
    bundles = _bundles(fixtures, out, log)
    images = sorted((fixtures / "images").glob("*.png"))
    pixel_values: dict[str, np.ndarray] = {}
    logits: dict[str, np.ndarray] = {}
    for name, spec in bundles.items():
        bundle = out / spec["dir"]
        pixel_values[name] = Detector.load(bundle, "fp32").preprocess(images)
        for variant in spec["variants"]:
            logits[f"{name}/{variant}"] = x86_logits(bundle, variant, pixel_values[name])
        spec["images"] = [path.name for path in images]
    np.savez(out / "pixel_values.npz", **pixel_values)
    np.savez(out / "logits.npz", **logits)
    return {"bundles": bundles}


def prepare_proxy(out: Path, checkpoint: Path | None, log: Any) -> dict[str, Any]:
    from deepfake_edge.export.proxy import build_proxy

    if checkpoint is None:
        checkpoint = build_proxy(out / "checkpoints" / "proxy")
    target = out / "bundles" / "proxy"
    export_bundle(str(checkpoint), target, variants=("fp32", "int8"), log=log)
    images = heldout_images(**PROXY_HELDOUT)
    pixel_values = Detector.load(target, "fp32").preprocess([item.image for item in images])
    np.save(out / "proxy_pixel_values.npy", pixel_values)
    logits = {f"proxy/{variant}": x86_logits(target, variant, pixel_values) for variant in ("fp32", "int8")}
    np.savez(out / "proxy_logits.npz", **logits)
    return {"dir": "bundles/proxy", "checkpoint": str(checkpoint), "images": [item.name for item in images],
            "heldout": PROXY_HELDOUT, "variants": ["fp32", "int8"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixtures", type=Path, help="a complete fixture set from tests/prebuilt.py build")
    parser.add_argument("out", type=Path, help="directory to write (replaced)")
    parser.add_argument("--proxy", action="store_true", help="also build the real-weights proxy fidelity set")
    parser.add_argument("--proxy-checkpoint", type=Path, default=None,
                        help="an existing real-weights proxy checkpoint (else it is built)")
    args = parser.parse_args(argv)
    if not (args.fixtures / "fixtures.json").is_file():
        parser.error(f"{args.fixtures} is not a complete fixture set (build it: python tests/prebuilt.py build DIR)")

    start = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    def log(message: str) -> None:
        print(f"[prepare] {message}", file=sys.stderr, flush=True)

    reference: dict[str, Any] = {
        "format": 2,
        "x86": {"machine": platform.machine(), "python": platform.python_version(),
                "versions": package_versions(PACKAGES)},
        **prepare_tiny(args.fixtures, args.out, log),
    }
    if args.proxy:
        reference["proxy"] = prepare_proxy(args.out, args.proxy_checkpoint, log)
    (args.out / "reference.json").write_text(json.dumps(reference, indent=1))
    log(f"reference written to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
