"""The manipulation score: which labels mean "manipulated", decided once at export, applied everywhere.

A bundle's manifest records one of two rules (``decision`` in ``manifest.json``):

* ``{"positive_label": "Fake"}``: the score is P(Fake);
* ``{"real_label": "Real", "score": "1 - P(Real)"}``: the score is P(any label but Real), for any
  number of labels (a three-class ``Artificial`` / ``Deepfake`` / ``Real`` detector).

:class:`ScoreRule` is that rule applied to a model's labels; every surface (``predict``'s ``score``,
video verdicts, segments and alerts, ``evaluate``'s ROC and thresholds, ``serve``) computes the
score through :meth:`ScoreRule.scores` and decides labels through :meth:`ScoreRule.decide`.
:func:`infer_rule` is how the export picks the rule when no flag names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .manifest import Decision

__all__ = ["FAKE_WORDS", "REAL_WORDS", "AmbiguousLabelsError", "ScoreRule", "decisions", "infer_rule", "rule_of"]

#: Label names (compared case-insensitively) that mean manipulated, and those that mean authentic.
FAKE_WORDS = ("fake", "deepfake", "ai", "artificial", "synthetic", "generated", "manipulated")
REAL_WORDS = ("real", "realism", "authentic", "human", "genuine")


class AmbiguousLabelsError(ValueError):
    """The label names do not say which one means manipulated (the export asks for a flag)."""


@dataclass(frozen=True)
class ScoreRule:
    """The manipulation score over ``labels``: P(``positive_label``), or 1 - P(``real_label``).

    Exactly one of the two is set, and it is one of ``labels``.
    """

    labels: tuple[str, ...]
    positive_label: str | None = None
    real_label: str | None = None

    def __post_init__(self) -> None:
        named = self.positive_label if self.real_label is None else self.real_label
        if (self.positive_label is None) == (self.real_label is None) or named not in self.labels:
            raise ValueError(f"a score rule needs exactly one of positive_label / real_label among {self.labels}, "
                             f"got positive_label={self.positive_label!r}, real_label={self.real_label!r}")

    @property
    def flagged(self) -> np.ndarray:
        """Boolean mask over ``labels``: the labels whose probabilities add up to the score."""
        if self.positive_label is not None:
            return np.array([label == self.positive_label for label in self.labels])
        return np.array([label != self.real_label for label in self.labels])

    @property
    def text(self) -> str:
        """The score as a formula: ``P(Fake)`` or ``1 - P(Real)``."""
        return f"P({self.positive_label})" if self.positive_label is not None else f"1 - P({self.real_label})"

    @property
    def flagged_name(self) -> str:
        """What a flagged image is called in reports: the positive label, or ``manipulated`` (any label
        but the real one)."""
        return self.positive_label if self.positive_label is not None else "manipulated"

    def scores(self, probs: np.ndarray) -> np.ndarray:
        """The manipulation score of each row of ``probs`` (N x labels), in float64.

        For a real label it is the sum of the other labels' probabilities, which equals 1 - P(real)
        and keeps its precision when P(real) is close to 1.
        """
        return np.asarray(probs, dtype=np.float64)[..., self.flagged].sum(axis=-1)

    def manipulated(self, label_ids: np.ndarray) -> np.ndarray:
        """Whether each true label id counts as manipulated (the positive class of a ROC curve)."""
        return self.flagged[np.asarray(label_ids, dtype=np.int64)]

    def decide(self, probs: np.ndarray, threshold: float | None, scores: np.ndarray | None = None) -> np.ndarray:
        """The decided label id of each row of ``probs``: argmax without a threshold; with one, the most
        probable flagged label where the score (``scores``, else :meth:`scores`) is >= threshold, and
        the most probable other label elsewhere."""
        probs = np.asarray(probs)
        if threshold is None:
            return probs.argmax(axis=-1)
        flagged = self.flagged
        score = self.scores(probs) if scores is None else np.asarray(scores)
        high = np.where(flagged, probs, -np.inf).argmax(axis=-1)
        low = np.where(flagged, -np.inf, probs).argmax(axis=-1)
        return np.where(score >= threshold, high, low)

    def decision(self, threshold: float | None = None) -> Decision:
        """The manifest's ``decision`` for this rule."""
        if self.real_label is not None:
            return Decision(positive_label=None, real_label=self.real_label, score=self.text, threshold=threshold)
        return Decision(positive_label=self.positive_label, threshold=threshold)


def rule_of(decision: Decision, labels: tuple[str, ...]) -> ScoreRule | None:
    """The rule a manifest's ``decision`` records, or None when it names no label the model has
    (bundles exported before the rule existed, for models without a ``fake`` label)."""
    if decision.real_label is not None:
        return ScoreRule(labels, real_label=decision.real_label) if decision.real_label in labels else None
    if decision.positive_label in labels:
        return ScoreRule(labels, positive_label=decision.positive_label)
    return None


def decisions(probs: np.ndarray, rule: ScoreRule | None, threshold: float | None) -> np.ndarray:
    """The decided label ids: the rule's threshold decision, or argmax where there is no rule."""
    if rule is None:
        return np.asarray(probs).argmax(axis=-1)
    return rule.decide(probs, threshold)


def _matches(labels: Sequence[str], words: Sequence[str]) -> list[str]:
    return [label for label in labels if label.strip().lower() in words]


def infer_rule(labels: tuple[str, ...], *, positive_label: str | None = None,
               real_label: str | None = None) -> ScoreRule:
    """The export's rule: the flag given, else one read from the label names (:data:`FAKE_WORDS`,
    :data:`REAL_WORDS`, case-insensitive).

    Two labels: the one fake-word label, else the label beside the one real-word label, is positive.
    More labels: one real-word label with every other a fake word gives the real-label rule.
    Anything else raises :class:`AmbiguousLabelsError`, which names the flags to pass.
    """
    if positive_label is not None and real_label is not None:
        raise AmbiguousLabelsError("--positive-label and --real-label exclude each other; pass one")
    for flag, name in (("--positive-label", positive_label), ("--real-label", real_label)):
        if name is not None and name not in labels:
            raise AmbiguousLabelsError(f"{flag} {name!r} is not one of the model's labels {labels}")
    if positive_label is not None or real_label is not None:
        return ScoreRule(labels, positive_label=positive_label, real_label=real_label)
    fakes, reals = _matches(labels, FAKE_WORDS), _matches(labels, REAL_WORDS)
    if len(labels) == 2:
        if len(fakes) == 1:
            return ScoreRule(labels, positive_label=fakes[0])
        if len(reals) == 1 and not fakes:
            return ScoreRule(labels, positive_label=next(label for label in labels if label != reals[0]))
    elif len(reals) == 1 and len(fakes) == len(labels) - 1:
        return ScoreRule(labels, real_label=reals[0])
    raise AmbiguousLabelsError(
        f"labels {labels}: cannot tell which one means manipulated (fake-like: {fakes or 'none'}, real-like: "
        f"{reals or 'none'}; vocabulary: {', '.join(FAKE_WORDS)} against {', '.join(REAL_WORDS)}). "
        "Pass --positive-label NAME (the label that means manipulated) or --real-label NAME "
        "(the one label that means authentic; the score is then 1 - P(NAME))"
    )
