"""How hard the export searches for the int8 recipes' constants: ``deepfake-edge export --effort``.

Data only (no heavy imports), so the CLI can list the levels without the ``[export]`` extra.
Every level builds the same graphs (same speed); they differ in which smoothing alphas are
scored, on how many calibration images, and whether a second recipe redoes the search.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALPHAS", "DEFAULT_ALPHA", "DEFAULT_EFFORT", "EFFORTS", "Effort"]

DEFAULT_ALPHA = 0.5
ALPHAS: tuple[float, ...] = (0.3, 0.5, 0.65, 0.8)


@dataclass(frozen=True)
class Effort:
    name: str
    alphas: tuple[float, ...]   # smoothing alphas tried
    search_images: int | None   # calibration images each alpha is scored on (None: all of them)
    compare_rounding: bool      # score round-to-nearest on all images too and keep the better rounding
    reuse: bool                 # a second recipe takes the first one's alpha (and GPTQ weights) unscored
    summary: str                # for --help


EFFORTS: dict[str, Effort] = {e.name: e for e in (
    Effort("fast", (DEFAULT_ALPHA,), 0, compare_rounding=False, reuse=True,
           summary="no search: alpha 0.5 and GPTQ rounding, scored once for the fidelity budget"),
    # 0.65 was never chosen in any export measured (real-weights proxy, random base-512). 0.3 leaves more
    # of the activations' range in the activations and less in the weights, whose rounding is most of
    # the int8 error on real weights.
    Effort("default", (0.3, 0.5, 0.8), 20, compare_rounding=False, reuse=True,
           summary="alphas 0.3, 0.5 and 0.8 ranked on 20 of the calibration images, the winner GPTQ-rounded and "
                   "scored on all; int8-ov reuses int8's choice"),
    Effort("thorough", ALPHAS, None, compare_rounding=True, reuse=False,
           summary="every candidate (alphas, GPTQ and round-to-nearest) scored on every calibration image, "
                   "each recipe searching on its own engine"),
)}
DEFAULT_EFFORT = "default"
