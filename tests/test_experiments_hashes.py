"""Experiment 4's ring picture and comparison (pure: the ring is computed, not measured)."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import pytest

from experiments._load import uniform_ids
from experiments._settings import Settings
from experiments.balance import BalanceRun
from experiments.hashes import report4, ring_layout


def test_the_assignment_ring_explains_its_skew():
    ids = uniform_ids(5000, random.Random(0))
    lay = ring_layout("assignment", 3, ids)
    positions = [p * 512 for p, _ in lay["vnodes"]]
    # Phi(i, j) = i^2 + j^2 + 2j + 25 for i = 1..3, j = 0..8: all 27 in one arc, 26..114.
    assert len(positions) == 27 and min(positions) == 26 and max(positions) == 114
    # Replica 1 owns the wrap-around arc, the rest of the ring.
    assert lay["shares"][1] > 0.85 and sum(lay["shares"].values()) == pytest.approx(1)
    # H(i) = (i + 1)^2 + 16 mod 512 reaches only 87 of the 512 slots.
    assert lay["distinct_key_slots"] <= 87
    modulo = ring_layout("modulo", 3, ids)
    assert modulo["vnodes"] == lay["vnodes"] and modulo["distinct_key_slots"] > 400
    default = ring_layout("default", 3, ids)
    # The default's table: every replica owns a third of the entries, to within one.
    assert default["table"] and default["vnodes"] == []
    assert max(default["shares"].values()) - min(default["shares"].values()) <= 1 / 16411
    assert Counter(default["owners"]).keys() == {1, 2, 3}
    ring = ring_layout("ring", 3, ids)
    assert max(ring["shares"].values()) < 0.35 and ring["distinct_key_slots"] is None


def _run(hash_name: str, values: list[int]) -> BalanceRun:
    names = [f"server-{i}" for i in range(1, len(values) + 1)]
    return BalanceRun(hash_name, names, dict(zip(names, values, strict=True)), values, sum(values))


def test_report4_writes_its_plots_and_vnode_table(tmp_path: Path):
    s = Settings(out=tmp_path, requests=1000, progress=False)
    exp1 = [
        _run("assignment", [850, 50, 100]),
        _run("modulo", [890, 55, 55]),
        _run("default", [335, 330, 335]),
    ]
    exp2 = [
        *exp1,
        _run("assignment", [600, 100, 100, 200]),
        _run("default", [250] * 4),
        _run("modulo", [700, 100, 100, 100]),
    ]
    report = report4(s, exp1, exp2, uniform_ids(1000, random.Random(0)))
    assert report.headline["worst_max_over_mean"]["assignment"] == pytest.approx(2.55)
    assert report.headline["worst_max_over_mean"]["default"] == pytest.approx(1.005)
    with (tmp_path / "exp4_vnodes.csv").open() as f:
        vnodes = list(csv.DictReader(f))
    assert {r["hash"] for r in vnodes} == {"assignment", "modulo"} and len(vnodes) == 54
    for name in ("exp4_compare.png", "exp4_ring.png"):
        assert (tmp_path / name).stat().st_size > 10_000
