"""The supervisor keeps N replicas serving: replaces killed and hung replicas in their slots,
retries failed starts with capped exponential backoff, and lets static servers leave and
rejoin the ring. Real replica processes, real sockets, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from conftest import (
    PY,
    TEST_CONFIG,
    deep_merge,
    eventually,
    free_port,
    pid_alive,
    pids_of_children,
    url,
    wait_for_port,
)
from lbproxy import Config, Server
from lbproxy._pool import Replica, State
from lbproxy._supervisor import backoff_delay
from lbproxy.backends import ProcessBackend, ReplicaHandle

FAST_HEALTH = {"interval": 0.2, "timeout": 0.2, "unhealthy_threshold": 2}


def _pid(server: Server, replica: Replica) -> int:
    assert isinstance(server.backend, ProcessBackend)
    assert replica.handle is not None
    pid = server.backend.pid(replica.handle)
    assert pid is not None
    return pid


def _keys_of(server: Server, slot: int, count: int = 10) -> list[str]:
    """Request ids (6-digit, as the assignment's clients send) that the ring gives ``slot``."""
    ring = server.pool.ring
    keys = [str(k) for k in range(100_000, 110_000) if ring.lookup(str(k)) == slot]
    assert len(keys) >= count, f"slot {slot} owns only {len(keys)} of 10,000 ids"
    return keys[:count]


async def _home_by_key(http: aiohttp.ClientSession, server: Server, key: str) -> tuple[int, Any]:
    async with http.get(
        url(server, "/home"),
        headers={"X-Request-Id": key},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as resp:
        return resp.status, await resp.json()


async def _rep(http: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with http.get(url(server, "/rep"), timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "successful"
    return body["message"]


def _all_up(server: Server, n: int) -> bool:
    replicas = list(server.pool.replicas.values())
    return len(replicas) == n and all(r.state is State.UP and r.up.is_set() for r in replicas)


async def _load(
    http: aiohttp.ClientSession,
    server: Server,
    total: int,
    concurrency: int,
    time_limit: float,
    statuses: list[int],
    pause: float = 0.0,
    stop: asyncio.Event | None = None,
) -> None:
    """At most ``total`` GET /home through the balancer, ``concurrency`` at a time, each worker
    pausing ``pause`` s between its requests, all within ``time_limit`` seconds; ``stop`` ends
    it early."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker() -> None:
        while stop is None or not stop.is_set():
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                async with http.get(
                    url(server, "/home"), timeout=aiohttp.ClientTimeout(total=10)
                ) as resp:
                    await resp.read()
                    statuses.append(resp.status)
            except (aiohttp.ClientError, TimeoutError) as e:
                statuses.append(-1)
                print("load request failed:", repr(e))
            await asyncio.sleep(pause)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), time_limit)


# -- killed replica ------------------------------------------------------------------------


async def test_killed_replica_is_replaced_in_same_slot(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await balancer({"replicas": {"count": 3}})
    await eventually(lambda: _all_up(server, 3), timeout=20)
    victim = server.pool.replicas[2]
    old_name, old_handle = victim.hostname, victim.handle
    old_pid = _pid(server, victim)
    keys = _keys_of(server, victim.slot)
    for key in keys[:3]:
        assert await _home_by_key(http, server, key) == (
            200,
            {"message": f"Hello from Server: {old_name}", "status": "successful"},
        )
    before = await _rep(http, server)
    assert before["N"] == 3
    assert old_name in before["replicas"]

    statuses: list[int] = []
    stop = asyncio.Event()
    load = asyncio.ensure_future(
        # Paced, and ended only once 100 more requests were answered after the replacement: it
        # runs before, through and after it however slow the machine is.
        _load(http, server, 5000, 8, time_limit=60, statuses=statuses, pause=0.03, stop=stop)
    )
    try:
        await eventually(lambda: len(statuses) >= 30 or load.done(), timeout=20, interval=0.005)
        killed_at = time.monotonic()
        done_at_kill = len(statuses)
        os.kill(old_pid, signal.SIGKILL)
        await eventually(
            lambda: victim.hostname != old_name and _all_up(server, 3), timeout=20, interval=0.005
        )
        recovered_in = time.monotonic() - killed_at
        done_at_recovery = len(statuses)
        await eventually(lambda: len(statuses) >= done_at_recovery + 100 or load.done(), 30)
    finally:
        stop.set()
        await load
    print(
        f"\nkill -> N=3 up again: {recovered_in * 1000:.0f} ms "
        f"({done_at_recovery - done_at_kill} of {len(statuses)} load requests answered in between)"
    )
    assert recovered_in < 10
    assert done_at_kill >= 30
    assert len(statuses) >= done_at_recovery + 100, "the load did not outlast the replacement"
    bad = [s for s in statuses if s != 200]
    assert not bad, f"{len(bad)} of {len(statuses)} failed during the kill: {sorted(set(bad))}"

    # Same slot, new random hostname, new process; the old one is gone.
    new_name = victim.hostname
    assert server.pool.replicas[2] is victim
    assert victim.slot == 2
    assert new_name.startswith("server-")
    assert new_name not in ("server-1", "server-2", "server-3")
    assert victim.restarts == 1
    assert victim.handle is not None and victim.handle is not old_handle
    new_pid = _pid(server, victim)
    assert new_pid != old_pid
    assert pid_alive(new_pid)
    assert not pid_alive(old_pid)
    assert len(await server.backend.list()) == 3
    assert server.pool.ring.replicas == frozenset({1, 2, 3})

    # The supervisor's own measurement of the gap.
    (slot, failed_at, up_at), *_ = server.supervisor.recoveries
    assert slot == 2
    print(f"supervisor: failure seen -> replacement up: {(up_at - failed_at) * 1000:.0f} ms")

    # N restored in /rep, the new name in the old one's place.
    after = await _rep(http, server)
    assert after["N"] == 3
    assert new_name in after["replicas"]
    assert old_name not in after["replicas"]
    assert after["replicas"] == [new_name if n == old_name else n for n in before["replicas"]]

    # The replacement answers as itself, and gets exactly the old replica's keys.
    assert _keys_of(server, victim.slot, len(keys)) == keys
    for key in keys:
        assert await _home_by_key(http, server, key) == (
            200,
            {"message": f"Hello from Server: {new_name}", "status": "successful"},
        )


# -- hung replica --------------------------------------------------------------------------


async def test_hung_replica_misses_heartbeats_and_is_replaced(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await balancer({"replicas": {"count": 2, "stop_timeout": 1.0}, "health": FAST_HEALTH})
    await eventually(lambda: _all_up(server, 2), timeout=20)
    victim = server.pool.replicas[1]
    old_name = victim.hostname
    pid = _pid(server, victim)
    keys = _keys_of(server, victim.slot, 5)
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        await eventually(lambda: victim.state is not State.UP, timeout=10, interval=0.01)
        detected_in = time.monotonic() - stopped_at
        # 2 missed heartbeats at 0.2 s interval with a 0.2 s timeout: well under 2 s.
        assert detected_in < 3, detected_in
        await eventually(
            lambda: victim.hostname != old_name and _all_up(server, 2), timeout=20, interval=0.01
        )
        print(
            f"\nSIGSTOP -> marked down: {detected_in * 1000:.0f} ms, "
            f"-> replacement up: {(time.monotonic() - stopped_at) * 1000:.0f} ms"
        )
        # The hung process was killed (it cannot handle SIGTERM while stopped).
        await eventually(lambda: not pid_alive(pid), timeout=5)
        assert victim.slot == 1
        assert _pid(server, victim) != pid
        rep = await _rep(http, server)
        assert rep["N"] == 2
        assert victim.hostname in rep["replicas"]
        assert old_name not in rep["replicas"]
        for key in keys:
            status, body = await _home_by_key(http, server, key)
            assert status == 200
            assert body["message"] == f"Hello from Server: {victim.hostname}"
    finally:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


# -- failing starts and backoff ------------------------------------------------------------


async def test_failing_start_backs_off_exponentially_up_to_max(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    initial, maximum = 0.1, 0.8
    server = await balancer(
        {
            "replicas": {
                "count": 1,
                "process": {"command": [PY, "-c", "import sys; sys.exit(3)"]},
            },
            "health": {
                "backoff_initial": initial,
                "backoff_max": maximum,
                "startup_timeout": 1.0,
            },
        }
    )
    attempts = server.supervisor.start_attempts
    # 0, +0.1, +0.2, +0.4, +0.8, +0.8 (plus each start's own time): 6 attempts in ~2.5 s.
    await eventually(lambda: len(attempts) >= 6, timeout=15)
    first = attempts[0][1]
    await asyncio.sleep(max(0.0, first + 3.0 - time.monotonic()))
    times = [t for slot, t in attempts if slot == 1]
    assert len(times) == len(attempts)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print("\ngaps between start attempts:", ", ".join(f"{g:.3f}" for g in gaps))
    for failures, gap in enumerate(gaps[:5], start=1):
        want = backoff_delay(failures, initial, maximum)
        # At least the backoff; at most the backoff plus the time a failing start takes.
        assert want - 0.02 <= gap <= want + 0.6, (failures, gap, want)
    # Doubling, then capped at backoff_max.
    assert gaps[1] > gaps[0] * 1.3
    assert gaps[2] > gaps[1] * 1.3
    assert all(maximum - 0.02 <= g <= maximum + 0.6 for g in gaps[3:5])
    # No spinning: a handful of attempts in the first 3 seconds.
    in_window = [t for t in times if t - first <= 3.0]
    assert 5 <= len(in_window) <= 8, len(in_window)

    # The slot stays listed and is never routed to.
    replica = server.pool.replicas[1]
    assert replica.state is not State.UP
    assert replica.restarts == 0
    assert await _rep(http, server) == {"N": 1, "replicas": ["server-1"]}
    async with http.get(url(server, "/home")) as resp:
        assert resp.status == 503
        assert (await resp.json())["status"] == "failure"
    # At most the current attempt's process exists.
    assert len(pids_of_children(os.getpid())) <= 1


async def test_replica_that_never_answers_fails_startup_and_is_retried(
    balancer: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    startup_timeout = 1.0
    server = await balancer(
        {
            "replicas": {
                "count": 1,
                "stop_timeout": 2,
                "process": {"command": [PY, "-c", "import time; time.sleep(120)"]},
            },
            "health": {
                "backoff_initial": 0.1,
                "backoff_max": 0.8,
                "startup_timeout": startup_timeout,
            },
        }
    )
    attempts = server.supervisor.start_attempts
    seen: set[int] = set()
    most_at_once = 0

    def two_attempts() -> bool:
        nonlocal most_at_once
        children = pids_of_children(os.getpid())
        seen.update(children)
        most_at_once = max(most_at_once, len(children))
        return len(attempts) >= 3

    await eventually(two_attempts, timeout=20, interval=0.05)
    times = [t for _, t in attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print("\ngaps between start attempts of a silent replica:", [f"{g:.2f}" for g in gaps])
    # Each attempt waits out startup_timeout, is stopped, then backs off before the next.
    assert startup_timeout + 0.1 - 0.02 <= gaps[0] <= startup_timeout + 0.1 + 1.5
    assert startup_timeout + 0.2 - 0.02 <= gaps[1] <= startup_timeout + 0.2 + 1.5
    assert "did not answer /heartbeat within 1.0s" in caplog.text
    assert "failed to start 2 time(s) in a row" in caplog.text
    # Failed attempts are stopped: never more than one replica process at a time, and
    # every earlier one is gone.
    assert most_at_once <= 1
    # The third attempt is counted before its process is spawned and its handle set.
    await eventually(lambda: server.pool.replicas[1].handle is not None, timeout=5)
    current = server.pool.replicas[1].handle
    current_pid = server.backend.pid(current) if current is not None else None
    assert len(seen) >= 2
    assert not [p for p in seen if p != current_pid and pid_alive(p)]
    assert server.pool.replicas[1].state is not State.UP
    assert (await _rep(http, server))["N"] == 1


def test_backoff_delay_values() -> None:
    assert backoff_delay(1, 0.5, 30) == 0.5
    assert backoff_delay(2, 0.5, 30) == 1.0
    assert backoff_delay(3, 0.5, 30) == 2.0
    assert backoff_delay(4, 0.5, 30) == 4.0
    assert backoff_delay(7, 0.5, 30) == 30  # 32 capped
    assert backoff_delay(50, 0.5, 30) == 30
    assert backoff_delay(0, 0.5, 30) == 0.5  # never less than the initial delay
    assert backoff_delay(1, 0.1, 0.8) == 0.1
    assert backoff_delay(4, 0.1, 0.8) == pytest.approx(0.8)
    assert backoff_delay(5, 0.1, 0.8) == 0.8
    assert backoff_delay(3, 1.0, 1.0) == 1.0


# -- static backend ------------------------------------------------------------------------


class StaticUpstream:
    """A real server the static backend points at; can stop, restart on its port, or fail
    its heartbeat while still serving."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _heartbeat(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 500)

    async def _home(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"message": f"Hello from Server: {self.name}", "status": "successful"}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/heartbeat", self._heartbeat)
        app.router.add_get("/home", self._home)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


@pytest.fixture
async def static_upstreams() -> Any:
    ups = [StaticUpstream(name) for name in ("web-a", "web-b", "web-c")]
    for u in ups:
        await u.start()
    yield ups
    for u in ups:
        await u.stop()


async def _static_balancer(balancer: Any, ups: list[StaticUpstream]) -> Server:
    return await balancer(
        {
            "replicas": {
                "backend": "static",
                "static": [{"hostname": u.name, "address": u.address} for u in ups],
            },
            "health": FAST_HEALTH,
        }
    )


async def _served_by(http: aiohttp.ClientSession, server: Server, keys: list[str]) -> set[str]:
    names = set()
    for key in keys:
        status, body = await _home_by_key(http, server, key)
        assert status == 200, body
        names.add(body["message"].removeprefix("Hello from Server: "))
    return names


async def test_static_server_that_stops_leaves_ring_and_rejoins(
    balancer: Any, http: aiohttp.ClientSession, static_upstreams: list[StaticUpstream]
) -> None:
    server = await _static_balancer(balancer, static_upstreams)
    await eventually(lambda: _all_up(server, 3), timeout=10)
    b = static_upstreams[1]
    replica_b = server.pool.by_hostname("web-b")
    assert replica_b is not None
    keys = _keys_of(server, replica_b.slot)
    assert await _served_by(http, server, keys) == {"web-b"}
    before = await _rep(http, server)

    await b.stop()
    await eventually(lambda: replica_b.slot not in server.pool.ring.replicas, timeout=10)
    assert replica_b.state is not State.UP
    # Its keys now go to the others; nothing was started or renamed.
    assert (await _served_by(http, server, keys)) <= {"web-a", "web-c"}
    assert pids_of_children(os.getpid()) == set()
    assert await _rep(http, server) == before
    assert replica_b.hostname == "web-b"
    assert replica_b.restarts == 0

    # Back on the same port: it rejoins and gets its own keys back.
    await b.start()
    await eventually(replica_b.up.is_set, timeout=10)
    assert server.pool.ring.replicas == frozenset({1, 2, 3})
    assert await _served_by(http, server, keys) == {"web-b"}
    assert await _rep(http, server) == before


async def test_static_server_failing_heartbeat_leaves_ring_and_rejoins(
    balancer: Any, http: aiohttp.ClientSession, static_upstreams: list[StaticUpstream]
) -> None:
    server = await _static_balancer(balancer, static_upstreams)
    await eventually(lambda: _all_up(server, 3), timeout=10)
    c = static_upstreams[2]
    replica_c = server.pool.by_hostname("web-c")
    assert replica_c is not None
    keys = _keys_of(server, replica_c.slot)
    assert await _served_by(http, server, keys) == {"web-c"}

    c.healthy = False
    await eventually(lambda: replica_c.slot not in server.pool.ring.replicas, timeout=10)
    assert (await _served_by(http, server, keys)) <= {"web-a", "web-b"}
    # Still probed at the normal pace while down, not hammered; it stays out while failing.
    await asyncio.sleep(0.6)
    assert replica_c.state is not State.UP

    c.healthy = True
    await eventually(replica_c.up.is_set, timeout=10)
    assert await _served_by(http, server, keys) == {"web-c"}
    assert (await _rep(http, server))["N"] == 3


# -- a keeper never dies -------------------------------------------------------------------


class FlakyStartBackend(ProcessBackend):
    """The real process backend, except that its first ``failures`` starts raise a plain
    RuntimeError: no backend raises one on purpose, so it cannot be provoked on demand; this
    injects it and leaves everything else (processes, sockets, exits) real."""

    def __init__(self, config: Config, failures: int) -> None:
        super().__init__(config.replicas.process, config.replicas.stop_timeout)
        self.failures = failures

    async def start(self, hostname: str, slot: int, restarts: int = 0) -> ReplicaHandle:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("injected: the backend broke in an unforeseen way")
        return await super().start(hostname, slot, restarts)


async def test_a_start_raising_any_exception_is_a_failed_attempt(
    balancer: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    backends: list[FlakyStartBackend] = []

    def flaky(config: Config) -> FlakyStartBackend:
        backends.append(FlakyStartBackend(config, failures=3))
        return backends[0]

    server = await balancer(
        {"replicas": {"count": 2}, "health": {"backoff_initial": 0.1, "backoff_max": 0.4}},
        backend=flaky,
    )
    # Both slots are served in the end: the RuntimeErrors were failed attempts, retried.
    await eventually(lambda: _all_up(server, 2), timeout=20)
    assert backends[0].failures == 0
    assert len(server.supervisor.start_attempts) == 2 + 3
    assert "injected: the backend broke" in caplog.text
    assert "failed to start 1 time(s) in a row" in caplog.text
    assert len(pids_of_children(os.getpid())) == 2
    assert (await _rep(http, server))["N"] == 2
    async with http.get(url(server, "/home")) as resp:
        assert resp.status == 200


def _keeper_task(slot: int) -> asyncio.Task[Any] | None:
    """The running keeper of ``slot`` (keepers are named keeper:<slot>:<hostname>)."""
    for task in asyncio.all_tasks():
        if task.get_name().startswith(f"keeper:{slot}:") and not task.done():
            return task
    return None


async def test_watchdog_restarts_a_keeper_that_ended(
    balancer: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    server = await balancer(
        {"replicas": {"count": 2}, "health": {**FAST_HEALTH, "backoff_initial": 0.1}}
    )
    await eventually(lambda: _all_up(server, 2), timeout=20)
    victim = server.pool.replicas[2]
    keeper = _keeper_task(2)
    assert keeper is not None
    # A keeper ends though nobody retired its slot (here: a stray cancellation).
    keeper.cancel()
    await eventually(lambda: (t := _keeper_task(2)) is not None and t is not keeper, timeout=10)
    assert "ended unexpectedly (it was cancelled)" in caplog.text
    assert server.supervisor.keeper_restarts == 1
    # The new keeper took over the running replica (probed it; no second process) ...
    name, pid = victim.hostname, _pid(server, victim)

    def up_again() -> bool:
        return sum(f"{name} (slot 2) is up" in r.getMessage() for r in caplog.records) == 2

    await eventually(up_again, timeout=10)
    assert _all_up(server, 2)
    assert _pid(server, victim) == pid
    assert len(pids_of_children(os.getpid())) == 2
    # ... and keeps the slot served: a kill is repaired as before.
    old_name, old_pid = victim.hostname, _pid(server, victim)
    os.kill(old_pid, signal.SIGKILL)
    await eventually(
        lambda: victim.hostname != old_name and _all_up(server, 2), timeout=20, interval=0.02
    )
    assert _pid(server, victim) != old_pid
    assert len(pids_of_children(os.getpid())) == 2
    assert (await _rep(http, server))["N"] == 2


# -- descriptor exhaustion, for real -------------------------------------------------------


class _Output:
    """A child's merged stdout/stderr, collected by a task as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._stream = proc.stdout
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while line := await self._stream.readline():
            self.lines.append(line.decode(errors="replace"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _live_replicas(pid: int) -> list[int]:
    return [p for p in pids_of_children(pid) if pid_alive(p)]


async def test_keepers_survive_descriptor_exhaustion(tmp_path: Path) -> None:
    """A balancer whose descriptors run out (open client connections) while a replica is
    killed: the replacement's start fails with EMFILE, again and again, and once the clients
    leave, N replicas run again (counted as processes, not only in /rep)."""
    limit = 160  # the balancer's RLIMIT_NOFILE, soft and hard: it cannot raise it
    count = 3
    port = free_port()
    config = deep_merge(
        TEST_CONFIG,
        {
            "listen": {"port": port},
            "replicas": {"count": count, "stop_timeout": 2},
            "health": {
                "interval": 0.2,
                "timeout": 0.3,
                "unhealthy_threshold": 2,
                "backoff_initial": 0.1,
                "backoff_max": 0.5,
            },
            # No cap on clients (the default keeps half the descriptors for replicas): this
            # test is about what the keepers do once descriptors run out all the same.
            "proxy": {"client_keepalive_timeout": 300, "max_client_connections": 100_000},
        },
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = await asyncio.create_subprocess_exec(
        PY,
        "-m",
        "lbproxy",
        "run",
        "-c",
        str(path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=low_limit,
    )
    output = _Output(proc)
    clients: list[socket.socket] = []
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0)
        await eventually(lambda: len(_live_replicas(proc.pid)) == count, timeout=20)
        victim = min(_live_replicas(proc.pid))
        print(f"\nbalancer: {_open_fds(proc.pid)} descriptors open of {limit}")

        # Clients take every descriptor the balancer has left, and keep coming, so that any
        # descriptor freed (the killed replica's) is taken again at once.
        def exhaust_until(done: threading.Event) -> None:
            deadline = time.monotonic() + 30
            while not done.is_set() and time.monotonic() < deadline and len(clients) < 3000:
                with contextlib.suppress(OSError):
                    clients.append(socket.create_connection(("127.0.0.1", port), timeout=1))
                time.sleep(0.002 if _open_fds(proc.pid) >= limit - 1 else 0)

        stop = threading.Event()
        filler = threading.Thread(target=exhaust_until, args=(stop,), daemon=True)
        filler.start()
        try:
            await eventually(lambda: _open_fds(proc.pid) >= limit - 1, timeout=20)
            print(f"balancer: {_open_fds(proc.pid)} descriptors open: exhausted")
            os.kill(victim, signal.SIGKILL)
            # The replacement cannot even get a socket; the keeper backs off and tries again.
            await eventually(lambda: output.has("Too many open files"), timeout=20)
            await eventually(lambda: output.has("failed to start 2 time(s) in a row"), timeout=20)
        finally:
            stop.set()
            await asyncio.to_thread(filler.join, 10)
        short = len(_live_replicas(proc.pid))
        for c in clients:
            c.close()
        released_at = time.monotonic()
        print(f"clients opened {len(clients)} connections; {short} replicas ran meanwhile")

        # Descriptors free again: every slot is served by a live process, within backoff_max
        # plus a start.
        await eventually(lambda: len(_live_replicas(proc.pid)) == count, timeout=30)
        async with aiohttp.ClientSession() as http:

            async def rep() -> dict[str, Any]:
                async with http.get(f"http://127.0.0.1:{port}/rep") as resp:
                    return (await resp.json())["message"]

            async def whole() -> bool:
                served = set()
                for i in range(60):
                    async with http.get(
                        f"http://127.0.0.1:{port}/home", headers={"X-Request-Id": str(100000 + i)}
                    ) as resp:
                        if resp.status != 200:
                            return False
                        served.add(
                            (await resp.json())["message"].removeprefix("Hello from Server: ")
                        )
                return served == set((await rep())["replicas"])

            await eventually(whole, timeout=30, interval=0.2)
            message = await rep()
        live = _live_replicas(proc.pid)
        print(
            f"after descriptor exhaustion: N={message['N']}, live replicas={len(live)} "
            f"(whole again {time.monotonic() - released_at:.1f}s after the clients left)"
        )
        assert message["N"] == count
        assert len(live) == count
        assert victim not in live
        assert proc.returncode is None
    finally:
        for c in clients:
            c.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await output.task
