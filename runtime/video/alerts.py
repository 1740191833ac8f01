"""Live alerts: a K-of-N rule over the sampled frames' scores, as a pure state machine.

An alert starts when at least ``k`` of the last ``n`` sampled frames score at or
over the threshold, and ends when fewer than ``k`` of the last ``n`` do. The
window is the hysteresis: starting takes ``k`` high frames, ending takes
``n - k + 1`` low ones, so one noisy frame neither starts nor (with ``k < n``)
ends an alert. An alert spans from the first high frame of the window that
started it to the last high frame before it ended.
"""

from __future__ import annotations

import argparse
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from ..evidence import Hotspot
from .evidence import PeakFrame

__all__ = ["DEFAULT_RULE", "Alert", "AlertRule", "AlertTracker", "alert_rule"]


@dataclass(frozen=True)
class AlertRule:
    """``k`` of the last ``n`` sampled frames at or over ``threshold``."""

    k: int
    n: int
    threshold: float

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"alert rule K/N needs 1 <= K <= N, got {self.k}/{self.n}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"alert threshold must be within [0, 1], got {self.threshold}")


#: 3 of the last 5 sampled frames: at the default 1 frame/s, an alert needs 3 s of evidence.
DEFAULT_RULE = (3, 5)


def alert_rule(text: str) -> tuple[int, int]:
    """The argument type of ``--alert K/N``."""
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N (e.g. 3/5), got {text!r}")
    return k, n


@dataclass(frozen=True)
class Alert:
    """One alert event. ``event`` is "start" or "end"; ``end`` is None while the alert is open.

    ``frames``: sampled frames from ``start`` to the last one seen (start) or to ``end``;
    ``high_frames``: those at or over the threshold; ``peak_score`` at ``peak_time``.
    ``reason`` (end only): "cleared" when the rule stopped holding, "stream-end" when the
    source stopped first.
    """

    source: str
    event: Literal["start", "end"]
    id: int
    start: float
    end: float | None
    peak_score: float
    peak_time: float
    frames: int
    high_frames: int
    rule: str
    reason: str | None = None
    # With evidence: the peak frame's hotspots (boxes in its pixels, margins toward the positive label).
    hotspots: tuple[Hotspot, ...] | None = None
    peak_frame: PeakFrame | None = field(default=None, repr=False, compare=False)  # its image, for an overlay

    def to_dict(self) -> dict[str, object]:
        record: dict[str, object] = {
            "source": self.source, "alert": self.event, "id": self.id, "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3), "peak_score": self.peak_score,
            "peak_time": round(self.peak_time, 3), "frames": self.frames, "high_frames": self.high_frames,
            "rule": self.rule,
        }
        if self.reason is not None:
            record["reason"] = self.reason
        if self.hotspots is not None:
            record["hotspots"] = [h.to_dict() for h in self.hotspots]
        return record


@dataclass
class _Open:
    id: int
    start: float
    last_high: float
    peak_score: float
    peak_time: float
    frames: int  # up to and including the last high frame
    high_frames: int
    since_last_high: int = 0  # frames after the last high one (not part of the alert unless another high comes)


@dataclass
class AlertTracker:
    """Feed it each sampled frame's (time, score) in time order; it returns the alert events.

    >>> t = AlertTracker("cam", AlertRule(2, 3, 0.5))
    >>> events = [e for i, s in enumerate([0.9, 0.1, 0.8, 0.1, 0.2]) for e in t.update(float(i), s)]
    >>> [(e.event, e.start, e.end, e.frames) for e in events]
    [('start', 0.0, None, 3), ('end', 0.0, 2.0, 3)]
    """

    source: str
    rule: AlertRule
    window: deque[tuple[float, float]] = field(default_factory=deque)
    alerts: int = 0
    _open: _Open | None = None

    @property
    def active(self) -> bool:
        return self._open is not None

    def _high(self, score: float) -> bool:
        return score >= self.rule.threshold

    def update(self, time_s: float, score: float) -> list[Alert]:
        self.window.append((time_s, score))
        if len(self.window) > self.rule.n:
            self.window.popleft()
        highs = [(t, s) for t, s in self.window if self._high(s)]
        current = self._open
        if current is None:
            if len(highs) < self.rule.k:
                return []
            peak_time, peak = max(highs, key=lambda item: item[1])
            first = highs[0][0]
            frames = sum(1 for t, _ in self.window if t >= first)
            self.alerts += 1
            self._open = _Open(self.alerts, first, time_s, peak, peak_time, frames, len(highs))
            return [self._event("start", self._open)]
        if self._high(score):
            current.frames += current.since_last_high + 1
            current.since_last_high = 0
            current.high_frames += 1
            current.last_high = time_s
            if score > current.peak_score:
                current.peak_score, current.peak_time = score, time_s
        else:
            current.since_last_high += 1
        if len(highs) >= self.rule.k:
            return []
        return [self._finish("cleared")]

    def close(self) -> list[Alert]:
        """End an open alert because the source stopped (the last event of a source)."""
        return [self._finish("stream-end")] if self._open is not None else []

    def _finish(self, reason: str) -> Alert:
        assert self._open is not None
        event = self._event("end", self._open, reason)
        self._open = None
        return event

    def _event(self, kind: Literal["start", "end"], state: _Open, reason: str | None = None) -> Alert:
        return Alert(
            source=self.source, event=kind, id=state.id, start=state.start,
            end=state.last_high if kind == "end" else None, peak_score=state.peak_score,
            peak_time=state.peak_time, frames=state.frames, high_frames=state.high_frames,
            rule=f"{self.rule.k}/{self.rule.n}>={self.rule.threshold:g}", reason=reason,
        )
