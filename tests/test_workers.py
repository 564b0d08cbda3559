"""``workers: N``: worker processes on one SO_REUSEPORT port, routing from the supervisor's
ring. Real balancers (the supervisor in this process, the workers as real child processes),
real replicas, real HTTP over fresh connections (so the kernel spreads them over the
workers' sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import PY, admin_url, eventually, pid_alive, url
from lbproxy._config import with_overrides
from lbproxy._workers import PUBLISH_INTERVAL

SLOW_REPLICA = [PY, str(Path(__file__).with_name("slow_replica.py"))]


async def _get(server: Any, key: int | str, path: str = "/home") -> tuple[int, str]:
    """One request on its own connection; (status, the replica that answered)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.get(url(server, path), headers={"X-Request-Id": str(key)}) as resp,
    ):
        body = await resp.json()
        return resp.status, str(body.get("message", "")).rsplit(" ", 1)[-1]


def _served_by_each(server: Any) -> list[int]:
    """Requests each worker answered, by its latest report."""
    return [
        sum(n for n, _ in p.last_report.counts.values()) if p.last_report else 0
        for p in server.workers.procs
    ]


async def _workers_balancer(balancer: Any, extra: dict[str, Any] | None = None) -> Any:
    config: dict[str, Any] = {"workers": 2, "replicas": {"count": 3}}
    config.update(extra or {})
    server = await balancer(config)
    assert server.workers is not None and len(server.workers.procs) == 2
    return server


async def test_workers_share_the_port_and_route_as_the_supervisor_ring_does(
    balancer: Any,
) -> None:
    server = await _workers_balancer(balancer)
    pids = [p.pid for p in server.workers.procs]
    assert all(pid is not None and pid_alive(pid) for pid in pids)
    # Every key goes where the supervisor's own ring sends it, whichever worker takes it.
    keys = [100000 + 7919 * i for i in range(60)]
    for key in keys * 2:
        status, replica = await _get(server, key)
        assert status == 200
        assert replica == server.pool.pick(str(key)).hostname, key
    await server._refresh()
    served = _served_by_each(server)
    print("\nrequests answered by each worker:", served)
    assert sum(served) == 120
    assert all(n > 0 for n in served), served  # the kernel gave both workers connections


async def test_a_change_reaches_every_worker_within_100_ms(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await _workers_balancer(balancer)
    before = server.workers.version
    async with http.delete(admin_url(server, "/rm"), json={"n": 1, "hostnames": ["server-2"]}) as r:
        assert r.status == 200
    answered = time.monotonic()
    workers = server.workers

    def every_worker_routes_without_server_2() -> bool:
        return (
            2 not in server.pool.ring.weights
            and workers.version > before
            and all(p.applied == workers.version for p in workers.procs)
        )

    # Found by the supervisor's own watch of the pool (nothing asks it to hurry).
    await eventually(every_worker_routes_without_server_2, timeout=1, interval=0.002)
    took = time.monotonic() - answered
    print(f"\n/rm answered -> every worker routes without it: {took * 1000:.1f} ms")
    assert took < 0.1
    lags = [workers.last_lag]
    # A routing change: every worker takes the supervisor's new table.
    new = with_overrides(server.config, **{"hashing.function": "assignment"})
    await server.apply(new)
    changed = time.monotonic()
    await eventually(lambda: server.workers.version > before + 1, timeout=1, interval=0.002)
    assert await server.workers.applied(timeout=1.0)
    lags.append(server.workers.last_lag)
    reached = time.monotonic() - changed
    print(f"\nchange -> applied by every worker: {[f'{x * 1000:.1f} ms' for x in lags]}")
    print(f"ring rebuilt and applied by every worker {reached * 1000:.1f} ms after the reload")
    assert all(lag is None or lag < 0.1 for lag in lags), lags
    assert reached < 0.1 + PUBLISH_INTERVAL
    for key in range(123400, 123460):
        status, replica = await _get(server, key)
        assert status == 200
        assert replica != "server-2"
        assert replica == server.pool.pick(str(key)).hostname


async def test_metrics_and_status_add_up_every_worker(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await _workers_balancer(balancer)
    for key in range(200000, 200100):
        assert (await _get(server, key))[0] == 200
    async with http.get(admin_url(server, "/metrics")) as r:
        text = await r.text()
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("lbproxy_requests_total{") and 'code="200"' in line
    )
    assert counted == 100
    async with http.get(admin_url(server, "/status")) as r:
        status = (await r.json())["message"]
    assert sum(r["requests"] for r in status["replicas"]) == 100
    assert [w["serving"] for w in status["workers"]] == [True, True]
    assert all(n > 0 for n in _served_by_each(server))


async def test_a_killed_worker_is_replaced_and_its_counts_are_kept(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await _workers_balancer(balancer)
    for key in range(300000, 300040):
        assert (await _get(server, key))[0] == 200
    await server._refresh()
    total = sum(n for n, _ in server.workers.counts.values())
    assert total == 40
    victim = server.workers.procs[0]
    old_pid = victim.pid
    os.kill(old_pid, signal.SIGKILL)
    # Meanwhile the other worker serves every new connection.
    answered = 0
    deadline = time.monotonic() + 10
    while (victim.pid == old_pid or not victim.ready) and time.monotonic() < deadline:
        status, _ = await _get(server, answered)
        assert status == 200
        answered += 1
    assert victim.pid != old_pid and victim.ready and pid_alive(victim.pid)
    assert victim.restarts == 1
    await server._refresh()
    # The dead worker's last counts stay in the sums: they never go back.
    assert sum(n for n, _ in server.workers.counts.values()) >= total + answered - 1
    for key in range(300100, 300120):
        assert (await _get(server, key))[0] == 200


async def test_a_hung_worker_is_killed_and_started_again(balancer: Any) -> None:
    """A stopped (SIGSTOP) worker keeps its socket in the port's group, taking connections it
    never serves: it answers no report request, and after MISSED_REPORTS it is replaced."""
    server = await _workers_balancer(balancer)
    victim = server.workers.procs[1]
    hung = victim.pid
    os.kill(hung, signal.SIGSTOP)
    try:
        started = time.monotonic()
        await eventually(lambda: victim.pid != hung and victim.ready, timeout=15)
        print(f"\nhung worker replaced after {time.monotonic() - started:.1f}s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    assert not pid_alive(hung)
    assert victim.restarts == 1
    for key in range(500000, 500030):
        assert (await asyncio.wait_for(_get(server, key), 5))[0] == 200


async def test_replica_removed_under_workers_drains_their_requests_in_flight(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await _workers_balancer(
        balancer, {"replicas": {"count": 2, "process": {"command": SLOW_REPLICA}}}
    )
    # Keys whose replica is server-1, each kept busy for 1.5 s.
    keys = [k for k in range(400000, 400200) if server.pool.pick(str(k)).hostname == "server-1"]
    slow = [asyncio.ensure_future(_get(server, k, "/slow?s=1.5")) for k in keys[:6]]
    await asyncio.sleep(0.4)
    await server._refresh()
    assert server.workers.counts["server-1"][1] == 6
    async with http.delete(admin_url(server, "/rm"), json={"n": 1, "hostnames": ["server-1"]}) as r:
        assert r.status == 200
    # Every request in flight to it is answered in full before it is stopped.
    results = await asyncio.gather(*slow)
    assert results == [(200, "server-1")] * 6
    await eventually(lambda: not server.supervisor.draining, timeout=5)


async def test_admin_endpoints_on_the_port_go_to_the_supervisor(balancer: Any) -> None:
    server = await _workers_balancer(balancer, {"admin": {"token": "s3cret-s3cret-s3cret"}})
    async with aiohttp.ClientSession() as s:
        async with s.post(url(server, "/add"), json={"n": 1}) as r:
            assert r.status == 401
            assert (await r.json())["status"] == "failure"
        headers = {"Authorization": "Bearer s3cret-s3cret-s3cret"}
        async with s.post(url(server, "/add"), json={"n": 1}, headers=headers) as r:
            assert r.status == 200
            assert (await r.json())["message"]["N"] == 4
        async with s.get(url(server, "/rep")) as r:
            assert (await r.json())["message"]["N"] == 4
    assert len(server.pool) == 4


async def test_shutdown_stops_every_worker_and_frees_the_port(balancer: Any) -> None:
    server = await _workers_balancer(balancer)
    pids = [p.pid for p in server.workers.procs]
    port = server.port
    await server.shutdown()
    assert not [pid for pid in pids if pid_alive(pid)]
    with socket.create_server(("127.0.0.1", port)):
        pass  # nobody holds it any more


async def test_a_port_taken_by_another_program_fails_startup(balancer: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(Exception, match="cannot listen"):
            await balancer({"workers": 2, "listen": {"port": port}})
