"""Classification metrics in numpy, reproducing scikit-learn's definitions exactly.

The base install has no scikit-learn, so the figures are computed here; the test
suite checks every one of them against scikit-learn 1.x on the same predictions:

* :func:`classification_report` = ``sklearn.metrics.classification_report``
  (``zero_division="warn"``, i.e. an undefined ratio counts as 0.0), with the
  same text layout (``digits=4`` in the model card);
* :func:`confusion_matrix` = ``sklearn.metrics.confusion_matrix`` (rows are the
  true label, columns the predicted one);
* :func:`roc_curve` = ``sklearn.metrics.roc_curve`` (first threshold ``inf``);
* :func:`roc_auc` = ``sklearn.metrics.roc_auc_score`` (trapezoidal area).

:func:`threshold_at_fpr` picks an operating point on the positive label's score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ClassificationReport",
    "OperatingPoint",
    "RocCurve",
    "classification_report",
    "confusion_matrix",
    "roc_auc",
    "roc_curve",
    "threshold_at_fpr",
]

_HEADERS = ("precision", "recall", "f1-score", "support")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts: ``[i, j]`` = images of class i predicted as j."""
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has shape {true.shape} but y_pred has {pred.shape}")
    flat = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # scikit-learn's zero_division="warn" (its default) yields 0.0 for 0/0.
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class precision/recall/F1/support plus accuracy and the two averages.

    ``labels`` are the rows, in the model's label order: every label that occurs
    among the true or the predicted labels (scikit-learn's default row set).
    """

    labels: tuple[str, ...]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    accuracy: float
    macro: tuple[float, float, float]
    weighted: tuple[float, float, float]

    @property
    def total(self) -> int:
        return int(self.support.sum())

    def to_dict(self) -> dict[str, Any]:
        """The layout of ``classification_report(..., output_dict=True)``."""
        out: dict[str, Any] = {
            label: dict(zip(_HEADERS, (float(p), float(r), float(f), float(s)), strict=True))
            for label, p, r, f, s in zip(self.labels, self.precision, self.recall, self.f1, self.support, strict=True)
        }
        out["accuracy"] = self.accuracy
        out["macro avg"] = dict(zip(_HEADERS, (*self.macro, float(self.total)), strict=True))
        out["weighted avg"] = dict(zip(_HEADERS, (*self.weighted, float(self.total)), strict=True))
        return out

    def to_text(self, digits: int = 4) -> str:
        """The text of ``classification_report(..., digits=digits)``, character for character."""
        # Format strings copied from sklearn.metrics.classification_report.
        width = max(max(len(name) for name in self.labels), len("weighted avg"), digits)
        head_fmt = "{:>{width}s} " + " {:>9}" * len(_HEADERS)
        row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
        accuracy_fmt = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
        text = head_fmt.format("", *_HEADERS, width=width) + "\n\n"
        for row in zip(self.labels, self.precision, self.recall, self.f1, self.support, strict=True):
            text += row_fmt.format(row[0], *row[1:4], int(row[4]), width=width, digits=digits)
        text += "\n"
        text += accuracy_fmt.format("accuracy", "", "", self.accuracy, self.total, width=width, digits=digits)
        text += row_fmt.format("macro avg", *self.macro, self.total, width=width, digits=digits)
        text += row_fmt.format("weighted avg", *self.weighted, self.total, width=width, digits=digits)
        return text


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]) -> ClassificationReport:
    """Report for integer class ids (``label_names[i]`` names id ``i``)."""
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if true.size == 0:
        raise ValueError("classification_report needs at least one prediction")
    cm = confusion_matrix(true, pred, len(label_names))
    present = np.flatnonzero(cm.sum(axis=0) + cm.sum(axis=1))
    cm = cm[np.ix_(present, present)]
    tp = np.diag(cm).astype(np.float64)
    true_sum = cm.sum(axis=1).astype(np.float64)
    pred_sum = cm.sum(axis=0).astype(np.float64)
    precision = _divide(tp, pred_sum)
    recall = _divide(tp, true_sum)
    # F1 from the counts, as scikit-learn >= 1.3 computes it: 2tp / (2tp + fp + fn).
    f1 = _divide(2.0 * tp, true_sum + pred_sum)
    support = cm.sum(axis=1)

    def averages(weights: np.ndarray | None) -> tuple[float, float, float]:
        return tuple(float(np.average(v, weights=weights)) for v in (precision, recall, f1))  # type: ignore[return-value]

    return ClassificationReport(
        labels=tuple(label_names[int(i)] for i in present),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        accuracy=float(tp.sum() / true_sum.sum()),
        macro=averages(None),
        weighted=averages(true_sum),
    )


@dataclass(frozen=True)
class RocCurve:
    """False/true positive rates at each threshold; ``thresholds[0]`` is ``inf`` (nothing flagged).

    ``false_positives``/``true_positives`` are the counts behind the rates.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    false_positives: np.ndarray
    true_positives: np.ndarray
    negatives: int
    positives: int


def _check_binary(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_positive, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"is_positive {y.shape} and scores {s.shape} must be 1-D and of equal length")
    if not y.any() or y.all():
        raise ValueError(
            f"a ROC curve needs both positive and negative images; got {int(y.sum())} positive of {y.size}"
        )
    return y, s


def roc_curve(is_positive: np.ndarray, scores: np.ndarray, *, drop_intermediate: bool = True) -> RocCurve:
    """ROC curve of ``scores`` for the positive class (an image is flagged when score >= threshold).

    Same points and thresholds as ``sklearn.metrics.roc_curve``: one per distinct
    score, in decreasing order, behind an initial ``inf``; ``drop_intermediate``
    removes collinear points that do not change the plotted curve or its area.
    """
    y, s = _check_binary(is_positive, scores)
    # Stable sort, then reverse: sklearn's order, so tied scores group identically.
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[last_of_each_score]
    fps = 1.0 + last_of_each_score - tps
    thresholds = s[last_of_each_score]
    if drop_intermediate and fps.size > 2:
        # A point is kept where the curve bends (non-zero second difference).
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    return RocCurve(
        fpr=fps / fps[-1],
        tpr=tps / tps[-1],
        thresholds=np.r_[np.inf, thresholds],
        false_positives=fps.astype(np.int64),
        true_positives=tps.astype(np.int64),
        negatives=int(fps[-1]),
        positives=int(tps[-1]),
    )


def roc_auc(curve: RocCurve) -> float:
    """Area under the curve by the trapezoidal rule (``sklearn.metrics.auc``)."""
    # numpy.trapezoid's arithmetic, written out: numpy < 2 only has the now-deprecated trapz.
    return float(np.add.reduce(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2.0))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on the positive label's probability, and what it does on the evaluated data.

    An image is flagged positive when its score is >= ``threshold``.
    """

    threshold: float
    target_fpr: float
    fpr: float
    recall: float
    false_positives: int
    negatives: int
    true_positives: int
    positives: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold, "target_fpr": self.target_fpr, "fpr": self.fpr, "recall": self.recall,
            "false_positives": self.false_positives, "negatives": self.negatives,
            "true_positives": self.true_positives, "positives": self.positives,
        }


def threshold_at_fpr(is_positive: np.ndarray, scores: np.ndarray, target_fpr: float) -> OperatingPoint | None:
    """The threshold with the highest recall whose false positive rate is <= ``target_fpr``.

    FPR is the fraction of negative images scored >= threshold. Among thresholds
    with that best recall, the highest (fewest false positives) is returned; it
    is always one of the observed scores, as in ``roc_curve``. Returns ``None``
    when no threshold flags any positive image within the target (e.g. the
    highest-scored image is a negative and ``target_fpr`` is 0).
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be within [0, 1], got {target_fpr}")
    curve = roc_curve(is_positive, scores, drop_intermediate=False)
    allowed = np.flatnonzero(curve.fpr <= target_fpr)  # never empty: index 0 is (0, 0) at inf
    best_tpr = curve.tpr[allowed].max()
    if best_tpr <= 0.0:
        return None
    # The ROC is monotone, so the first allowed index with the best recall has the highest threshold.
    index = int(allowed[np.argmax(curve.tpr[allowed] == best_tpr)])
    return OperatingPoint(
        threshold=float(curve.thresholds[index]),
        target_fpr=float(target_fpr),
        fpr=float(curve.fpr[index]),
        recall=float(curve.tpr[index]),
        false_positives=int(curve.false_positives[index]),
        negatives=curve.negatives,
        true_positives=int(curve.true_positives[index]),
        positives=curve.positives,
    )
