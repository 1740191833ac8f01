"""Response shapes, for the OpenAPI document (``/openapi.json``, ``/docs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "AUTH_RESPONSES", "BATCH_BODY", "ERROR_RESPONSES", "SINGLE_BODY", "BatchItem", "Classification", "ErrorBody",
    "EvidenceBody", "Health", "HotspotBody", "ServiceInfo",
]


class HotspotBody(BaseModel):
    box: list[float] = Field(description="[x0, y0, x1, y1] in the original image's pixels (upright, EXIF applied).")
    margin: float = Field(description="The cell's margin toward the positive label (log-odds for two labels).")


class EvidenceBody(BaseModel):
    """Only with ``?evidence=1``: where in the image the decision comes from."""

    grid: list[list[float]] = Field(description="Margin toward the positive label per patch, a list of rows of "
                                                "columns, upright, 3 decimals; its mean is the image's margin.")
    hotspots: list[HotspotBody] = Field(description="The cells leaning most toward the positive label, largest first.")


class Classification(BaseModel):
    label: str = Field(description="The decision: argmax, or the threshold rule on the manipulation score.")
    scores: dict[str, float] = Field(description="Probability of every label of the bundle (they sum to 1).")
    score: float | None = Field(default=None, description=(
        "The manipulation score, by the bundle's rule (GET /v1/info 'score'): P(positive label) or "
        "1 - P(real label). Absent for bundles exported without a rule."))
    variant: str = Field(description="Bundle variant that produced the scores, e.g. 'int8'.")
    model: str | None = Field(description="The source model the bundle was exported from.")
    latency_ms: float = Field(
        description="Server time from the fully received body to the answer: decode, queue, model, scoring."
    )
    evidence: EvidenceBody | None = Field(default=None, description="Only with ?evidence=1.")


class BatchItem(BaseModel):
    """One entry of a batch answer: a classification, or the error for that image."""

    source: str = Field(description="The uploaded file name (or '<part N>').")
    label: str | None = None
    scores: dict[str, float] | None = None
    score: float | None = None
    variant: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    evidence: EvidenceBody | None = None
    error: str | None = Field(default=None, description="Error code for this image, e.g. 'invalid_image'.")
    type: str | None = Field(default=None, description="The runtime's exception class, e.g. 'ImageDecodeError'.")
    message: str | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="Stable error code (also the request metric's outcome label).")
    message: str = Field(description="What was wrong and what was expected.")
    type: str | None = Field(default=None, description="For image errors: the runtime's exception class.")


class Health(BaseModel):
    status: str


class ServiceInfo(BaseModel):
    model: str | None
    variant: str
    labels: list[str]
    positive_label: str | None
    score: str | None = Field(default=None, description="The manipulation score's formula, e.g. 'P(fake)' or "
                                                        "'1 - P(Real)'; null for a bundle without a rule.")
    threshold: float | None
    evidence: bool = Field(description="Whether ?evidence=1 is available (the bundle has patch_logits).")
    accepted_media_types: list[str]
    limits: dict[str, float]


# The request bodies are read by hand (streamed with a size cap), so FastAPI
# cannot infer them; these describe them in the OpenAPI document.
_BINARY = {"type": "string", "format": "binary"}
SINGLE_BODY = {"requestBody": {"required": True, "content": {
    "image/*": {"schema": _BINARY},
    "application/octet-stream": {"schema": _BINARY},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": _BINARY}, "required": ["file"]}},
}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "properties": {"files": {"type": "array", "items": _BINARY}}, "required": ["files"],
    }},
}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody,
          "description": "Not an image, a corrupt image, or a malformed upload (invalid_image, bad_request)."},
    408: {"model": ErrorBody, "description": "The body did not arrive within the read timeout (read_timeout)."},
    413: {"model": ErrorBody,
          "description": "Body over the size limit, image over the pixel limit, or too many images."},
    415: {"model": ErrorBody, "description": "Unsupported Content-Type (unsupported_media_type)."},
    503: {"model": ErrorBody, "description": "Queue full, not ready yet, or shutting down; see Retry-After."},
    504: {"model": ErrorBody, "description": "The per-request timeout passed (timeout)."},
}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or a wrong one (unauthorized); see WWW-Authenticate."},
    429: {"model": ErrorBody,
          "description": "Too many wrong API keys from this address (too_many_failures); see Retry-After."},
}
