"""Classification report, variant agreement and threshold calibration on labelled folders.

>>> from deepfake_edge.evaluate import evaluate_bundle, format_text   # doctest: +SKIP
>>> ev = evaluate_bundle("bundle/", "data/", target_fpr=0.01)        # doctest: +SKIP
>>> print(format_text(ev))                                            # doctest: +SKIP

Metrics are numpy only (scikit-learn's definitions, checked against it by the
tests); the ROC chart needs matplotlib (the ``[evaluate]`` extra).
"""

from __future__ import annotations

from .dataset import DatasetError, LabelledDataset, LabelledImage, scan_labelled_folder
from .evaluation import (
    DEFAULT_TARGET_FPR,
    Disagreement,
    Evaluation,
    VariantComparison,
    VariantEvaluation,
    evaluate_bundle,
    evaluate_scores,
)
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
from .plot import PLOT_NAME, plot_roc
from .report import REPORT_NAME, format_text, to_dict, write_json
from .scoring import ScoredImages, score_images
from .threshold import atomic_write_text, write_threshold

__all__ = [
    "DEFAULT_TARGET_FPR",
    "PLOT_NAME",
    "REPORT_NAME",
    "ClassificationReport",
    "DatasetError",
    "Disagreement",
    "Evaluation",
    "LabelledDataset",
    "LabelledImage",
    "OperatingPoint",
    "RocCurve",
    "ScoredImages",
    "VariantComparison",
    "VariantEvaluation",
    "atomic_write_text",
    "classification_report",
    "confusion_matrix",
    "evaluate_bundle",
    "evaluate_scores",
    "format_text",
    "plot_roc",
    "roc_auc",
    "roc_curve",
    "scan_labelled_folder",
    "score_images",
    "threshold_at_fpr",
    "to_dict",
    "write_json",
    "write_threshold",
]
