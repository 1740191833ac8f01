"""``export_bundle``: checkpoint -> validated fp32 ONNX -> quantized variants -> bundle."""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from deepfake_edge.bundle import CONFIG_NAME, PREPROCESSOR_NAME
from deepfake_edge.labels import read_labels
from deepfake_edge.manifest import Decision, Manifest

from .bundle_writer import package_versions, staging_directory, variant_entry, write_manifest
from .checkpoint import DEFAULT_MODEL, load_checkpoint
from .errors import ExportError
from .fidelity import compare, run_per_image
from .onnx_export import export_fp32
from .recipes import DEFAULT_VARIANT, DEFAULT_VARIANTS, RECIPES
from .sample_images import NamedImage, heldout_images
from .validate import DEFAULT_ATOL, validate_export

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def _step(log: Log, what: str) -> Iterator[None]:
    log(f"-> {what} ...")
    start = time.perf_counter()
    yield
    log(f"   {what}: done in {time.perf_counter() - start:.1f} s")


def export_bundle(
    model: str = DEFAULT_MODEL,
    out_dir: str | Path = "bundle",
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    default_variant: str | None = None,
    revision: str | None = None,
    validation_images: list[NamedImage] | None = None,
    atol: float = DEFAULT_ATOL,
    overwrite: bool = False,
    log: Log = _stderr,
) -> Manifest:
    """Export ``model`` (hub id or local dir) into the bundle directory ``out_dir``.

    fp32 is always kept: it is the reference every other variant is measured
    against. Raises ``ValidationError`` if fp32 ONNX differs from torch by more
    than ``atol`` on the validation images.
    """
    unknown = [v for v in variants if v not in RECIPES]
    if unknown:
        raise ExportError(f"unknown variants {unknown}; available: {sorted(RECIPES)}")
    names = ["fp32", *[v for v in dict.fromkeys(variants) if v != "fp32"]]
    default = default_variant or (DEFAULT_VARIANT if DEFAULT_VARIANT in names else names[-1])
    if default not in names:
        raise ExportError(f"default variant {default!r} is not among the variants built: {names}")
    images = validation_images if validation_images is not None else heldout_images()
    if not images:
        raise ExportError("no validation images available (install the [export] extra)")

    with staging_directory(Path(out_dir), overwrite=overwrite) as stage:
        with _step(log, f"loading {model}"):
            checkpoint = load_checkpoint(model, revision=revision)
        with _step(log, "exporting fp32 ONNX with Optimum"):
            fp32 = export_fp32(checkpoint, stage)
        with _step(log, f"validating fp32 ONNX against torch on {len(images)} images"):
            validation, pixel_values = validate_export(checkpoint, fp32, stage / PREPROCESSOR_NAME, images, atol=atol)
        log(
            f"   preprocessing max |diff| vs transformers: {validation['preprocess_max_abs_diff']:g}; "
            f"fp32 logits max |diff| vs torch: {validation['fp32_vs_torch_max_abs_logit_diff']:.2e}"
        )
        source = checkpoint.source
        del checkpoint  # free the torch weights before quantizing
        labels = read_labels(stage / CONFIG_NAME)
        positive = "fake" if "fake" in labels else None
        with _step(log, "running fp32 reference per image"):
            reference = run_per_image(fp32, pixel_values)
        entries = {"fp32": variant_entry(stage, RECIPES["fp32"], None)}
        for name in names[1:]:
            recipe = RECIPES[name]
            with _step(log, f"building {name}"):
                recipe.build(fp32, stage / recipe.file)
            with _step(log, f"measuring {name} fidelity against fp32"):
                fidelity = compare(reference, run_per_image(stage / recipe.file, pixel_values), images, labels, positive)
            log(
                f"   {name}: agreement {fidelity['label_agreement']:.1%}, max |dP| {fidelity['max_abs_dp']:.4f}, "
                f"mean |dP| {fidelity['mean_abs_dp']:.4f}"
            )
            entries[name] = variant_entry(stage, recipe, fidelity)
        validation["image_names"] = [item.name for item in images]
        manifest = Manifest(
            source=source,
            default_variant=default,
            variants=entries,
            decision=Decision(positive_label=positive, threshold=None),
            validation=validation,
            versions=package_versions(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        write_manifest(stage, manifest)
    log(f"bundle written to {Path(out_dir).resolve()} (default variant: {default})")
    return manifest
