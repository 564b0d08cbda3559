"""The balancer with the Docker backend: every replica a real container on a real network.

Skipped (with the reason printed) where no Docker engine is reachable.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from conftest import (
    TEST_CONFIG,
    BalancerFactory,
    deep_merge,
    docker_cleanup,
    docker_cli,
    docker_names,
    docker_ps,
    eventually,
    hot_modules,
    load_tool,
    url,
)
from lbproxy import BackendError, Server, parse_config

pytestmark = pytest.mark.usefixtures("docker_images")


@pytest.fixture
async def stack() -> AsyncIterator[dict[str, Any]]:
    """Config overrides for a balancer with container replicas under test-unique names."""
    prefix = docker_names()
    network = f"{prefix}-net"
    yield {
        "replicas": {
            "backend": "docker",
            "count": 2,
            "name_prefix": prefix,
            "stop_timeout": 2,
            "docker": {"instance": prefix, "network": network},
        },
        "health": {"startup_timeout": 60},
    }
    docker_cleanup(prefix, network)


def instance(stack: dict[str, Any]) -> str:
    return stack["replicas"]["docker"]["instance"]


async def rep(http: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with http.get(url(server, "/rep")) as resp:
        assert resp.status == 200
        return (await resp.json())["message"]


async def test_rep_lists_the_running_containers_and_they_answer(
    balancer: BalancerFactory, http: aiohttp.ClientSession, stack: dict[str, Any]
) -> None:
    server = await balancer(stack)
    message = await rep(http, server)
    running = docker_ps(instance(stack))
    assert message["N"] == 2
    assert sorted(message["replicas"]) == sorted(running)
    seen = set()
    for i in range(40):
        async with http.get(url(server, "/home"), headers={"X-Request-Id": str(i)}) as resp:
            assert resp.status == 200
            body = await resp.json()
        seen.add(body["message"].removeprefix("Hello from Server: "))
    assert seen == set(running)  # both containers answer, nobody else


async def test_add_and_rm_create_and_remove_containers(
    balancer: BalancerFactory, http: aiohttp.ClientSession, stack: dict[str, Any]
) -> None:
    server = await balancer(stack)
    named = f"{instance(stack)}-x"
    async with http.post(url(server, "/add"), json={"n": 2, "hostnames": [named]}) as resp:
        assert resp.status == 200
        added = (await resp.json())["message"]
    assert added["N"] == 4
    running = docker_ps(instance(stack))
    assert sorted(added["replicas"]) == sorted(running)
    assert named in running

    async with http.delete(url(server, "/rm"), json={"n": 2, "hostnames": [named]}) as resp:
        assert resp.status == 200
        left = (await resp.json())["message"]
    assert left["N"] == 2
    assert named not in left["replicas"]
    # Removed containers are gone from the engine, not just from the ring: /rm answers once
    # they are out of the ring, and they are removed once drained (at once: nothing in flight).
    await eventually(
        lambda: sorted(docker_ps(instance(stack), running=False)) == sorted(left["replicas"]),
        timeout=30,
    )

    async with http.post(
        url(server, "/add"), json={"n": 1, "hostnames": [left["replicas"][0]]}
    ) as r:
        assert r.status == 400  # a name in use: refused, nothing created
    assert len(docker_ps(instance(stack), running=False)) == 2


async def test_docker_kill_is_healed_back_to_n_while_serving(
    balancer: BalancerFactory, http: aiohttp.ClientSession, stack: dict[str, Any]
) -> None:
    server = await balancer(stack)
    victim = (await rep(http, server))["replicas"][0]
    statuses: list[int] = []

    async def load() -> None:
        for i in range(400):  # bounded; ends early once the replacement is up
            async with http.get(url(server, "/home"), headers={"X-Request-Id": str(i)}) as r:
                statuses.append(r.status)
            if server.supervisor.recoveries:
                return
            await asyncio.sleep(0.01)

    traffic = asyncio.ensure_future(load())
    await asyncio.sleep(0.2)
    killed = time.monotonic()
    await docker_cli("kill", victim)
    await eventually(lambda: server.supervisor.recoveries, timeout=60)
    await traffic
    _, detected, up = server.supervisor.recoveries[0]
    print(
        f"\ndocker kill -> detected {detected - killed:.3f}s, "
        f"-> N replicas serving again {up - killed:.3f}s"
    )
    message = await rep(http, server)
    running = docker_ps(instance(stack))
    assert message["N"] == 2
    assert victim not in message["replicas"]
    assert sorted(message["replicas"]) == sorted(running)
    # Detected by the container's event, well before 3 missed heartbeats could tell.
    health = server.config.health
    assert detected - killed < health.interval * health.unhealthy_threshold
    # Keys of the dead replica failed over to the others: every request was answered.
    assert statuses and set(statuses) == {200}


async def test_a_restarted_balancer_adopts_its_replicas(
    http: aiohttp.ClientSession, stack: dict[str, Any]
) -> None:
    keep = deep_merge(stack, {"replicas": {"docker": {"remove_on_shutdown": False}}})
    first = Server(parse_config(deep_merge(TEST_CONFIG, keep)))
    await first.startup()
    try:
        before = docker_ps(instance(stack))
        replicas = (await rep(http, first))["replicas"]
    finally:
        await first.shutdown()
    assert docker_ps(instance(stack)) == before  # left running for the next balancer

    second = Server(parse_config(deep_merge(TEST_CONFIG, stack)))
    await second.startup()
    try:
        assert (await rep(http, second))["replicas"] == replicas  # same names, same order
        assert docker_ps(instance(stack)) == before  # the same containers: none duplicated
        assert {r.slot: r.hostname for r in second.pool.replicas.values()} == {
            i + 1: name for i, name in enumerate(replicas)
        }
        assert second.supervisor.start_attempts == type(second.supervisor.start_attempts)()
    finally:
        await second.shutdown()
    assert docker_ps(instance(stack), running=False) == {}  # removed on shutdown


async def test_a_restarted_balancer_keeps_restart_counts_and_replaces_the_dead(
    http: aiohttp.ClientSession, stack: dict[str, Any]
) -> None:
    keep = deep_merge(stack, {"replicas": {"count": 3, "docker": {"remove_on_shutdown": False}}})
    first = Server(parse_config(deep_merge(TEST_CONFIG, keep)))
    await first.startup()
    try:
        # Slot 1's replica dies and is replaced: the slot has restarted once.
        victim = first.pool.replicas[1]
        killed = victim.hostname
        await docker_cli("kill", killed)
        await eventually(
            lambda: victim.hostname != killed and victim.up.is_set(), timeout=60, interval=0.1
        )
        assert victim.restarts == 1
        before = {s: r.hostname for s, r in first.pool.replicas.items()}
    finally:
        await first.shutdown()
    running = docker_ps(instance(stack))
    assert sorted(running) == sorted(before.values())  # left running
    # While no balancer runs, slot 2's replica dies.
    await docker_cli("kill", before[2])

    # config.yaml now asks for fewer: the next balancer still takes over all it finds.
    fewer = deep_merge(keep, {"replicas": {"count": 2}})
    second = Server(parse_config(deep_merge(TEST_CONFIG, fewer)))
    await second.startup()
    try:
        replicas = second.pool.replicas
        assert {s: r.hostname for s, r in replicas.items()} == before  # same names and slots
        assert {s: r.restarts for s, r in replicas.items()} == {1: 1, 2: 1, 3: 0}
        assert second.supervisor.start_attempts == type(second.supervisor.start_attempts)()
        after = docker_ps(instance(stack))
        assert sorted(after) == sorted(before.values())
        assert after[before[1]] == running[before[1]]  # adopted: the very same containers
        assert after[before[3]] == running[before[3]]
        assert after[before[2]] != running[before[2]]  # the dead one: a new container
        await eventually(lambda: all(r.up.is_set() for r in replicas.values()), timeout=60)
        assert (await rep(http, second))["N"] == 3
        seen = set()
        for i in range(60):
            async with http.get(url(second, "/home"), headers={"X-Request-Id": str(i)}) as r:
                assert r.status == 200
                seen.add((await r.json())["message"].removeprefix("Hello from Server: "))
        assert seen == set(before.values())
    finally:
        await second.shutdown()


async def test_startup_without_the_image_fails_clearly(stack: dict[str, Any]) -> None:
    missing = deep_merge(stack, {"replicas": {"docker": {"image": "lbproxy/absent:0"}}})
    server = Server(parse_config(deep_merge(TEST_CONFIG, missing)))
    with pytest.raises(BackendError, match=r"lbproxy/absent:0.*make images"):
        await server.startup()
    await server.shutdown()
    assert docker_ps(instance(stack), running=False) == {}


async def test_names_of_other_containers_are_never_taken(
    balancer: BalancerFactory, http: aiohttp.ClientSession, stack: dict[str, Any]
) -> None:
    prefix = instance(stack)
    foreign = f"{prefix}-1"  # the name the balancer would give slot 1
    await docker_cli("create", "--name", foreign, "lbproxy/server:latest")
    try:
        server = await balancer(stack)
        # Slot 1 is served all the same, under a generated name.
        message = await rep(http, server)
        assert message["N"] == 2
        assert foreign not in message["replicas"]
        assert sorted(message["replicas"]) == sorted(docker_ps(prefix))
        # Asked for by name, it is refused up front and nothing changes.
        async with http.post(url(server, "/add"), json={"n": 1, "hostnames": [foreign]}) as r:
            assert r.status == 400
            body = await r.json()
        assert body == {
            "message": f"<Error> Hostname '{foreign}' is already in use outside this balancer",
            "status": "failure",
        }
        assert (await rep(http, server))["N"] == 2
        assert len(docker_ps(prefix, running=False)) == 2
        # Someone else's container is never touched.
        assert await docker_cli("inspect", "-f", "{{.State.Status}}", foreign) == "created"
    finally:
        await docker_cli("rm", "-f", foreign)


def test_the_balancer_image_runs_the_compiled_hot_path() -> None:
    images = load_tool("images")
    names = hot_modules()
    script = (
        "import importlib, json, platform, sys\n"
        "print(json.dumps([f'{sys.version_info[0]}.{sys.version_info[1]}', platform.machine(),"
        " platform.libc_ver()[1],"
        f" [importlib.import_module(n).__file__ for n in {list(names)!r}]]))"
    )
    run = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python"]
    out = subprocess.run(
        [*run, images.LB_IMAGE, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    version, machine, libc, files = json.loads(out.splitlines()[-1])
    glibc = tuple(int(x) for x in libc.split(".")[:2])
    reason = images.why_not_compiled(images.Target(version, "", machine, glibc))
    if reason is not None:
        pytest.skip(f"the image's lbproxy is pure Python: {reason}")
    assert len(files) == len(names)
    for name, path in zip(names, files, strict=True):
        assert path.endswith(".so") and "/site-packages/lbproxy/" in path, (name, path)
