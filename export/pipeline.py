"""``export_bundle``: checkpoint -> validated fp32 ONNX -> quantized variants -> bundle."""

from __future__ import annotations

import datetime as _dt
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deepfake_edge.bundle import CONFIG_NAME, PREPROCESSOR_NAME
from deepfake_edge.decision import AmbiguousLabelsError, infer_rule
from deepfake_edge.labels import read_labels
from deepfake_edge.manifest import Manifest, Variant
from deepfake_edge.preprocess import PreprocessConfig, preprocess
from deepfake_edge.session import require_backend
from deepfake_edge.variant_choice import Machine, choose_variant

from . import DEFAULT_MODEL
from .architectures import encoder_geometry
from .bundle_writer import (
    package_versions,
    staging_directory,
    variant_entry,
    write_manifest,
)
from .calibration import collect_statistics
from .effort import DEFAULT_EFFORT, EFFORTS
from .errors import ExportError, FidelityBudgetError
from .evidence import check_patch_logits, map_fidelity, pool_patch_logits, run_with_patches
from .fidelity import (
    MIN_GATE_IMAGES,
    TUNING_MARGIN,
    FidelityBudget,
    compare,
    file_fidelity,
    spread_indices,
)
from .fusions import fuse_graph
from .onnx_export import DEFAULT_ATOL, DEFAULT_TORCH_IMAGES, export_fp32, load_checkpoint, validate_export
from .recipes import DEFAULT_VARIANT, DEFAULT_VARIANTS, RECIPES, BuildContext, Recipe
from .sample_images import (
    NamedImage,
    calibration_images,
    gate_images,
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
    positive_label: str | None = None,
    real_label: str | None = None,
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
    ``positive_label`` / ``real_label`` name the label that means manipulated / authentic; without
    either the rule is read from the label names (``decision.infer_rule``), and an ``ExportError``
    asks for one when they are ambiguous.
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
    images = validation_images if validation_images is not None else gate_images()
    if not images:
        raise ExportError("no validation images available (install the [export] extra)")
    calibration = (load_directory(Path(calibration_dir), limit=calibration_limit) if calibration_dir
                   else calibration_images(crops_per_photo=CALIBRATION_CROPS_PER_PHOTO))
    calibration = calibration[:calibration_limit] if calibration_limit else calibration

    with staging_directory(Path(out_dir), overwrite=overwrite) as stage:
        with _step(log, f"loading {model}"):
            checkpoint = load_checkpoint(model, revision=revision)
        id2label = checkpoint.model.config.id2label
        try:  # before the minutes of export: the rule only needs the label names
            rule = infer_rule(tuple(str(id2label[i]) for i in sorted(id2label)), positive_label=positive_label,
                              real_label=real_label)
        except AmbiguousLabelsError as exc:
            raise ExportError(f"{model}: {exc}") from exc
        log(f"   manipulation score: {rule.text}")
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
        num_heads, hidden_size = encoder_geometry(checkpoint.model.config)
        del checkpoint  # free the torch weights before quantizing
        labels = read_labels(stage / CONFIG_NAME)
        # fidelity's |dP| column: P(positive), or P(real), whose change is the score's (1 - P(real))
        positive = rule.positive_label or rule.real_label
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
        gate: dict[str, dict[str, object]] = {}
        held_out = HeldOut(pixel_values, reference, reference_patches, names_seen, labels, positive)
        for name in names[1:]:
            recipe = RECIPES[name]
            ctx = BuildContext(
                fp32=fp32, out=stage / recipe.file, calibration=calib_values,
                calibration_names=[item.name for item in calibration], stats=stats,
                labels=labels, positive=positive, num_heads=num_heads, hidden_size=hidden_size,
                budget=budget.scaled(TUNING_MARGIN), tune=tune, effort=EFFORTS[effort], memo=memo,
                keep_fp32=keep_fp32, log=log, gate=budget, held_out=held_out.of_model,
            )
            entries[name], record = _build_variant(recipe, ctx, held_out, budget, log)
            if record is not None:
                gate[name] = record
        validation["image_names"] = names_seen
        validation["image_names"] = names_seen
        validation["calibration_image_names"] = [item.name for item in calibration]
        validation["calibration_source"] = str(calibration_dir) if calibration_dir else "shipped FIT photos + synthetic"
        validation["fidelity_budget"] = gate
        manifest = Manifest(
            source=source,
            default_variant=default,
            variants=entries,
            decision=rule.decision(),
            validation=validation,
            versions=package_versions(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        _report_gate(gate, strict=strict, log=log)
        write_manifest(stage, manifest)
    log(f"bundle written to {Path(out_dir).resolve()} (default variant: {default})")
    auto = choose_variant(manifest, Machine.detect())
    log(f"variant auto on this machine: {auto.variant} ({auto.reason})")
    return manifest


@dataclass(frozen=True)
class HeldOut:
    """The gate's held-out images and fp32's answers on them: what every variant is measured against."""

    pixel_values: np.ndarray
    reference: np.ndarray           # fp32 logits
    reference_patches: np.ndarray | None  # fp32 patch_logits (None: a model without evidence maps)
    names: list[str]
    labels: tuple[str, ...]
    positive: str | None

    def measure(self, path: Path, name: str, *, backend: str = "onnxruntime",
                backend_options: dict[str, str] | None = None) -> dict[str, Any]:
        """Fidelity of the model file against fp32, its evidence maps' included (one image per run)."""
        logits, patches = run_with_patches(path, self.pixel_values, backend=backend, backend_options=backend_options)
        fidelity = compare(self.reference, logits, self.names, self.labels, self.positive)
        if patches is not None and self.reference_patches is not None:
            fidelity["evidence"] = {**check_patch_logits(name, logits, patches, self.names),
                                    **map_fidelity(self.reference_patches, patches, self.labels, self.positive)}
        return fidelity

    def of_model(self, model: onnx.ModelProto) -> dict[str, Any]:
        """The same for an onnxruntime model still in memory (a recipe's candidate)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "candidate.onnx"
            onnx.save(model, path)
            return self.measure(path, "a candidate")


def _build_variant(recipe: Recipe, ctx: BuildContext, held_out: HeldOut, budget: FidelityBudget,
                   log: Log) -> tuple[Variant, dict[str, object] | None]:
    """Build one recipe, measure it on the held-out images, and judge it (gated recipes, when tuned).

    The gate is the held-out images' fidelity against ``budget``; the recipe tuned against
    ``ctx.budget`` (tighter) on the calibration images, which it records as its tuning target.
    """
    with _step(log, f"building {recipe.name}"):
        built = recipe.build(ctx)
        if recipe.logits_from_patches and held_out.reference_patches is not None:
            pool_patch_logits(ctx.out)
            built["logits"] = "ReduceMean(patch_logits)"
    # int8 measured the model it saved on these images already (to decide how many layers stay fp32)
    fidelity = built.pop("held_out_fidelity", None)
    consulted = fidelity is not None
    if fidelity is None:
        with _step(log, f"measuring {recipe.name} fidelity against fp32 on {len(held_out.names)} held-out images"):
            fidelity = held_out.measure(ctx.out, recipe.name, backend=recipe.backend,
                                        backend_options=recipe.backend_options)
    log(f"   {recipe.name}: p99 |dP| {fidelity['p99_abs_dp']:.4f}, mean {fidelity['mean_abs_dp']:.5f}, "
        f"max {fidelity['max_abs_dp']:.4f}; agreement {fidelity['label_agreement']:.1%} "
        f"({fidelity['flips_within_margin']} of {fidelity['flips']} flips within {fidelity['flip_margin']} "
        "of the threshold) (held-out)")
    record: dict[str, object] | None = None
    if recipe.gated and ctx.tune:
        on_calibration = built.get("calibration_fidelity") or file_fidelity(
            ctx.out, ctx, backend=recipe.backend, backend_options=recipe.backend_options)
        misses = budget.misses(fidelity)
        record = {"budget": budget.to_dict(), "judged_on": "held_out", "held_out_images": len(held_out.names),
                  "met_on_held_out": not misses, "misses": misses,
                  "tuning_target": ctx.budget.to_dict(),
                  # the recipe saw these images' figures to decide how many layers stay fp32 (int8)
                  "recipe_consulted_held_out": consulted,
                  "met_tuning_target_on_calibration": not ctx.budget.misses(on_calibration)}
        if len(held_out.names) < MIN_GATE_IMAGES:
            log(f"   note: {recipe.name} is judged on {len(held_out.names)} held-out images, fewer than the "
                f"{MIN_GATE_IMAGES} the gate's p99 is meant for")
    return variant_entry(ctx.out.parent, recipe, built, fidelity), record


def _report_gate(gate: dict[str, dict[str, object]], *, strict: bool, log: Log) -> None:
    """Say which gated variants missed the held-out budget; under ``strict`` that fails the export."""
    failed = {name: record["misses"] for name, record in gate.items() if not record["met_on_held_out"]}
    for name, misses in failed.items():
        message = f"{name} misses its fidelity budget on the held-out images: " + "; ".join(misses)  # type: ignore[arg-type]
        if strict:
            raise FidelityBudgetError(message + " (--strict)")
        log("!! WARNING: " + message + "; variant auto will not run it")
