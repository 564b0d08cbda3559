"""DockerBackend against the real engine: real containers, real network, real event stream.

Skipped (with the reason printed) where no Docker engine is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import docker_cleanup, docker_cli, docker_names, docker_ps, eventually
from lbproxy import BackendError
from lbproxy._config import DockerBackendConfig
from lbproxy.backends import DockerBackend, ReplicaHandle
from lbproxy.backends._docker import (
    LABEL_INSTANCE,
    LABEL_RESTARTS,
    LABEL_SLOT,
    death_reason,
    replica_of,
    slot_of,
)

pytestmark = pytest.mark.usefixtures("docker_images")

BackendFactory = Callable[..., DockerBackend]


@pytest.fixture
async def docker_backend() -> AsyncIterator[BackendFactory]:
    """``docker_backend(**config)``: backends sharing one test-unique instance and network."""
    prefix = docker_names()
    base = {"instance": prefix, "network": f"{prefix}-net"}
    made: list[DockerBackend] = []

    def make(**overrides: Any) -> DockerBackend:
        backend = DockerBackend(DockerBackendConfig(**{**base, **overrides}), stop_timeout=2)
        backend.prefix = prefix  # type: ignore[attr-defined]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        with contextlib.suppress(Exception):
            await backend.close()
    docker_cleanup(prefix, base["network"])


def inspect(name_or_id: str) -> dict[str, Any] | None:
    done = subprocess.run(["docker", "inspect", name_or_id], capture_output=True, text=True)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


async def home(address: str) -> dict[str, Any] | None:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{address}/home", timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


def watching(backend: DockerBackend) -> asyncio.Task[None]:
    return asyncio.ensure_future(backend.watch())


async def stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- pure helpers -------------------------------------------------------------------------------


def test_replica_of_reads_a_listing() -> None:
    listing = {
        "Id": "abc",
        "Names": ["/web-3"],
        "State": "running",
        "Labels": {LABEL_INSTANCE: "x", LABEL_SLOT: "3"},
        "NetworkSettings": {"Networks": {"net": {"IPAddress": "172.20.0.7"}}},
    }
    assert replica_of(listing, "net", 5000) == ReplicaHandle("web-3", 3, "172.20.0.7:5000", "abc")
    assert replica_of(listing, "other-net", 5000) is None  # not on our network: unreachable
    counted = {**listing, "Labels": {LABEL_SLOT: "3", LABEL_RESTARTS: "4"}}
    assert replica_of(counted, "net", 5000) == ReplicaHandle(
        "web-3", 3, "172.20.0.7:5000", "abc", restarts=4
    )
    # A dead container has no address, but still its name, slot and count.
    assert slot_of({**counted, "State": "exited", "NetworkSettings": {}}) == ("web-3", 3, 4)
    assert slot_of({**counted, "Labels": {LABEL_SLOT: "3", LABEL_RESTARTS: "x"}}) == (
        "web-3",
        3,
        0,
    )
    assert replica_of({**listing, "Labels": {LABEL_SLOT: "0"}}, "net", 5000) is None
    assert replica_of({**listing, "Labels": {LABEL_SLOT: "x"}}, "net", 5000) is None
    assert replica_of({**listing, "Names": ["/-bad"]}, "net", 5000) is None


def test_death_reason() -> None:
    died = {"Action": "die", "Actor": {"ID": "a", "Attributes": {"exitCode": "137"}}}
    assert death_reason(died) == "container exited with status 137"
    assert death_reason({"Action": "oom"}) == "container ran out of memory"
    assert death_reason({"Action": "destroy"}) == "container was removed"


# --- lifecycle ----------------------------------------------------------------------------------


async def test_start_list_stop_a_real_container(docker_backend: BackendFactory) -> None:
    backend = docker_backend(environment={"GREETING": "hi"})
    prefix = backend.prefix  # type: ignore[attr-defined]
    assert await backend.open() == []
    name = f"{prefix}-a"
    handle = await backend.start(name, 4)
    assert handle.hostname == name
    assert handle.slot == 4
    info = inspect(name)
    assert info is not None and info["State"]["Running"]
    assert info["Id"] == handle.ident
    assert info["Config"]["Labels"][LABEL_INSTANCE] == prefix
    assert info["Config"]["Labels"][LABEL_SLOT] == "4"
    assert info["Config"]["Labels"][LABEL_RESTARTS] == "0"
    assert f"SERVER_ID={name}" in info["Config"]["Env"]
    assert "GREETING=hi" in info["Config"]["Env"]
    network = info["NetworkSettings"]["Networks"][f"{prefix}-net"]
    assert name in network["Aliases"]
    assert handle.address == f"{network['IPAddress']}:5000"

    body = await eventually(lambda: home(handle.address), timeout=30)
    assert body == {"message": f"Hello from Server: {name}", "status": "successful"}
    assert await backend.list() == [handle]

    await backend.stop(handle)
    assert inspect(name) is None
    assert await backend.list() == []
    await backend.stop(handle)  # gone already: no error
    assert await backend.wait_exit(handle) == "not running"


async def test_missing_image_is_a_clear_error(docker_backend: BackendFactory) -> None:
    backend = docker_backend(image="lbproxy/no-such-image:never")
    with pytest.raises(BackendError) as info:
        await backend.open()
    assert "lbproxy/no-such-image:never" in str(info.value)
    assert "make images" in str(info.value)
    with pytest.raises(BackendError, match="make images"):
        await backend.start(f"{backend.prefix}-x", 1)  # type: ignore[attr-defined]
    assert docker_ps(backend.prefix, running=False) == {}  # type: ignore[attr-defined]


async def test_name_taken_by_a_foreign_container_is_refused(docker_backend: BackendFactory) -> None:
    backend = docker_backend()
    await backend.open()
    name = f"{backend.prefix}-foreign"  # type: ignore[attr-defined]
    await docker_cli("create", "--name", name, "lbproxy/server:latest")
    try:
        with pytest.raises(BackendError, match="not a replica of this balancer"):
            await backend.start(name, 1)
        assert inspect(name) is not None  # someone else's container is never touched
    finally:
        await docker_cli("rm", "-f", name)


async def test_a_leftover_of_ours_with_the_name_is_replaced(docker_backend: BackendFactory) -> None:
    first = docker_backend(remove_on_shutdown=False)
    await first.open()
    name = f"{first.prefix}-again"  # type: ignore[attr-defined]
    old = await first.start(name, 1)
    new = await docker_backend().start(name, 1)
    assert new.ident != old.ident
    assert inspect(old.ident) is None
    assert inspect(name)["Id"] == new.ident  # type: ignore[index]


# --- deaths -------------------------------------------------------------------------------------


async def test_a_killed_container_is_reported_by_its_event(docker_backend: BackendFactory) -> None:
    backend = docker_backend()
    await backend.open()
    watcher = watching(backend)
    try:
        handle = await backend.start(f"{backend.prefix}-k", 1)  # type: ignore[attr-defined]
        waiter = asyncio.ensure_future(backend.wait_exit(handle))
        await asyncio.sleep(0.5)
        assert not waiter.done()
        await docker_cli("kill", handle.ident)
        # No heartbeat exists at this level: only the event stream can tell.
        reason = await asyncio.wait_for(waiter, 10)
        assert reason == "container exited with status 137"
    finally:
        await stop_task(watcher)


class EngineRelay:
    """A unix socket relaying to the engine's, which the test can cut and restore: the real
    event stream breaking and the engine being unreachable for a while."""

    def __init__(self, engine: str, path: Path) -> None:
        self.engine = engine
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_unix_connection(self.engine)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.skip(f"the relay needs the engine on a unix socket, DOCKER_HOST is {host}")
    return host.removeprefix("unix://")


async def test_event_stream_reconnects_and_misses_nothing(
    docker_backend: BackendFactory, tmp_path: Path
) -> None:
    relay = EngineRelay(engine_socket(), tmp_path / "engine.sock")
    await relay.start()
    backend = docker_backend(url=f"unix://{relay.path}")
    await backend.open()
    watcher = watching(backend)
    try:
        names = [f"{backend.prefix}-e{i}" for i in range(2)]  # type: ignore[attr-defined]
        a, b = [await backend.start(n, i + 1) for i, n in enumerate(names)]
        await asyncio.sleep(0.5)  # the stream is up
        streams = relay.connections
        # The stream breaks, and while the engine cannot be reached a replica dies.
        await relay.cut()
        await docker_cli("kill", a.ident)
        await asyncio.sleep(1.0)
        await relay.start()
        # Reconnected, the backend learns of the death it could not see ...
        assert await asyncio.wait_for(backend.wait_exit(a), 20)
        assert relay.connections > streams
        # ... and follows live events again.
        waiter = asyncio.ensure_future(backend.wait_exit(b))
        await asyncio.sleep(0.5)
        assert not waiter.done()
        await docker_cli("kill", b.ident)
        assert await asyncio.wait_for(waiter, 10) == "container exited with status 137"
    finally:
        await stop_task(watcher)
        await relay.cut()


# --- adoption and shutdown ----------------------------------------------------------------------


async def test_open_adopts_running_replicas_and_replaces_dead_ones(
    docker_backend: BackendFactory,
) -> None:
    old = docker_backend(remove_on_shutdown=False)
    prefix = old.prefix  # type: ignore[attr-defined]
    await old.open()
    kept = [
        await old.start(f"{prefix}-r{slot}", slot, restarts) for slot, restarts in [(2, 0), (5, 3)]
    ]
    dead = await old.start(f"{prefix}-dead", 7, 1)
    await docker_cli("kill", dead.ident)
    unusable = f"{prefix}-unlabelled"
    await docker_cli(
        "create",
        "--name",
        unusable,
        "--label",
        f"{LABEL_INSTANCE}={prefix}",
        "lbproxy/server:latest",
    )
    await old.close()  # a balancer that leaves its replicas running
    assert set(docker_ps(prefix)) == {h.hostname for h in kept}

    new = docker_backend()
    adopted = await new.open()
    # The running ones: same containers, same slots, their restart counts (from labels).
    assert adopted[:2] == kept  # in slot order: 2, 5, then 7
    assert [h.restarts for h in kept] == [0, 3]
    # The one that died while no balancer ran: removed, and replaced in its slot (same
    # name, its count one more), so N is what it was.
    replacement = adopted[2]
    assert (replacement.hostname, replacement.slot, replacement.restarts) == (dead.hostname, 7, 2)
    assert replacement.ident != dead.ident
    assert inspect(dead.ident) is None
    assert inspect(unusable) is None  # not a replica (no slot): removed, not replaced
    info = inspect(replacement.hostname)
    assert info is not None and info["State"]["Running"]
    assert info["Config"]["Labels"][LABEL_RESTARTS] == "2"
    assert set(docker_ps(prefix, running=False)) == {
        *(h.hostname for h in kept),
        replacement.hostname,
    }
    await eventually(lambda: home(replacement.address), timeout=30)

    await new.close()  # remove_on_shutdown (the default) removes them
    assert docker_ps(prefix, running=False) == {}
    assert inspect(f"{prefix}-net") is None  # the network it created is gone too


async def test_a_start_cancelled_at_any_point_leaves_no_container(
    docker_backend: BackendFactory,
) -> None:
    # Shutdown cancels a start while the engine may be creating or starting the container,
    # and closes the backend at once; the engine finishes what it began regardless, and the
    # backend must still undo it.
    prefix = docker_backend().prefix  # type: ignore[attr-defined]
    for i, delay in enumerate((0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)):
        backend = docker_backend()
        await backend.open()
        task = asyncio.ensure_future(backend.start(f"{prefix}-c{i}", i + 1))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await backend.close()
    await asyncio.sleep(1.0)  # anything the engine was still doing has landed by now
    assert docker_ps(prefix, running=False) == {}
