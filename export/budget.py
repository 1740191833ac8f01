"""The fidelity budget a quantized variant must meet, and the check against it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import FidelityBudgetError


@dataclass(frozen=True)
class FidelityBudget:
    """Limits on how far a variant may move from fp32 (measured one image per run).

    Defaults come from the product's promise: the int8 detector must keep the
    fp32 detector's judgement on practically every image.
    """

    min_agreement: float = 0.995
    max_abs_dp: float = 0.03
    mean_abs_dp: float = 0.0025

    def misses(self, fidelity: dict[str, Any]) -> list[str]:
        """Human-readable list of the limits ``fidelity`` breaks (empty when within budget)."""
        out = []
        if fidelity["label_agreement"] < self.min_agreement:
            out.append(f"label agreement {fidelity['label_agreement']:.2%} < {self.min_agreement:.2%}")
        if fidelity["max_abs_dp"] > self.max_abs_dp:
            out.append(f"max |dP| {fidelity['max_abs_dp']:.4f} > {self.max_abs_dp:g}")
        if fidelity["mean_abs_dp"] > self.mean_abs_dp:
            out.append(f"mean |dP| {fidelity['mean_abs_dp']:.5f} > {self.mean_abs_dp:g}")
        return out

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def enforce(variant: str, fidelity: dict[str, Any], budget: FidelityBudget, *, where: str, strict: bool,
            log: Any) -> bool:
    """Log (loudly) or raise when ``fidelity`` misses ``budget``; return whether it was met."""
    misses = budget.misses(fidelity)
    if not misses:
        return True
    message = f"{variant} misses its fidelity budget on the {where} images: " + "; ".join(misses)
    if strict:
        raise FidelityBudgetError(message + " (--strict)")
    log("!! WARNING: " + message)
    return False
