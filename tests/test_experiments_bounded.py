"""The bounded-load experiment (real balancers, real slow replicas), the simulation and the
ring-design comparison, on small inputs."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from experiments import bounded_sim, ring_designs
from experiments._load import Answer, LoadResult, zipf_ids
from experiments._settings import Settings
from experiments.bounded import experiment_bounded, report_bounded, summarize
from experiments.ring_stats import ring_owners
from lbproxy import LoadBound

PNG = b"\x89PNG\r\n\x1a\n"


def test_summarize_counts_answers_in_flight_and_keys_away_from_home() -> None:
    names = ["server-1", "server-2", "server-3"]
    ids = ["100001", "100002", "100003", "100004"]
    home = [names[s - 1] for s in ring_owners("default", [1, 2, 3], ids)]
    away = next(n for n in names if n != home[3])
    answers = [
        Answer(ids[0], 0, 1, 200, home[0], None, 2),
        Answer(ids[1], 0, 1, 200, home[1], None, 4),
        Answer(ids[2], 0, 1, None, None, "TimeoutError"),
        Answer(ids[3], 0, 1, 200, away, None, 1),
    ]
    run = summarize(1.25, 1.2, names, ids, LoadResult(answers=answers))
    assert run.left_home == pytest.approx(1 / 3)
    assert sum(run.counts.values()) == 3 and run.errors == {"TimeoutError": 1}
    seen = {n: [] for n in names}
    for a in answers:
        if a.replica:
            seen[a.replica].append(a.in_flight)
    for n in names:
        assert run.in_flight_peak[n] == max(seen[n], default=0)


async def test_bounded_runs_through_balancers_with_slow_replicas(tmp_path: Path) -> None:
    s = Settings(out=tmp_path, requests=240, concurrency=24, progress=False)
    runs = await experiment_bounded(s, factors=(None, 1.1), exponents=(1.2,))
    report = report_bounded(s, runs)
    off, tight = runs
    for r in runs:
        assert r.replicas == ["server-1", "server-2", "server-3"]
        assert sum(r.values) == 240 and not r.errors
        # Every answer came from the slow replica, which says how busy it was.
        assert all(v > 0 for v in r.in_flight_peak.values())
    # Off: every key on its own replica. On: some leave it, and the busiest answers less.
    assert off.left_home == 0
    assert tight.left_home > 0
    assert tight.max_over_mean < off.max_over_mean
    with (tmp_path / "bounded.csv").open() as f:
        assert [row["balance_factor"] for row in csv.DictReader(f)] == ["off", "1.1"]
    assert (tmp_path / "bounded.png").read_bytes().startswith(PNG)
    assert "away from home" in report.console


def test_simulation_keeps_every_replica_within_its_cap() -> None:
    keys = zipf_ids(3000, 1000, 1.2, random.Random(1))
    off = bounded_sim.simulate(3, keys, None, bounded_sim.stride_order, clients=32)
    on = bounded_sim.simulate(3, keys, 1.25, bounded_sim.stride_order, clients=32)
    assert off[2] == 0 and on[2] > 0
    assert max(on[0]) < max(off[0])
    # With 32 in flight the cap is ceil(1.25 x 32 / 3) = 14: no replica averages above it.
    assert max(on[1]) <= LoadBound(1.25, [1, 2, 3]).cap(1, 31)


def test_ring_designs_prints_its_tables(capsys: pytest.CaptureFixture[str]) -> None:
    ring_designs.main(["--sizes", "3", "--keys", "3000", "--rounds", "1", "--designs", "maglev"])
    out = capsys.readouterr().out
    assert "| maglev 16411 (default) | 3 |" in out and "| maglev 65537 | 3 |" in out
    assert "ring (16384" not in out.split("Where one")[0]
    assert "| maglev: stride from the key (lbproxy) |" in out
