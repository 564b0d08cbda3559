"""The load generator against a real balancer with real replica processes."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from experiments._balancer import running_balancer
from experiments._load import replica_of, run_load, uniform_ids, zipf_ids
from experiments.ring_stats import ring_counts


def test_uniform_ids_are_six_digit_and_seeded():
    a = uniform_ids(1000, random.Random(1))
    assert a == uniform_ids(1000, random.Random(1)) != uniform_ids(1000, random.Random(2))
    assert all(len(i) == 6 and i.isdigit() and i[0] != "0" for i in a)


def test_zipf_ids_skew_grows_with_the_exponent():
    def hottest(exponent: float) -> float:
        ids = zipf_ids(20_000, 1000, exponent, random.Random(3))
        assert len(ids) == 20_000 and len(set(ids)) <= 1000
        return Counter(ids).most_common(1)[0][1] / len(ids)

    flat, mild, steep = hottest(0.0), hottest(0.8), hottest(1.2)
    assert flat < 0.004 < mild < steep
    # s = 1.2 over 1000 ids: the hottest gets 1 / sum(r^-1.2) of the draws, about 26%.
    assert steep == pytest.approx(1 / sum(r**-1.2 for r in range(1, 1001)), abs=0.02)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"message": "Hello from Server: S5", "status": "successful"}', ("S5", None)),
        (400, b'{"message": "<Error> nope", "status": "failure"}', (None, "HTTP 400")),
        (200, b"not json", (None, "not a replica's answer")),
        (200, b'{"message": {"N": 3}}', (None, "not a replica's answer")),
        (200, b'{"message": "Hi from S5"}', (None, "not a replica's answer")),
    ],
)
def test_replica_is_read_from_the_answer(status, body, expected):
    assert replica_of(status, body) == expected


async def test_counts_come_from_the_answers_and_match_the_ring(tmp_path: Path):
    ids = uniform_ids(400, random.Random(7))
    ids += ids[:50]  # some ids twice: the same id must reach the same replica
    async with running_balancer(tmp_path, "assignment", 3) as b:
        result = await run_load(b.url + "/home", ids, concurrency=16, progress=False)
        bad = await run_load(b.url + "/other", ids[:20], concurrency=4, progress=False)
    assert len(result.answers) == len(ids) and result.failed == 0 and not result.not_sent
    counts = result.counts
    assert sum(counts.values()) == len(ids)
    # Per replica, exactly what the assignment's ring gives slots 1..3 for these ids.
    predicted = ring_counts("assignment", 3, ids)
    assert [counts[f"server-{k}"] for k in (1, 2, 3)] == predicted
    assert counts["server-1"] > len(ids) / 2  # the assignment's known skew
    seen: dict[str, set[str]] = {}
    for a in result.answers:
        seen.setdefault(a.key, set()).add(a.replica or "")
    assert all(len(v) == 1 for v in seen.values())
    assert sorted({a.end >= a.start >= 0 for a in result.answers}) == [True]
    # Errors are counted, not raised: a path the replicas do not serve is the contract's 400.
    assert bad.errors == Counter({"HTTP 400": 20}) and not bad.counts


async def test_connection_errors_are_recorded(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run_load(
        f"http://127.0.0.1:{port}/home", ["123456"] * 5, concurrency=2, progress=False
    )
    assert result.failed == 5 and set(result.errors) == {"ClientConnectorError"}


async def test_load_is_bounded_in_time():
    from aiohttp import web

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    app = web.Application()
    app.router.add_get("/home", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        endless = (str(100_000 + i) for i in range(10**6))
        started = time.monotonic()
        result = await run_load(
            f"http://127.0.0.1:{port}/home",
            endless,
            total=10**6,
            concurrency=4,
            time_limit=0.5,
            progress=False,
        )
    finally:
        await runner.cleanup()
    assert time.monotonic() - started < 5
    assert result.cut == 4 and not result.answers and result.not_sent == 10**6 - 4
