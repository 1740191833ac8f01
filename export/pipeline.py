"""``export_bundle``: checkpoint -> validated fp32 ONNX -> quantized variants -> bundle."""

from __future__ import annotations

import datetime as _dt
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from deepfake_edge.bundle import CONFIG_NAME, PREPROCESSOR_NAME
from deepfake_edge.labels import read_labels
from deepfake_edge.manifest import Decision, Manifest
from deepfake_edge.preprocess import PreprocessConfig, preprocess
from deepfake_edge.session import require_backend

from . import DEFAULT_MODEL
from .bundle_writer import (
    package_versions,
    staging_directory,
    variant_entry,
    write_manifest,
)
from .calibration import collect_statistics
from .effort import DEFAULT_EFFORT, EFFORTS
from .errors import ExportError
from .evidence import check_patch_logits, map_fidelity, pool_patch_logits, run_with_patches
from .fidelity import FidelityBudget, compare, enforce, file_fidelity, spread_indices
from .fusions import fuse_graph
from .onnx_export import DEFAULT_ATOL, DEFAULT_TORCH_IMAGES, export_fp32, load_checkpoint, validate_export
from .recipes import DEFAULT_VARIANT, DEFAULT_VARIANTS, RECIPES, BuildContext
from .sample_images import (
    NamedImage,
    calibration_images,
    heldout_images,
    load_directory,
)
from .tuning import TuningMemo

# The FIT photos, their fixed variants and random crops (84 images): crops add the
# less confident views that expose quantization error (measured: held-out max |dP|
# 0.034 -> 0.0195 on the real-weights proxy compared with the 32 uncropped images).
CALIBRATION_CROPS_PER_PHOTO = 4
DEFAULT_CALIBRATION_LIMIT = 96

Log = Callable[[str], None]


def quiet_third_party_logs() -> None:
    """Keep the export's stderr readable: our step lines, not third-party chatter."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    for name in ("optimum", "onnxruntime", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # onnxruntime.quantization logs its "consider pre-processing" advice on the
    # root logger; our recipes run their own graph passes.
    logging.getLogger().setLevel(logging.ERROR)
    # TracerWarnings from torch.jit tracing SigLIP's python control flow are expected.
    warnings.filterwarnings("ignore", module=r"torch\..*")
    warnings.filterwarnings("ignore", module=r"transformers\..*")


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
    calibration_dir: str | Path | None = None,
    calibration_limit: int | None = DEFAULT_CALIBRATION_LIMIT,
    budget: FidelityBudget | None = None,
    strict: bool = False,
    tune: bool = True,
    effort: str = DEFAULT_EFFORT,
    keep_fp32: int = 0,
    atol: float = DEFAULT_ATOL,
    torch_images: int | None = DEFAULT_TORCH_IMAGES,
    overwrite: bool = False,
    log: Log = _stderr,
) -> Manifest:
    """Export ``model`` (hub id or local dir) into the bundle directory ``out_dir``.

    fp32 is always kept: it is the reference every other variant is measured
    against. Raises ``ValidationError`` if fp32 ONNX differs from torch by more
    than ``atol`` on the validation images. Recipes tune on the calibration
    images (``calibration_dir``, else the shipped FIT photos); fidelity is
    reported on the held-out validation images. A gated recipe that misses
    ``budget`` on the calibration images is reported loudly, or raises
    ``FidelityBudgetError`` when ``strict``. ``tune=False`` skips the
    calibration-driven search (same graphs and speed, lower fidelity; no budget check);
    ``effort`` (a key of ``EFFORTS``) sets how hard it searches. fp32 parity with torch
    is checked on ``torch_images`` of the validation images (None: all of them).
    """
    budget = budget or FidelityBudget()
    if effort not in EFFORTS:
        raise ExportError(f"unknown effort {effort!r}; available: {', '.join(EFFORTS)}")
    unknown = [v for v in variants if v not in RECIPES]
    if unknown:
        raise ExportError(f"unknown variants {unknown}; available: {sorted(RECIPES)}")
    for name in variants:  # an engine the runtime lacks fails now, not after minutes of export
        require_backend(RECIPES[name].backend)
    names = ["fp32", *[v for v in dict.fromkeys(variants) if v != "fp32"]]
    default = default_variant or (DEFAULT_VARIANT if DEFAULT_VARIANT in names else names[-1])
    if default not in names:
        raise ExportError(f"default variant {default!r} is not among the variants built: {names}")
    images = validation_images if validation_images is not None else heldout_images()
    if not images:
        raise ExportError("no validation images available (install the [export] extra)")
    calibration = (load_directory(Path(calibration_dir), limit=calibration_limit) if calibration_dir
                   else calibration_images(crops_per_photo=CALIBRATION_CROPS_PER_PHOTO))
    calibration = calibration[:calibration_limit] if calibration_limit else calibration

    with staging_directory(Path(out_dir), overwrite=overwrite) as stage:
        with _step(log, f"loading {model}"):
            checkpoint = load_checkpoint(model, revision=revision)
        with _step(log, "exporting fp32 ONNX with Optimum"):
            fp32 = export_fp32(checkpoint, stage)
        torch_count = len(spread_indices(len(images), torch_images))  # the images validate_export checks
        with _step(log, f"validating fp32 ONNX on {len(images)} images (against torch on {torch_count})"):
            validation, pixel_values, reference, reference_patches = validate_export(
                checkpoint, fp32, stage / PREPROCESSOR_NAME, images, atol=atol, torch_images=torch_images)
        log(
            f"   preprocessing max |diff| vs transformers: {validation['preprocess_max_abs_diff']:g}; "
            f"fp32 logits max |diff| vs torch: {validation['fp32_vs_torch_max_abs_logit_diff']:.2e}"
        )
        source = checkpoint.source
        vision = checkpoint.model.config.vision_config
        num_heads, hidden_size = int(vision.num_attention_heads), int(vision.hidden_size)
        del checkpoint  # free the torch weights before quantizing
        labels = read_labels(stage / CONFIG_NAME)
        positive = "fake" if "fake" in labels else None
        names_seen = [item.name for item in images]
        with _step(log, f"running fp32 on {len(calibration)} calibration images (logits and activation statistics)"):
            config = PreprocessConfig.from_file(stage / PREPROCESSOR_NAME)
            calib_values = np.stack([preprocess(item.image, config) for item in calibration])
            # The fused graph (attention, GELU) has the same weights and LayerNorms and runs ~15 % faster.
            fused = fuse_graph(onnx.load(fp32), num_heads, hidden_size)[0]
            stats = collect_statistics(fused, calib_values, hessians=tune, show_progress=True)
            del fused
        memo = TuningMemo()
        entries = {"fp32": variant_entry(stage, RECIPES["fp32"], {}, None)}
        budget_report: dict[str, dict[str, object]] = {}
        for name in names[1:]:
            recipe = RECIPES[name]
            ctx = BuildContext(
                fp32=fp32, out=stage / recipe.file, calibration=calib_values,
                calibration_names=[item.name for item in calibration], stats=stats,
                labels=labels, positive=positive, num_heads=num_heads, hidden_size=hidden_size, budget=budget,
                tune=tune, effort=EFFORTS[effort], memo=memo, keep_fp32=keep_fp32, log=log,
            )
            with _step(log, f"building {name}"):
                built = recipe.build(ctx)
                if recipe.logits_from_patches:
                    pool_patch_logits(ctx.out)
                    built["logits"] = "ReduceMean(patch_logits)"
            with _step(log, f"measuring {name} fidelity against fp32 on held-out images"):
                logits, patches = run_with_patches(ctx.out, pixel_values, backend=recipe.backend,
                                                   backend_options=recipe.backend_options)
                fidelity = compare(reference, logits, names_seen, labels, positive)
                fidelity["evidence"] = {**check_patch_logits(name, logits, patches, names_seen),
                                        **map_fidelity(reference_patches, patches, labels, positive)}
            log(
                f"   {name}: agreement {fidelity['label_agreement']:.1%} ({fidelity['flips_within_margin']} of "
                f"{fidelity['flips']} flips within {fidelity['flip_margin']} of the threshold), max |dP| "
                f"{fidelity['max_abs_dp']:.4f}, p99 {fidelity['p99_abs_dp']:.4f}, mean {fidelity['mean_abs_dp']:.5f} "
                "(held-out)"
            )
            if recipe.gated and tune:
                on_calibration = built.get("calibration_fidelity") or file_fidelity(
                    ctx.out, ctx, backend=recipe.backend, backend_options=recipe.backend_options)
                met = enforce(name, on_calibration, budget, where="calibration", strict=strict, log=log)
                held_out_met = enforce(name, fidelity, budget, where="held-out", strict=False, log=log)
                budget_report[name] = {"budget": budget.to_dict(), "met_on_calibration": met,
                                       "met_on_held_out": held_out_met}
            entries[name] = variant_entry(stage, recipe, built, fidelity)
        validation["image_names"] = names_seen
        validation["calibration_image_names"] = [item.name for item in calibration]
        validation["calibration_source"] = str(calibration_dir) if calibration_dir else "shipped FIT photos + synthetic"
        validation["fidelity_budget"] = budget_report
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
