"""tools/restart_gap.py's figures, from outcomes made up for the purpose (the measurement
itself runs against a real stack in tests/test_compose.py)."""

from __future__ import annotations

import pytest

from conftest import load_tool

gap = load_tool("restart_gap")


def test_failures_gap_and_recovery() -> None:
    o = gap.Outcome
    outcomes = [
        o(0.0, 0.1, "200"),
        o(0.2, 0.3, "200"),  # the last answer before the restart
        o(0.4, 0.4, "refused"),
        o(0.5, 0.6, "reset"),
        o(0.7, 0.7, "refused"),
        o(1.0, 1.3, "200"),  # served again
        o(1.4, 1.5, "200"),
        o(1.6, 1.6, "503"),
        o(1.7, 1.8, "200"),
    ]
    report = gap.summarize(outcomes, action_start=0.35, action_seconds=0.5)
    assert report.requests == 9
    assert report.failed == 4
    assert report.failures == {"refused": 2, "reset": 1, "503": 1}
    assert report.longest_gap == pytest.approx(1.0)  # 0.3 -> 1.3
    assert report.recovered_after == pytest.approx(1.8 - 0.35)  # after the last failure
    assert "failed 4" in report.text()


def test_nothing_failed() -> None:
    o = gap.Outcome
    report = gap.summarize([o(0.0, 0.1, "200"), o(0.5, 0.6, "200")], 0.2, 0.1)
    assert (report.failed, report.longest_gap, report.recovered_after) == (0, 0.0, None)
