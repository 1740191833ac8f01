"""``?evidence=1`` on the classify endpoints: the evidence map's grid and hotspots in the answer.

Such an image is decoded and run on its own in the decode pool: the batcher fetches
the logits alone, so requests without evidence pay nothing for it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..detector import Detector
from ..errors import UnsupportedBundleError
from ..evidence import evidence_fields
from ..results import Failure, Prediction
from .limits import ServiceError

__all__ = ["EVIDENCE_QUERY", "classify_with_evidence", "evidence_answer", "wants_evidence"]

_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}

# The query parameter, for the OpenAPI document (the handlers read it by hand, like their bodies).
EVIDENCE_QUERY = {"parameters": [{
    "name": "evidence", "in": "query", "required": False, "schema": {"type": "string", "enum": ["0", "1"]},
    "description": "1: also return the evidence map (`evidence.grid`, margins toward the positive label per "
                   "patch, 3 decimals, upright) and its top `evidence.hotspots` (boxes in the original "
                   "image's pixels). Needs a bundle exported with `patch_logits` (else 400 evidence_unavailable).",
}]}


def wants_evidence(request: Request, detector: Detector) -> bool:
    """Whether the request asks for evidence; refused up front when the bundle cannot give it."""
    value = request.query_params.get("evidence", "0").strip().lower()
    if value not in _VALUES:
        raise ServiceError(400, "bad_request", f"evidence={value!r}: expected 1 or 0")
    if not _VALUES[value]:
        return False
    try:
        detector.require_evidence()
    except UnsupportedBundleError as exc:
        raise ServiceError(400, "evidence_unavailable", str(exc)) from exc
    return True


def classify_with_evidence(detector: Detector, data: bytes, source: str) -> Prediction | Failure:
    """Decode, run and score one upload with its evidence map (blocking: run it in a worker thread)."""
    tensor, placement = detector.decode_placed(data, name=source)
    logits, maps = detector.logits_and_evidence(tensor[None])
    return detector.results([source], logits, maps, [placement])[0]


def evidence_answer(prediction: Prediction) -> dict[str, Any]:
    """The ``evidence`` member of an answer: the upright grid and the hotspots."""
    return evidence_fields(prediction, grid=True)
