"""Response shapes, for the OpenAPI document (``/openapi.json``, ``/docs``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["BatchItem", "Classification", "ErrorBody", "Health", "ServiceInfo"]


class Classification(BaseModel):
    label: str = Field(description="The decision: argmax, or the threshold rule on the positive label.")
    scores: dict[str, float] = Field(description="Probability of every label of the bundle (they sum to 1).")
    variant: str = Field(description="Bundle variant that produced the scores, e.g. 'int8'.")
    model: str | None = Field(description="The source model the bundle was exported from.")
    latency_ms: float = Field(
        description="Server time from the fully received body to the answer: decode, queue, model, scoring."
    )


class BatchItem(BaseModel):
    """One entry of a batch answer: a classification, or the error for that image."""

    source: str = Field(description="The uploaded file name (or '<part N>').")
    label: str | None = None
    scores: dict[str, float] | None = None
    variant: str | None = None
    model: str | None = None
    latency_ms: float | None = None
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
    threshold: float | None
    accepted_media_types: list[str]
    limits: dict[str, float]
