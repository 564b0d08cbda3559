"""Experiments 1, 2 and the Zipf runs on a small request count, against real balancers."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from experiments._settings import Settings
from experiments.balance import (
    experiment1,
    experiment2,
    experiment_zipf,
    random_placement,
    report1,
    report2,
    report_zipf,
)

PNG = b"\x89PNG\r\n\x1a\n"


def small(tmp_path: Path, **kw) -> Settings:
    return Settings(out=tmp_path, requests=300, concurrency=16, progress=False, **kw)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


async def test_experiment1_counts_plot_and_the_assignment_skew(tmp_path: Path):
    s = small(tmp_path, hashes=("assignment", "default"))
    runs = await experiment1(s)
    report = report1(s, runs)
    by_hash = {r.hash: r for r in runs}
    for run in runs:
        assert run.replicas == ["server-1", "server-2", "server-3"]
        assert run.answered == 300 and not run.errors and run.matches_ring
    # The assignment's functions send most ids to one replica; the default spreads them.
    assert by_hash["assignment"].max_over_mean > 2.0
    assert by_hash["default"].max_over_mean < 1.4
    counts = rows(tmp_path / "exp1_counts.csv")
    assert len(counts) == 6
    for h in ("assignment", "default"):
        mine = [r for r in counts if r["hash"] == h]
        assert sum(int(r["count"]) for r in mine) == 300
        assert [int(r["count"]) for r in mine] == by_hash[h].values
    assert (tmp_path / "exp1.png").read_bytes().startswith(PNG)
    assert "exp1.png" in report.files and report.headline["assignment"]["server-1"] > 150


async def test_experiment2_grows_by_add_and_records_the_spread(tmp_path: Path):
    s = small(tmp_path, hashes=("modulo",), sizes=(2, 3))
    runs = await experiment2(s)
    report2(s, runs)
    assert [r.n for r in runs] == [2, 3]
    assert runs[1].replicas[:2] == ["server-1", "server-2"]  # /add kept the first two
    assert all(r.answered == 300 and r.matches_ring for r in runs)
    spread = rows(tmp_path / "exp2_spread.csv")
    assert [int(r["N"]) for r in spread] == [2, 3]
    for r, run in zip(spread, runs, strict=True):
        assert int(r["min"]) <= float(r["mean"]) <= int(r["max"])
        assert float(r["max_over_mean"]) == pytest.approx(run.max_over_mean, abs=1e-3)
        assert float(r["mean"]) == pytest.approx(300 / run.n, abs=0.1)
    assert (tmp_path / "exp2.png").read_bytes().startswith(PNG)


def test_random_placement_is_the_perfect_hash_baseline():
    rng = random.Random(0)
    # One id carrying everything: all of it lands on one of 3 replicas, every time.
    assert set(random_placement(["1"] * 90, 3, 20, rng)) == {3.0}
    # Many equally popular ids: close to even.
    ids = [str(i) for i in range(30_000)]
    placements = random_placement(ids, 3, 20, rng)
    assert placements == sorted(placements) and 1.0 <= placements[-1] < 1.05


async def test_zipf_runs_record_the_hottest_id_and_the_baseline(tmp_path: Path):
    s = small(tmp_path, hashes=("default",))
    runs = await experiment_zipf(s)
    report_zipf(s, runs)
    assert [r.extra["exponent"] for r in runs] == [0.0, 0.8, 1.0, 1.2]
    assert all(r.answered == 300 for r in runs)
    shares = [r.extra["hottest_id_share"] for r in runs]
    assert shares == sorted(shares) and shares[-1] > 0.1
    for r in runs:
        assert r.max_over_mean >= r.extra["floor_max_over_mean"] - 1e-9
        assert 1.0 <= r.extra["perfect_hash_median"] <= r.extra["perfect_hash_p95"]
    assert len(rows(tmp_path / "zipf_spread.csv")) == 4
    assert (tmp_path / "zipf.png").read_bytes().startswith(PNG)
