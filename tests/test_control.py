"""Changing the replicas while requests and other changes are under way: /rm and scale-downs
drain (no request in flight is cut, no new one reaches a leaving replica), /add answers the
truth at once when a concurrent /rm or a shutdown overtakes it. Real balancers, real replica
processes (``tests/slow_replica.py`` for requests that stay in flight), real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import PY, admin_url, eventually, pid_alive, pids_of_children, url
from lbproxy import BackendError, Server, parse_config
from lbproxy._pool import Replica, State
from lbproxy.backends import ProcessBackend

SLOW_REPLICA = [PY, str(Path(__file__).with_name("slow_replica.py"))]
#: A replica that never answers its heartbeat: an /add of it stays waiting.
SILENT_REPLICA = [PY, "-c", "import time; time.sleep(120)"]
LONG = aiohttp.ClientTimeout(total=60)


async def call(
    http: aiohttp.ClientSession, server: Server, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    async with http.request(method, url(server, path), data=data, timeout=LONG) as resp:
        return resp.status, await resp.json()


def _all_up(server: Server, n: int) -> bool:
    replicas = list(server.pool.replicas.values())
    return len(replicas) == n and all(r.state is State.UP for r in replicas)


def _pid(server: Server, replica: Replica) -> int:
    assert isinstance(server.backend, ProcessBackend) and replica.handle is not None
    pid = server.backend.pid(replica.handle)
    assert pid is not None
    return pid


def _keys_of(server: Server, slot: int, count: int) -> list[str]:
    ring = server.pool.ring
    keys = [str(k) for k in range(100_000, 120_000) if ring.lookup(str(k)) == slot]
    assert len(keys) >= count
    return keys[:count]


async def _get(http: aiohttp.ClientSession, server: Server, path: str, key: str) -> tuple[int, str]:
    """GET ``path`` with request id ``key``: (status, replica that answered or the error)."""
    try:
        async with http.get(url(server, path), headers={"X-Request-Id": key}, timeout=LONG) as r:
            body = await r.json()
            return r.status, body["message"].removeprefix("Hello from Server: ")
    except aiohttp.ClientError as e:
        return -1, repr(e)


async def _slow_balancer(balancer: Any, **replicas: Any) -> Server:
    server = await balancer(
        {"replicas": {"count": 2, "process": {"command": SLOW_REPLICA}, **replicas}}
    )
    await eventually(lambda: _all_up(server, 2), timeout=30)
    return server


async def _in_flight_on(
    http: aiohttp.ClientSession, server: Server, replica: Replica, n: int, seconds: float
) -> tuple[list[str], list[asyncio.Future[tuple[int, str]]]]:
    """``n`` requests to /slow that ``replica`` is serving now, and ids of more of its keys."""
    keys = _keys_of(server, replica.slot, n + 5)
    slow = [asyncio.ensure_future(_get(http, server, f"/slow?s={seconds}", k)) for k in keys[:n]]
    await eventually(lambda: replica.in_flight == n, timeout=10, interval=0.01)
    return keys[n:], slow


# -- drain ---------------------------------------------------------------------------------


async def test_rm_drains_requests_in_flight_and_sends_no_new_ones(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await _slow_balancer(balancer)
    victim, stays = server.pool.replicas[2], server.pool.replicas[1]
    name, pid = victim.hostname, _pid(server, victim)
    more_keys, slow = await _in_flight_on(http, server, victim, 6, seconds=3)

    status, body = await call(http, server, "DELETE", "/rm", {"n": 1, "hostnames": [name]})
    # /rm answered while its replica still serves them, listing it no more.
    assert not any(f.done() for f in slow)
    assert status == 200, body
    assert body["message"] == {"N": 1, "replicas": [stays.hostname]}
    status, body = await call(http, server, "GET", "/rep")
    assert body["message"] == {"N": 1, "replicas": [stays.hostname]}
    assert victim.state is State.DRAINING
    assert victim.slot not in server.pool.ring.replicas
    assert pid_alive(pid)
    # /status shows it leaving, with what it still has.
    async with http.get(admin_url(server, "/status")) as resp:
        report = (await resp.json())["message"]
    assert report["N"] == 1 and report["draining"] == 1
    assert [(r["hostname"], r["state"], r["in_flight"]) for r in report["replicas"]] == [
        (stays.hostname, "up", 0),
        (name, "draining", 6),
    ]

    # New requests, even with the leaving replica's own keys, go to the one that stays.
    for key in more_keys:
        assert await _get(http, server, "/home", key) == (200, stays.hostname)
    assert victim.requests == 6

    # Every request it had completes, answered by it.
    assert await asyncio.gather(*slow) == [(200, name)] * 6
    # Then it is stopped.
    await eventually(lambda: victim.state is State.DOWN and not pid_alive(pid), timeout=10)
    assert server.supervisor.draining == {}
    assert len(pids_of_children(os.getpid())) == 1


async def test_drain_timeout_stops_a_replica_that_does_not_finish(
    balancer: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    server = await _slow_balancer(balancer, drain_timeout=1.0)
    victim = server.pool.replicas[2]
    name, pid = victim.hostname, _pid(server, victim)
    _, slow = await _in_flight_on(http, server, victim, 1, seconds=30)

    removed_at = time.monotonic()
    status, _ = await call(http, server, "DELETE", "/rm", {"n": 1, "hostnames": [name]})
    assert status == 200
    await eventually(lambda: not pid_alive(pid), timeout=15)
    print(
        f"\n/rm -> replica stopped with a request in flight: {time.monotonic() - removed_at:.2f}s"
    )
    assert time.monotonic() - removed_at >= 1.0  # not before drain_timeout
    assert f"{name} still has 1 request(s) in flight after replicas.drain_timeout (1s)" in (
        caplog.text
    )
    # Stopped under it: the request (a bodiless GET, nothing of its answer sent yet) is not
    # left on the stopped replica; it is sent once more to the next one (docs/proxying.md).
    await eventually(lambda: victim.in_flight == 0, timeout=5)
    slow[0].cancel()


async def test_scale_down_by_reload_drains(balancer: Any, http: aiohttp.ClientSession) -> None:
    server = await _slow_balancer(balancer)
    newest = server.pool.replicas[2]
    name, pid = newest.hostname, _pid(server, newest)
    _, slow = await _in_flight_on(http, server, newest, 4, seconds=2)

    # What a config.yaml edit of replicas.count applies.
    await server.apply(
        parse_config(
            {
                **server.config.model_dump(),
                "replicas": {**server.config.replicas.model_dump(), "count": 1},
            }
        )
    )
    assert list(server.pool.replicas) == [1]
    assert newest.state is State.DRAINING
    assert pid_alive(pid)
    assert await asyncio.gather(*slow) == [(200, name)] * 4
    await eventually(lambda: not pid_alive(pid), timeout=10)


async def test_shutdown_with_a_replica_draining_keeps_to_shutdown_timeout(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await balancer(
        {
            "replicas": {"count": 2, "process": {"command": SLOW_REPLICA}, "drain_timeout": 60},
            "shutdown_timeout": 1.5,
        }
    )
    await eventually(lambda: _all_up(server, 2), timeout=30)
    victim = server.pool.replicas[2]
    _, slow = await _in_flight_on(http, server, victim, 2, seconds=30)
    status, _ = await call(http, server, "DELETE", "/rm", {"n": 1, "hostnames": [victim.hostname]})
    assert status == 200
    assert server.supervisor.draining

    started = time.monotonic()
    await asyncio.wait_for(server.shutdown(), 20)
    took = time.monotonic() - started
    print(f"\nshutdown with a replica draining 2 requests of 30 s: {took:.2f}s")
    # shutdown_timeout for what is in flight, then the replicas' stop (stop_timeout 3).
    assert took < 1.5 + 3 + 1
    assert len(server.tasks) == 0
    assert pids_of_children(os.getpid()) == set()
    assert all(s != 200 for s, _ in await asyncio.gather(*slow))


# -- /add racing /rm and shutdown ----------------------------------------------------------


#: No replica at first; those added never answer, so an /add would wait 30 s for them.
SILENT_START = {
    "replicas": {"count": 0, "process": {"command": SILENT_REPLICA}},
    "health": {"startup_timeout": 30},
    "shutdown_timeout": 10,
}


async def test_add_overtaken_by_rm_answers_the_truth_at_once(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await balancer(SILENT_START)
    add = asyncio.ensure_future(call(http, server, "POST", "/add", {"n": 1, "hostnames": ["S1"]}))
    await eventually(lambda: server.pool.by_hostname("S1") is not None, timeout=10)
    assert not add.done()
    status, body = await call(http, server, "DELETE", "/rm", {"n": 1, "hostnames": ["S1"]})
    assert status == 200 and body["message"] == {"N": 0, "replicas": []}

    status, body = await asyncio.wait_for(add, 5)
    assert status == 200, body
    assert body["message"] == {"N": 0, "replicas": []}
    await eventually(lambda: not pids_of_children(os.getpid()), timeout=10)


async def test_add_and_rm_storm_leaves_a_consistent_pool(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await balancer({"replicas": {"count": 2, "max": 12}})
    await eventually(lambda: _all_up(server, 2), timeout=30)

    async def add(i: int) -> tuple[int, dict[str, Any]]:
        return await call(http, server, "POST", "/add", {"n": 1, "hostnames": [f"S{i}"]})

    async def rm(i: int) -> tuple[int, dict[str, Any]]:
        await asyncio.sleep(0.05 * i)
        return await call(http, server, "DELETE", "/rm", {"n": 1})

    started = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(*(f(i) for i in range(6) for f in (add, rm))), 25
    )
    print(f"\n6 /add and 6 /rm at once: all answered in {time.monotonic() - started:.1f}s")
    for status, body in results:
        # An /rm may find nothing left to remove; nothing else may go wrong.
        assert status == 200 or (status == 400 and "exist" in body["message"]), body
        if status == 200:
            names = body["message"]["replicas"]
            assert len(names) == len(set(names)) == body["message"]["N"]
    # Whatever the order, the pool, the ring and the processes agree in the end.
    n = len(server.pool)
    await eventually(lambda: _all_up(server, n), timeout=30)
    await eventually(lambda: not server.supervisor.draining, timeout=30)
    await eventually(lambda: len(pids_of_children(os.getpid())) == n, timeout=15)
    await eventually(lambda: server.pool.ring.replicas == frozenset(server.pool.replicas), 10)
    status, body = await call(http, server, "GET", "/rep")
    assert body["message"]["N"] == n


async def test_add_waiting_when_shutdown_begins_answers_503_at_once(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await balancer(SILENT_START)
    add = asyncio.ensure_future(call(http, server, "POST", "/add", {"n": 1}))
    await eventually(lambda: len(server.pool) == 1, timeout=10)
    started = time.monotonic()
    await asyncio.wait_for(server.shutdown(), 20)
    took = time.monotonic() - started
    status, body = await asyncio.wait_for(add, 5)
    assert status == 503, body
    assert body == {"message": "<Error> The balancer is shutting down", "status": "failure"}
    # The /add did not hold shutdown up for shutdown_timeout.
    assert took < 5, took
    assert pids_of_children(os.getpid()) == set()


class NamesBackend(ProcessBackend):
    """The real process backend, except for what it says of hostnames: taken, or nothing
    (its engine unreachable). Processes have no names to collide with, so this is injected;
    the real case (another container's name) is test_docker_balancer's."""

    def __init__(self, config: Any, answer: list[str] | None) -> None:
        super().__init__(config.replicas.process, config.replicas.stop_timeout)
        self.answer = answer

    async def unavailable(self, hostnames: Any) -> list[str]:
        if self.answer is None:
            raise BackendError("the engine did not answer")
        return [h for h in hostnames if h in self.answer]


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (["web-x"], 400, "<Error> Hostname 'web-x' is already in use outside this balancer"),
        (None, 503, "<Error> Cannot check the hostnames: the engine did not answer"),
    ],
)
async def test_a_refused_name_is_answered_and_changes_nothing(
    balancer: Any,
    http: aiohttp.ClientSession,
    answer: list[str] | None,
    status: int,
    message: str,
) -> None:
    server = await balancer(
        {"replicas": {"count": 1}}, backend=lambda config: NamesBackend(config, answer)
    )
    before = server.pool.hostnames()
    got = await call(http, server, "POST", "/add", {"n": 1, "hostnames": ["web-x"]})
    assert got == (status, {"message": message, "status": "failure"})
    assert server.pool.hostnames() == before and len(before) == 1
