"""Key movement measured through a real balancer on /add and /rm."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from experiments._settings import Settings
from experiments.movement import compare, experiment_movement, report_movement


def test_compare_counts_moves_and_moves_between_others():
    before = {"1": "a", "2": "a", "3": "b", "4": "c", "5": "c"}
    after = {"1": "d", "2": "a", "3": "c", "4": "c"}  # id 5 failed the second time
    step = compare("h", "add", "d", ["a", "b", "c"], ["a", "b", "c", "d"], before, after, 1)
    assert step.compared == 4 and step.failed == 1
    assert step.moved == pytest.approx(2 / 4)  # 1: a->d, 3: b->c
    assert step.between_others == pytest.approx(1 / 4)  # 3: b->c, no scaling asked for it
    assert step.own_share == pytest.approx(1 / 4) and step.ideal == pytest.approx(1 / 4)
    rm = compare("h", "rm", "b", ["a", "b", "c"], ["a", "c"], before, after, 0)
    assert rm.ideal == pytest.approx(1 / 3) and rm.own_share == pytest.approx(1 / 4)


async def test_movement_through_the_balancer(tmp_path: Path):
    s = Settings(
        out=tmp_path,
        requests=300,
        concurrency=16,
        progress=False,
        hashes=("default",),
        sizes=(2, 3),
    )
    steps = await experiment_movement(s)
    report_movement(s, steps)
    assert [(st.change, st.before, st.after) for st in steps] == [("add", 2, 3), ("rm", 3, 2)]
    for st in steps:
        assert st.compared == 300 and st.failed == 0
        assert 0 <= st.between_others <= st.moved <= 1
        # A consistent ring moves only the keys of the replica added or removed...
        assert st.between_others == 0 and st.moved == pytest.approx(st.own_share)
        # ... and a balanced one about 1/N of them.
        assert st.moved == pytest.approx(1 / 3, abs=0.12)
    # /rm took away one that was there (chosen by the seeded generator).
    assert steps[1].replica in {"server-1", "server-2", steps[0].replica}
    with (tmp_path / "movement.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and all(0 <= float(r["moved"]) <= 1 for r in table)
    assert (tmp_path / "movement.png").stat().st_size > 10_000
