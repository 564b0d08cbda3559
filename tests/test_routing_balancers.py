"""Routing through real balancers: bounded loads, weights, and two balancers that agree.

Upstreams are real servers on loopback: aiohttp handlers written here for the in-process
balancers, and real replica processes (``python -m lbproxy.replica``) behind two balancer
processes run as users run them. A replica is "killed" for the retry-order test by closing
it and holding its port with a socket whose accept queue is full, so that connecting to it
times out: the balancer retries the next replica in the key's order, while its heartbeat
(with a long timeout) is still out, so the replica stays in the ring and every answer shows
the retry order rather than a rebuilt ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from conftest import TEST_CONFIG, deep_merge, eventually, free_port, url
from lbproxy import LoadBound, build_ring, make_scheme

DEFAULT = make_scheme("default")


def static(*replicas: tuple[str, str], weights: Sequence[float] = ()) -> dict[str, Any]:
    entries = [{"hostname": h, "address": a} for h, a in replicas]
    for entry, w in zip(entries, weights, strict=False):
        entry["weight"] = w
    return {"replicas": {"backend": "static", "static": entries}}


def keys(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [str(rng.randint(100_000, 999_999)) for _ in range(n)]


# -- bounded loads and weights, in-process balancers -------------------------------------------


@pytest.mark.parametrize("factor", [None, 1.25])
async def test_bounded_loads_spill_a_hot_key_and_bring_it_home(
    factor: float | None, upstream: Any, balancer: Any, http: aiohttp.ClientSession
) -> None:
    """Nine requests for one key, each held by its replica until all have arrived: without
    bounded loads all nine wait on the key's replica; with them, each goes to the first in
    the key's order with room, exactly as the cap says; once they are answered, the key is
    home again."""
    arrivals: asyncio.Queue[str] = asyncio.Queue()
    release = asyncio.Event()

    def holder(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def hold(request: web.Request) -> web.Response:
            arrivals.put_nowait(name)
            await release.wait()
            return web.json_response({"name": name})

        return hold

    names = ["h1", "h2", "h3"]
    replicas = [(n, await upstream({"/{tail:.*}": holder(n)})) for n in names]
    overrides = deep_merge(static(*replicas), {"health": {"interval": 30}})
    if factor is not None:
        overrides = deep_merge(overrides, {"hashing": {"balance_factor": factor}})
    server = await balancer(overrides)
    ring = build_ring(DEFAULT, [1, 2, 3])
    key = next(k for k in keys(1000) if ring.lookup(k) == 1)
    order = [names[s - 1] for s in ring.walk(key)]

    # What the cap predicts, request by request, from the loads the earlier ones left.
    expected: list[str] = []
    bound = LoadBound(factor, [1, 2, 3]) if factor is not None else None
    loads = dict.fromkeys(names, 0)
    for total in range(9):
        room = [n for n in order if bound is None or bound.has_room(1, loads[n], total)]
        expected.append((room or order)[0])
        loads[expected[-1]] += 1

    async def get() -> str:
        headers = {"X-Request-Id": key}
        async with http.get(url(server, "/home"), headers=headers) as r:
            assert r.status == 200
            return (await r.json())["name"]

    pending, arrived = [], []
    for _ in range(9):
        pending.append(asyncio.create_task(get()))
        # One at a time: each decision sees the loads the earlier requests made.
        arrived.append(await asyncio.wait_for(arrivals.get(), 10))
    assert arrived == expected
    if factor is None:
        assert arrived == [order[0]] * 9
    else:
        # ceil(1.25 x (total + 1) / 3) for total = 0..8: 1 1 2 2 3 3 3 4 4.
        h, s, t = order
        assert arrived == [h, s, h, s, h, s, t, h, s]
    assert server.pool.load.total == 9
    release.set()
    assert sorted(await asyncio.wait_for(asyncio.gather(*pending), 10)) == sorted(arrived)
    await eventually(lambda: server.pool.load.total == 0, timeout=5)
    # Nothing in flight any more: the key is back on its own replica at once.
    assert await get() == order[0]


async def test_weights_shares_through_the_balancer(
    upstream: Any, balancer: Any, http: aiohttp.ClientSession
) -> None:
    async def who(name: str) -> str:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({"name": name})

        return await upstream({"/{tail:.*}": handler})

    names = ["w1", "w2", "w3"]
    replicas = [(n, await who(n)) for n in names]
    weights = [1.0, 2.0, 3.0]
    server = await balancer(static(*replicas, weights=weights))
    ring = build_ring(DEFAULT, dict(zip([1, 2, 3], weights, strict=True)))
    assert server.pool.ring.weights == {1: 1000, 2: 2000, 3: 3000}
    ids = keys(3000)
    counts: Counter[str] = Counter()

    async def one(k: str) -> None:
        async with http.get(url(server, "/home"), headers={"X-Request-Id": k}) as r:
            name = (await r.json())["name"]
        assert name == names[ring.lookup(k) - 1]  # type: ignore[operator]
        counts[name] += 1

    for i in range(0, len(ids), 100):
        await asyncio.gather(*(one(k) for k in ids[i : i + 100]))
    # Shares 1/6, 2/6, 3/6; sampling noise of 3,000 keys about 0.9 points.
    for name, w in zip(names, weights, strict=True):
        assert counts[name] / 3000 == pytest.approx(w / 6, abs=0.03)


# -- two balancer processes, side by side ------------------------------------------------------


class Replica:
    """A real replica server process on a fixed port, which can be killed and brought back."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.blackhole: list[socket.socket] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        command = [sys.executable, "-m", "lbproxy.replica", "--id", self.name]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = await asyncio.to_thread(
            subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await eventually(self._listening, timeout=20)

    def _listening(self) -> bool:
        """It answers its heartbeat (its event loop runs and accepts connections)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 1) as s,
        ):
            s.sendall(b"GET /heartbeat HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
        return False

    async def kill(self) -> None:
        """Stop it and hold its port with a full accept queue: connecting times out."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(0)
        self.blackhole = [listener]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.blackhole.append(filler)

    async def revive(self) -> None:
        for s in self.blackhole:
            s.close()
        self.blackhole = []
        await self.start()

    def close(self) -> None:
        for s in self.blackhole:
            s.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class BalancerProc:
    """``python -m lbproxy run`` in its own process with its own PYTHONHASHSEED."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str, hash_seed: str) -> None:
        self.port = config["listen"]["port"]
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lbproxy", "run", "-c", str(path)],
                stdout=out,
                stderr=out,
                env={**os.environ, "PYTHONHASHSEED": hash_seed},
            )

    async def ready(self) -> None:
        """It opens its port once its replicas answer."""
        await eventually(lambda: self.proc.poll() is None and _serves(self.port), 30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
async def replica_servers() -> AsyncIterator[list[Replica]]:
    servers = [Replica(f"up-{i}", free_port()) for i in (1, 2, 3)]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        yield servers
    finally:
        for s in servers:
            s.close()


@pytest.fixture
def balancer_procs(tmp_path: Path) -> Iterator[Callable[..., BalancerProc]]:
    started: list[BalancerProc] = []

    def start(config: dict[str, Any], name: str, hash_seed: str) -> BalancerProc:
        b = BalancerProc(config, tmp_path, name, hash_seed)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


async def _answers(port: int, ids: Sequence[str], connections: int = 32) -> dict[str, str]:
    """key -> the replica that answered it through the balancer on ``port``.

    A lean keep-alive client on raw streams (one request at a time per connection): the
    test's own process must not be what limits 26,000 requests.
    """
    out: dict[str, str] = {}
    source = iter(ids)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for k in source:
                writer.write(
                    b"GET /home HTTP/1.1\r\nHost: lb\r\nX-Request-Id: %s\r\n\r\n" % k.encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 "), head
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = json.loads(await reader.readexactly(length))
                out[k] = body["message"].removeprefix("Hello from Server: ")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return out


@pytest.mark.timeout(240)
async def test_two_balancers_route_every_key_and_retry_identically(
    replica_servers: list[Replica], balancer_procs: Callable[..., BalancerProc]
) -> None:
    """Same replicas in the same slots, different hostnames, different PYTHONHASHSEED: the
    replica that answers each of 10,000 keys is the same through both, and so is where each
    key goes when its replica cannot be connected to (the retry order)."""
    base = deep_merge(
        TEST_CONFIG,
        {
            # A heartbeat to a killed replica stays out for the whole test, so it stays in
            # the ring and the answers show the retry order, not a rebuilt ring.
            "health": {"interval": 60, "timeout": 120, "unhealthy_threshold": 3},
            # No outlier ejection either: a revived replica would stay out for its ejection
            # time and the next victim's keys would skip it.
            "proxy": {"connect_timeout": 0.25, "retries": 2, "outlier_failures": 0},
        },
    )
    addresses = [r.address for r in replica_servers]
    a, b = (
        balancer_procs(
            deep_merge(
                deep_merge(base, {"listen": {"port": free_port()}}),
                static(*zip(hostnames, addresses, strict=True)),
            ),
            name,
            hash_seed,
        )
        for name, hostnames, hash_seed in (
            ("a", ["alpha", "beta", "gamma"], "0"),
            ("b", ["zz-9", "yy-8", "xx-7"], "4242"),
        )
    )
    await asyncio.gather(a.ready(), b.ready())
    ring = build_ring(DEFAULT, [1, 2, 3])
    names = [r.name for r in replica_servers]
    ids = keys(10_000)
    through_a, through_b = await asyncio.gather(_answers(a.port, ids), _answers(b.port, ids))
    assert through_a == through_b
    assert through_a == {k: names[ring.lookup(k) - 1] for k in ids}  # type: ignore[operator]

    # Each replica killed in turn: its keys go to their second choice, the same through
    # both balancers (1,500 of the keys: each of these waits out a connect timeout).
    sample = ids[:1500]
    for slot, victim in enumerate(replica_servers, start=1):
        mine = [k for k in sample if ring.lookup(k) == slot]
        await victim.kill()
        try:
            # 32 connections each: a just-revived replica's accept queue (128) holds the
            # connections both balancers open to it at once.
            via_a, via_b = await asyncio.gather(_answers(a.port, mine), _answers(b.port, mine))
        finally:
            await victim.revive()
        assert via_a == via_b
        second = {k: names[list(ring.walk(k))[1] - 1] for k in mine}
        assert via_a == second
        assert set(second.values()) == set(names) - {victim.name}


def _serves(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False
