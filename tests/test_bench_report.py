"""The bench's table: CPU per request, medians and per-round ratios, the issue's targets."""

from __future__ import annotations

import pytest

from bench.memory import MemoryResult
from bench.report import (
    Run,
    cpu_per_request_us,
    load_table,
    other_cpu_pct,
    summarize,
    verdicts,
)


def test_cpu_per_request() -> None:
    # 2 s of CPU (200 ticks at 100 Hz) over 100,000 requests: 20 µs each.
    assert cpu_per_request_us(200, 100_000, 100) == pytest.approx(20.0)
    assert cpu_per_request_us(3, 1000, 250) == pytest.approx(12.0)
    with pytest.raises(ValueError):
        cpu_per_request_us(5, 0, 100)


def test_other_load() -> None:
    # Over 10 s the machine was busy 1500 ticks (100 Hz), 1200 of them the bench's: 30%.
    assert other_cpu_pct(1500, 1200, 10.0, 100) == pytest.approx(30.0)
    assert other_cpu_pct(1190, 1200, 10.0, 100) == 0.0  # sampling skew never goes negative


def run(n: int, target: str, rps: float, p99_ms: float, cpu: float | None = None) -> Run:
    return Run(n, target, int(rps * 10), rps, p99_ms * 500, p99_ms * 1000, 0, cpu, 10.0 * n)


RUNS = [
    run(1, "direct", 10_000, 4.0),
    run(1, "haproxy", 9_000, 5.0, 14.0),
    run(1, "lbproxy", 4_500, 9.0, 40.0),
    # Round 2 ran under more background load: everything slower.
    run(2, "direct", 6_000, 8.0),
    run(2, "haproxy", 5_000, 9.0, 16.0),
    run(2, "lbproxy", 4_000, 10.0, 30.0),
    run(3, "direct", 9_000, 5.0),
    run(3, "haproxy", 8_000, 6.0, 15.0),
    run(3, "lbproxy", 6_400, 6.5, 20.0),
]


def test_summary_takes_medians_and_ratios_within_rounds() -> None:
    rows = {r.target: r for r in summarize(RUNS, ["direct", "haproxy", "nginx", "lbproxy"])}
    assert list(rows) == ["direct", "haproxy", "lbproxy"]  # nginx did not run
    lb = rows["lbproxy"]
    assert lb.rounds == 3
    assert lb.rps == 4_500
    assert lb.p99_ms == 9.0
    assert lb.cpu_us_per_request == 30.0
    # Per round vs HAProxy: 0.5, 0.8, 0.8 -> 0.8 (not 4500 / 8000 = 0.5625 of the medians).
    assert lb.vs_haproxy == pytest.approx(0.8)
    assert lb.vs_direct == pytest.approx(0.6667, abs=1e-4)  # 0.45, 0.667, 0.711
    assert lb.added_p99_ms == pytest.approx(2.0)  # +5, +2, +1.5
    d = rows["direct"]
    assert d.cpu_us_per_request is None
    assert d.added_p99_ms is None
    assert d.vs_direct == 1.0


def test_table_has_a_row_per_target() -> None:
    table = load_table(summarize(RUNS, ["direct", "haproxy", "lbproxy"]))
    lines = table.splitlines()
    assert len(lines) == 5
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[4:8] == ["balancer CPU µs/req", "CPU vs HAProxy", "vs direct", "vs HAProxy"]
    assert len(header) == len(lines[4].strip("|").split("|"))
    assert lines[2].startswith("| direct | 9,000 |")
    # CPU vs HAProxy per round: 40/14, 30/16, 20/15 -> 1.875.
    assert lines[4].endswith("| 30.0 | 1.88 | 0.67 | 0.80 | +2.00 | 0 | 20 |")


def test_verdicts_against_the_issue_targets() -> None:
    memory = [
        MemoryResult("upload 1024 MiB", 50_000, 70_000, ""),
        MemoryResult("idle 10000 connections", 50_000, 200_000, ""),
    ]
    got = {
        v.goal: v.word for v in verdicts(summarize(RUNS, ["direct", "haproxy", "lbproxy"]), memory)
    }
    assert got == {
        "requests/s >= 0.9 of HAProxy's": "FAIL",  # 0.8
        "CPU per request <= 1.25 x HAProxy's": "FAIL",  # 1.88
        "added p99 <= 1 ms over direct": "FAIL",  # +2
        "RSS growth < 30 MB: upload 1024 MiB": "PASS",  # 20,000 KiB = 20.5 MB
        "RSS growth < 200 MB: idle 10000 connections": "PASS",  # 153.6 MB
    }


def test_verdicts_without_measurements_are_not_passes() -> None:
    got = verdicts(summarize([run(1, "lbproxy", 100, 1.0, 5.0)], ["lbproxy"]), [])
    assert [v.word for v in got] == ["n/a", "n/a", "n/a"]


def test_workers_are_compared_with_haproxy_on_as_many_threads() -> None:
    runs = [
        *RUNS,
        run(1, "haproxy-2t", 12_000, 5.0, 15.0),
        run(1, "lbproxy-2w", 11_400, 5.5, 18.0),
    ]
    reference = {"lbproxy-2w": "haproxy-2t", "haproxy-2t": "haproxy-2t"}
    rows = {r.target: r for r in summarize(runs, ["haproxy", "lbproxy", "lbproxy-2w"], reference)}
    two = rows["lbproxy-2w"]
    assert two.vs_haproxy == pytest.approx(0.95)  # 11,400 / 12,000, not / haproxy's 9,000
    assert two.cpu_vs_haproxy == pytest.approx(1.2)
    got = {v.goal: v.word for v in verdicts(list(rows.values()), [])}
    assert got["workers: 2 requests/s >= 0.9 of HAProxy nbthread 2's"] == "PASS"
