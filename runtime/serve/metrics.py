"""Prometheus metrics of one service instance, in its own registry.

A per-app ``CollectorRegistry`` (not prometheus_client's global one) lets a
process hold several apps, as the tests do, without duplicate-metric errors.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

# Request latency spans a tiny test model (~1 ms) to base-512 fp32 under load (seconds).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServiceMetrics:
    """The counters, histograms and gauges the service exports at ``/metrics``."""

    def __init__(self, *, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "deepfake_edge_requests", "HTTP requests to the API, by endpoint and outcome (ok or the error code).",
            ["endpoint", "outcome"], registry=self.registry,
        )
        self.latency = Histogram(
            "deepfake_edge_request_latency_seconds", "Time from the request's arrival to its answer.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.images = Counter(
            "deepfake_edge_images", "Images classified (ok) or refused (the error code).",
            ["outcome"], registry=self.registry,
        )
        self.batch_size = Histogram(
            "deepfake_edge_batch_size", "Images per model call (dynamic batching).",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.model_latency = Histogram(
            "deepfake_edge_model_latency_seconds", "Duration of one model call (a whole batch).",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "deepfake_edge_queue_depth", "Decoded images waiting for a model call.", registry=self.registry,
        )
        self.queue_depth.set_function(queue_depth)
        self.in_flight = Gauge(
            "deepfake_edge_in_flight_images",
            "Images admitted and not yet answered (decoding, queued or in the model); bounded by max_queue.",
            registry=self.registry,
        )
        self.in_flight.set_function(in_flight)
        self.auth_failures = Counter(
            "deepfake_edge_auth_failures", "Requests refused by authentication: missing or wrong key, "
            "or a client locked out after too many wrong keys.", ["reason"], registry=self.registry,
        )
        self.model_info = Info("deepfake_edge_model", "The bundle and variant being served.", registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        """The batcher's ``on_batch`` hook (called from the model thread)."""
        self.batch_size.observe(size)
        self.model_latency.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
