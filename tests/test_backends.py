"""Replica backends on real processes and real sockets: ProcessBackend and StaticBackend."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from conftest import PY, eventually, group_processes, pid_alive, pids_of_children
from lbproxy import BackendError, parse_config
from lbproxy._config import ProcessBackendConfig, StaticReplica
from lbproxy.backends import ProcessBackend, StaticBackend, make_backend

IGNORE_SIGTERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(120)\n"
)


#: A replica that binds PORT itself, as most servers do (exits 98 if the port is taken).
BINDS_PORT = """\
import os, socket, sys
os.environ.pop("LISTEN_FD", None)
probe = socket.socket()
try:
    probe.bind(("127.0.0.1", int(os.environ["PORT"])))
except OSError:
    sys.exit(98)
probe.close()
os.execv(sys.executable, [sys.executable, "-m", "lbproxy.replica", "--host", "127.0.0.1"])
"""


def _ignores_sigterm(pid: int) -> bool:
    """True once ``pid`` has SIGTERM in its ignored-signal mask (/proc/<pid>/status SigIgn)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def _shell(script: str, stop_timeout: float = 5.0) -> ProcessBackend:
    """A process backend whose replicas run ``script`` in a shell."""
    return ProcessBackend(
        ProcessBackendConfig(command=["/bin/sh", "-c", script], output="discard"),
        stop_timeout=stop_timeout,
    )


@pytest.fixture
async def process_backend() -> AsyncIterator[ProcessBackend]:
    backend = ProcessBackend(ProcessBackendConfig(output="discard"), stop_timeout=3.0)
    yield backend
    await asyncio.wait_for(backend.close(), 30)


async def _home(http: aiohttp.ClientSession, address: str) -> dict[str, str] | None:
    try:
        async with http.get(
            f"http://{address}/home", timeout=aiohttp.ClientTimeout(total=2)
        ) as resp:
            if resp.status != 200:
                return None
            return await resp.json()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_process_backend_start_list_stop(
    process_backend: ProcessBackend, http: aiohttp.ClientSession
) -> None:
    assert process_backend.manages_lifecycle is True
    handle = await process_backend.start("alpha", 1)
    assert handle.hostname == "alpha"
    assert handle.slot == 1
    host, _, port = handle.address.rpartition(":")
    assert host == "127.0.0.1"
    assert 0 < int(port) < 65536
    pid = process_backend.pid(handle)
    assert pid is not None
    assert handle.ident == str(pid)
    assert pid in pids_of_children(os.getpid())
    assert pid_alive(pid)
    assert await process_backend.list() == [handle]

    # The address answers as the replica named by the backend (SERVER_ID = hostname).
    body = await eventually(lambda: _home(http, handle.address), timeout=20)
    assert body == {"message": "Hello from Server: alpha", "status": "successful"}

    started = time.monotonic()
    await asyncio.wait_for(process_backend.stop(handle), 10)
    assert time.monotonic() - started < 3.0  # SIGTERM was enough; no kill timeout
    assert not pid_alive(pid)
    assert await process_backend.list() == []
    assert process_backend.pid(handle) is None
    # The port is released: nothing answers there any more.
    assert await _home(http, handle.address) is None
    # Stopping again (or a replica that is already gone) is fine.
    await process_backend.stop(handle)


async def test_process_backend_wait_exit_reports_death(process_backend: ProcessBackend) -> None:
    handle = await process_backend.start("beta", 2)
    pid = process_backend.pid(handle)
    assert pid is not None
    waiter = asyncio.ensure_future(process_backend.wait_exit(handle))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    os.kill(pid, signal.SIGKILL)
    reason = await asyncio.wait_for(waiter, 10)
    assert reason == "killed by signal 9"
    assert await process_backend.list() == []
    await process_backend.stop(handle)  # already dead: no error
    assert process_backend.pid(handle) is None


async def test_process_backend_wait_exit_status() -> None:
    backend = ProcessBackend(
        ProcessBackendConfig(command=[PY, "-c", "import sys; sys.exit(3)"], output="discard")
    )
    handle = await backend.start("gamma", 3)
    assert await asyncio.wait_for(backend.wait_exit(handle), 10) == "exited with status 3"
    await backend.close()


async def test_process_backend_close_stops_everything(process_backend: ProcessBackend) -> None:
    handles = [await process_backend.start(f"r{i}", i) for i in range(1, 4)]
    pids = [process_backend.pid(h) for h in handles]
    assert all(p is not None and pid_alive(p) for p in pids)
    assert len({h.address for h in handles}) == 3
    assert set(await process_backend.list()) == set(handles)
    await asyncio.wait_for(process_backend.close(), 15)
    assert not any(pid_alive(p) for p in pids if p is not None)
    assert await process_backend.list() == []
    assert not pids_of_children(os.getpid()) & {p for p in pids if p is not None}


async def test_process_backend_kills_replica_that_ignores_sigterm() -> None:
    backend = ProcessBackend(
        ProcessBackendConfig(command=[PY, "-c", IGNORE_SIGTERM], output="discard"),
        stop_timeout=0.5,
    )
    try:
        handle = await backend.start("stubborn", 1)
        pid = backend.pid(handle)
        assert pid is not None
        await eventually(lambda: _ignores_sigterm(pid), timeout=10)
        started = time.monotonic()
        await asyncio.wait_for(backend.stop(handle), 10)
        elapsed = time.monotonic() - started
        assert not pid_alive(pid)
        assert 0.4 <= elapsed < 3.0, elapsed
        assert await backend.list() == []
    finally:
        await asyncio.wait_for(backend.close(), 10)


async def test_process_backend_stop_kills_the_whole_group() -> None:
    # A shell that runs the real server as its child: stop must reach the grandchild too.
    backend = _shell(f"{PY} -c 'import time; time.sleep(120)' & wait", stop_timeout=2.0)
    try:
        handle = await backend.start("shell", 1)
        pid = backend.pid(handle)
        assert pid is not None
        grandchildren = await eventually(lambda: pids_of_children(pid), timeout=10)
        await asyncio.wait_for(backend.stop(handle), 10)
        assert not pid_alive(pid)
        await eventually(lambda: not any(pid_alive(p) for p in grandchildren), timeout=5)
    finally:
        await asyncio.wait_for(backend.close(), 10)


async def test_process_backend_serves_a_shell_that_does_not_exec(
    http: aiohttp.ClientSession,
) -> None:
    # The server is the shell's child, not the balancer's: it must serve all the same.
    backend = _shell(f"{PY} -m lbproxy.replica; echo replica ended")
    try:
        handle = await backend.start("wrapped", 1)
        body = await eventually(lambda: _home(http, handle.address), timeout=20)
        assert body == {"message": "Hello from Server: wrapped", "status": "successful"}
        assert await backend.list() == [handle]
    finally:
        await asyncio.wait_for(backend.close(), 10)


async def test_process_backend_command_that_binds_its_port_itself(
    http: aiohttp.ClientSession,
) -> None:
    # A server that can only bind a port (no inherited socket): given PORT alone, it serves;
    # handed the listening socket as well, it could not bind the port the socket holds.
    command = [PY, "-c", BINDS_PORT]
    for listen_fd, serves in ((True, False), (False, True)):
        backend = ProcessBackend(
            ProcessBackendConfig(command=command, output="discard", listen_fd=listen_fd)
        )
        try:
            handle = await backend.start("binds", 1)
            if serves:
                body = await eventually(lambda h=handle: _home(http, h.address), timeout=20)
                assert body == {"message": "Hello from Server: binds", "status": "successful"}
            else:
                reason = await asyncio.wait_for(backend.wait_exit(handle), 20)
                assert reason == "exited with status 98"  # EADDRINUSE
        finally:
            await asyncio.wait_for(backend.close(), 10)


async def test_process_backend_stop_waits_for_the_whole_group() -> None:
    # The shell leaves at the first SIGTERM; its child ignores it: stop() returns only once
    # the child is gone too (killed after the stop timeout).
    backend = _shell(f"{PY} -c '{IGNORE_SIGTERM}' & wait", stop_timeout=0.5)
    try:
        handle = await backend.start("stubborn-child", 1)
        pid = backend.pid(handle)
        assert pid is not None
        child = await eventually(
            lambda: next((c for c in pids_of_children(pid) if _ignores_sigterm(c)), None),
            timeout=10,
        )
        await asyncio.wait_for(backend.stop(handle), 10)
        assert not pid_alive(pid)
        assert not pid_alive(child)
        assert not group_processes({pid})
    finally:
        await asyncio.wait_for(backend.close(), 10)


async def test_process_backend_stop_ends_what_an_exited_command_left() -> None:
    # The command exits at once, leaving a child behind in its group.
    backend = _shell(f"{PY} -c 'import time; time.sleep(120)' & exit 3", stop_timeout=2.0)
    try:
        handle = await backend.start("leaves-a-child", 1)
        pid = backend.pid(handle)
        assert pid is not None
        assert await asyncio.wait_for(backend.wait_exit(handle), 10) == "exited with status 3"
        left = group_processes({pid})
        assert left  # the child (and the watcher) outlived the command
        await asyncio.wait_for(backend.stop(handle), 10)
        assert not group_processes({pid})
        assert not any(pid_alive(p) for p in left)
    finally:
        await asyncio.wait_for(backend.close(), 10)


async def test_process_backend_bad_command_raises_backend_error() -> None:
    backend = ProcessBackend(
        ProcessBackendConfig(command=["/nonexistent/lbproxy-replica"], output="discard")
    )
    with pytest.raises(BackendError, match="nonexistent"):
        await backend.start("nope", 1)
    assert await backend.list() == []
    await backend.close()


async def test_static_backend_returns_configured_addresses() -> None:
    replicas = [
        StaticReplica(hostname="web-a", address="127.0.0.1:8001"),
        StaticReplica(hostname="web-b", address="10.0.0.2:9000"),
    ]
    backend = StaticBackend(replicas)
    assert backend.manages_lifecycle is False
    assert backend.fixed_hostnames == ["web-a", "web-b"]
    before = pids_of_children(os.getpid())

    a = await backend.start("web-a", 1)
    b = await backend.start("web-b", 2)
    assert (a.hostname, a.slot, a.address, a.ident) == (
        "web-a",
        1,
        "127.0.0.1:8001",
        "127.0.0.1:8001",
    )
    assert (b.hostname, b.slot, b.address) == ("web-b", 2, "10.0.0.2:9000")
    assert set(await backend.list()) == {a, b}
    # Nothing was started.
    assert pids_of_children(os.getpid()) == before

    # Nothing but a heartbeat tells that a static server died: wait_exit never returns.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(backend.wait_exit(a), 0.2)

    await backend.stop(a)
    assert await backend.list() == [b]
    await backend.close()
    assert await backend.list() == []
    assert pids_of_children(os.getpid()) == before


async def test_static_backend_unknown_hostname() -> None:
    backend = StaticBackend([StaticReplica(hostname="web-a", address="127.0.0.1:8001")])
    with pytest.raises(BackendError, match="not-there"):
        await backend.start("not-there", 1)
    assert await backend.list() == []


def test_make_backend_picks_the_configured_kind() -> None:
    process = make_backend(parse_config({}))
    assert isinstance(process, ProcessBackend)
    static = make_backend(
        parse_config(
            {
                "replicas": {
                    "backend": "static",
                    "static": [{"hostname": "s1", "address": "127.0.0.1:1234"}],
                }
            }
        )
    )
    assert isinstance(static, StaticBackend)
    assert static.fixed_hostnames == ["s1"]
