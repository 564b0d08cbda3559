"""Experiment 3 on a real balancer: the endpoint checks and a replica killed under load."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from experiments._balancer import running_balancer
from experiments._settings import Settings
from experiments.recovery import (
    CASES,
    Case,
    KillRun,
    check_case,
    check_endpoints,
    kill_under_load,
    report3,
)


async def test_a_wrong_expectation_is_caught(tmp_path: Path):
    async with running_balancer(tmp_path, "default", 1) as b:
        wrong = await check_case(b, Case("wrong", "GET", "/other", message="<Error> something"))
        wrong_status = await check_case(b, Case("wrong", "GET", "/rep", status=404))
        said = await check_case(b, Case("x", "POST", "/add", {"n": 0}, contains=("banana",)))
    assert not wrong.ok and any("expected '<Error> something'" in p for p in wrong.problems)
    assert not wrong_status.ok and "status 200, expected 404" in wrong_status.problems
    assert not said.ok and said.problems == ("message does not say ['banana']",)


async def test_endpoints_then_a_replica_killed_under_load(tmp_path: Path):
    s = Settings(out=tmp_path, concurrency=16, progress=False, kills=1)
    async with running_balancer(s.workdir, "default", 3) as b:
        # The cases must not count on server-1 being there (a /rm in them removes one
        # replica at random): here it is gone before they start.
        await b.rm(1, ["server-1"])
        assert await b.add(1, ["web-9"]) == ["server-2", "server-3", "web-9"]
        results = await check_endpoints(b)
        run: KillRun = await kill_under_load(b, s, 1, pool_size=300, lead_in=0.5, gap=1.0)
        after = await b.rep()
        running = await b.replicas.running()
    # Every case as the contract (docs/api.md) says, and no error changed the replica set.
    assert [(r.case.name, r.problems) for r in results if not r.ok] == []
    assert len(results) == len(CASES)
    (kill,) = run.kills
    assert kill.victim not in after and kill.replacement in after and len(after) == 3
    assert set(after) <= set(running)
    assert kill.detected is not None and 0 <= kill.detected < 10
    assert kill.serving is not None and kill.detected <= kill.serving < 20
    assert kill.logged_down is not None and kill.logged_up is not None
    assert kill.logged_down <= kill.logged_up
    # The replacement took over the victim's slot: it answers exactly the victim's keys.
    assert kill.keys_back == 1.0
    assert kill.victim_requests >= kill.rerouted + kill.victim_answers
    assert run.answers and run.samples
    report = report3(s, results, run)
    timeline = json.loads((tmp_path / "exp3_timeline.json").read_text())
    assert sum(r["answered"] + r["failed"] for r in timeline) == len(run.answers)
    assert sum(r["rerouted"] for r in timeline) == kill.rerouted
    assert min(r["serving"] for r in timeline if r["serving"] is not None) == 2
    with (tmp_path / "exp3_kills.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["victim"] == kill.victim and float(row["serving_s"]) > 0
    with (tmp_path / "exp3_endpoints.csv").open() as f:
        assert [r["ok"] for r in csv.DictReader(f)] == ["True"] * len(CASES)
    assert (tmp_path / "exp3_timeline.png").stat().st_size > 10_000
    assert report.headline["kills"][0]["replacement"] == kill.replacement
    assert report.headline["endpoint_cases_passed"] == f"{len(CASES)}/{len(CASES)}"
