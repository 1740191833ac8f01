"""The K-of-N alert state machine, against a brute-force reading of its definition."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepfake_edge.video.alerts import Alert, AlertRule, AlertTracker, alert_rule


def feed(tracker: AlertTracker, scores: list[float]) -> list[Alert]:
    events = [e for i, s in enumerate(scores) for e in tracker.update(float(i), s)]
    return events + tracker.close()


def reference(scores: list[float], k: int, n: int, threshold: float) -> list[tuple[float, float, float, int, int]]:
    """Alerts as (start, end, peak, frames, high frames), straight from the definition: frame i is
    in alert iff >= k of frames i-n+1..i are high; an alert spans its first window's first high
    frame to its last high frame."""
    high = [s >= threshold for s in scores]
    active = [sum(high[max(0, i - n + 1):i + 1]) >= k for i in range(len(scores))]
    alerts = []
    i = 0
    while i < len(scores):
        if not active[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(scores) and active[j + 1]:
            j += 1
        first = next(t for t in range(max(0, i - n + 1), i + 1) if high[t])
        last = max(t for t in range(first, j + 1) if high[t])
        members = [t for t in range(first, last + 1) if high[t]]
        alerts.append((float(first), float(last), max(scores[t] for t in members), last - first + 1, len(members)))
        i = j + 1
    return alerts


def test_one_noisy_frame_neither_starts_nor_ends_an_alert() -> None:
    tracker = AlertTracker("cam", AlertRule(3, 5, 0.5))
    assert feed(tracker, [0.1, 0.9, 0.1, 0.1, 0.1]) == []  # one high frame: no alert
    tracker = AlertTracker("cam", AlertRule(3, 5, 0.5))
    events = feed(tracker, [0.9, 0.8, 0.95, 0.2, 0.9, 0.9, 0.1, 0.1, 0.1])
    assert [(e.event, e.reason) for e in events] == [("start", None), ("end", "cleared")]
    start, end = events
    assert (start.start, start.end, start.frames, start.high_frames) == (0.0, None, 3, 3)
    # the low frame at 3 did not end it; three low frames (n - k + 1) did
    assert (end.start, end.end, end.frames, end.high_frames) == (0.0, 5.0, 6, 5)
    assert (end.peak_score, end.peak_time) == (0.95, 2.0)
    assert end.to_dict()["alert"] == "end" and end.to_dict()["rule"] == "3/5>=0.5"


def test_an_open_alert_ends_with_the_stream() -> None:
    tracker = AlertTracker("cam", AlertRule(2, 3, 0.5))
    events = feed(tracker, [0.6, 0.7, 0.5])  # 0.5 is at the threshold: high
    assert [(e.event, e.reason, e.end, e.high_frames) for e in events] == [
        ("start", None, None, 2), ("end", "stream-end", 2.0, 3)]


@given(
    scores=st.lists(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]), max_size=40),
    rule=st.tuples(st.integers(1, 6), st.integers(0, 5)).map(lambda kn: (kn[0], kn[0] + kn[1])),
)
def test_matches_the_definition(scores: list[float], rule: tuple[int, int]) -> None:
    k, n = rule
    events = feed(AlertTracker("cam", AlertRule(k, n, 0.5)), scores)
    starts, ends = events[::2], events[1::2]
    assert all(e.event == "start" for e in starts) and all(e.event == "end" for e in ends)
    assert len(starts) == len(ends)
    got = [(e.start, e.end, e.peak_score, e.frames, e.high_frames) for e in ends]
    assert got == reference(scores, k, n, 0.5)
    assert [e.id for e in ends] == list(range(1, len(ends) + 1))


@pytest.mark.parametrize("text", ["3", "0/5", "6/5", "a/b", "3/", "/5", "-1/2"])
def test_bad_rules_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="K/N"):
        alert_rule(text)
    assert alert_rule("3/5") == (3, 5)
    with pytest.raises(ValueError, match="K <= N"):
        AlertRule(4, 3, 0.5)


@pytest.mark.parametrize(("option", "value"), [("--alert", "5/3"), ("--mqtt", "mqtt://h/#"),
                                               ("--reconnect-attempts", "-1"), ("--reconnect-delay", "0")])
def test_live_options_refuse_bad_values(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from deepfake_edge.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["scan", "bundle", "rtsp://cam/1", option, value])
    assert exit_info.value.code == 2 and option in capsys.readouterr().err
