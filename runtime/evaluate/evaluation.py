"""From labelled images to the figures: per-variant metrics and the comparison between variants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..decision import ScoreRule, decisions
from ..detector import Detector
from ..images import DEFAULT_MAX_PIXELS
from .dataset import DatasetError, LabelledDataset, scan_labelled_folder
from .metrics import (
    ClassificationReport,
    OperatingPoint,
    RocCurve,
    classification_report,
    confusion_matrix,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
)
from .scoring import ScoredImages, score_images

__all__ = [
    "DEFAULT_TARGET_FPR",
    "Disagreement",
    "Evaluation",
    "VariantComparison",
    "VariantEvaluation",
    "evaluate_bundle",
    "evaluate_scores",
]

DEFAULT_TARGET_FPR = 0.01
REFERENCE_VARIANT = "fp32"


@dataclass(frozen=True)
class VariantEvaluation:
    """One variant's figures on the evaluated images.

    ``predicted`` are label ids under the bundle's decision rule (argmax, or its
    threshold), i.e. what ``predict`` would answer. ``roc``, ``auc`` and
    ``operating_point`` are for the manipulation score (manipulated against the rest), and are
    ``None`` when the bundle has no score rule or the data lacks positives or negatives.
    """

    name: str
    file: str
    predicted: np.ndarray
    report: ClassificationReport
    confusion: np.ndarray
    roc: RocCurve | None
    auc: float | None
    operating_point: OperatingPoint | None


@dataclass(frozen=True)
class VariantComparison:
    """A variant against the reference (fp32) on the same tensors.

    ``dp`` is the manipulation score; without a score rule it is the largest
    change of any label's probability.
    """

    variant: str
    reference: str
    images: int
    agreeing: int
    max_abs_dp: float
    mean_abs_dp: float
    worst_image: str | None

    @property
    def label_agreement(self) -> float:
        return self.agreeing / self.images if self.images else 1.0


@dataclass(frozen=True)
class Disagreement:
    """An image on which not all variants gave the same label."""

    path: str
    true: str
    labels: dict[str, str]
    scores: dict[str, float]  # the manipulation score per variant


@dataclass(frozen=True)
class Evaluation:
    bundle_dir: Path
    dataset: LabelledDataset
    labels: tuple[str, ...]
    positive_label: str | None
    decision_threshold: float | None
    target_fpr: float
    default_variant: str
    scored: ScoredImages
    variants: dict[str, VariantEvaluation]
    reference: str
    comparisons: dict[str, VariantComparison]
    disagreements: tuple[Disagreement, ...]
    created: str
    rule: ScoreRule | None = None  # the manipulation score; None: the bundle has none (ROC skipped)

    @property
    def positive_index(self) -> int | None:
        """The positive label's index; None without a positive-label rule (old bundle, or a real-label rule)."""
        return self.labels.index(self.positive_label) if self.positive_label in self.labels else None

    @property
    def score_text(self) -> str:
        """The manipulation score as a formula, ``P(fake)`` or ``1 - P(Real)``; ``P`` without a rule."""
        return self.rule.text if self.rule is not None else "P"

    @property
    def flagged_name(self) -> str:
        """What a flagged image is called: the positive label, or ``manipulated``."""
        return self.rule.flagged_name if self.rule is not None else ""


def _compare(name: str, reference: str, predicted: Mapping[str, np.ndarray], dp: Mapping[str, np.ndarray],
             paths: Sequence[str]) -> VariantComparison:
    diff = np.abs(dp[name] - dp[reference])
    if diff.ndim == 2:
        diff = diff.max(axis=1)
    worst = int(np.argmax(diff)) if diff.size else None
    return VariantComparison(
        variant=name,
        reference=reference,
        images=int(diff.size),
        agreeing=int((predicted[name] == predicted[reference]).sum()),
        max_abs_dp=float(diff.max()) if diff.size else 0.0,
        mean_abs_dp=float(diff.mean()) if diff.size else 0.0,
        worst_image=paths[worst] if worst is not None else None,
    )


def evaluate_scores(
    scored: ScoredImages,
    dataset: LabelledDataset,
    labels: tuple[str, ...],
    *,
    variant_files: Mapping[str, str],
    positive_label: str | None,
    decision_threshold: float | None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    default_variant: str,
    bundle_dir: Path,
    rule: ScoreRule | None = None,
) -> Evaluation:
    """Compute every figure from already-computed probabilities (no model needed).

    ``rule`` is the manipulation score ROC and thresholds are computed on; None: P(``positive_label``)
    when it is one of ``labels``, else no ROC.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be within [0, 1], got {target_fpr}")
    if scored.true.size == 0:
        first = scored.failures[0].error if scored.failures else "no images"
        raise DatasetError(f"{dataset.root}: none of the {len(dataset.images)} images could be read; first: {first}")
    names = list(scored.probs)
    reference = REFERENCE_VARIANT if REFERENCE_VARIANT in names else names[0]
    if rule is None and positive_label in labels:
        rule = ScoreRule(labels, positive_label=positive_label)
    is_positive = rule.manipulated(scored.true) if rule is not None else np.zeros(scored.true.shape, bool)
    # ROC and threshold need the rule and images on both sides of it.
    has_both = rule is not None and bool(is_positive.any()) and not bool(is_positive.all())

    variants: dict[str, VariantEvaluation] = {}
    predicted: dict[str, np.ndarray] = {}
    dp: dict[str, np.ndarray] = {}
    for name in names:
        probs = scored.probs[name]
        # the runtime's own decision rule, so the report describes what `predict` answers
        predicted[name] = decisions(probs, rule, decision_threshold).astype(np.int64)
        dp[name] = rule.scores(probs) if rule is not None else probs
        roc = auc = point = None
        if has_both:
            roc = roc_curve(is_positive, dp[name])
            auc = roc_auc(roc)
            point = threshold_at_fpr(is_positive, dp[name], target_fpr)
        variants[name] = VariantEvaluation(
            name=name,
            file=variant_files[name],
            predicted=predicted[name],
            report=classification_report(scored.true, predicted[name], labels),
            confusion=confusion_matrix(scored.true, predicted[name], len(labels)),
            roc=roc,
            auc=auc,
            operating_point=point,
        )
    comparisons = {name: _compare(name, reference, predicted, dp, scored.paths) for name in names if name != reference}

    stacked = np.stack([predicted[name] for name in names])
    disagreements = tuple(
        Disagreement(
            path=scored.paths[i],
            true=labels[int(scored.true[i])],
            labels={name: labels[int(predicted[name][i])] for name in names},
            scores={name: float(dp[name][i]) for name in names} if rule is not None else {},
        )
        for i in np.flatnonzero((stacked != stacked[0]).any(axis=0))
    )
    return Evaluation(
        bundle_dir=bundle_dir,
        dataset=dataset,
        labels=labels,
        positive_label=positive_label,
        decision_threshold=decision_threshold,
        target_fpr=float(target_fpr),
        default_variant=default_variant,
        scored=scored,
        variants=variants,
        reference=reference,
        comparisons=comparisons,
        disagreements=disagreements,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        rule=rule,
    )


def evaluate_bundle(
    bundle_dir: str | Path,
    data_dir: str | Path,
    *,
    variants: Sequence[str] | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    batch_size: int = 8,
    threads: int | None = None,
    verify: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    fast_decode: bool = False,
    show_progress: bool = True,
) -> Evaluation:
    """Evaluate ``variants`` of a bundle (default: all, fp32 first) on a labelled folder.

    ``data_dir`` has one sub-folder per label (see :mod:`.dataset`). Raises
    ``BundleError`` for an unusable bundle or unknown variant, ``DatasetError``
    for a bad folder. Unreadable images are recorded in ``scored.failures``.
    ``fast_decode``: see ``Detector.load`` (every variant gets the same, fast-decoded, tensor).
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be within [0, 1], got {target_fpr}")
    bundle_dir = Path(bundle_dir)
    first = Detector.load(bundle_dir, variants[0] if variants else None, threads=threads, verify=verify,
                          max_pixels=max_pixels, fast_decode=fast_decode)
    manifest = first.bundle.manifest
    dataset = scan_labelled_folder(data_dir, first.labels)  # before loading more models: fail fast
    if not variants:
        variants = sorted(manifest.variants, key=lambda name: name != REFERENCE_VARIANT)  # stable: fp32 first
    detectors: dict[str, Detector] = {}
    for name in dict.fromkeys(variants):  # de-duplicated, order kept
        detectors[name] = first if name == first.variant_name else Detector.load(
            bundle_dir, name, threads=threads, verify=verify, max_pixels=max_pixels, fast_decode=fast_decode
        )
    scored = score_images(detectors, dataset.images, batch_size=batch_size, show_progress=show_progress)
    return evaluate_scores(
        scored,
        dataset,
        first.labels,
        variant_files={name: det.variant.file for name, det in detectors.items()},
        positive_label=first.positive_label,
        decision_threshold=manifest.decision.threshold,
        rule=first.rule,
        target_fpr=target_fpr,
        default_variant=manifest.default_variant,
        bundle_dir=bundle_dir,
    )
