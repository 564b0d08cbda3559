"""The replica web server (docs/api.md) as a real child process on a real port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from conftest import PY, free_port, pid_alive


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SERVER_ID", "PORT", "HOST", "LISTEN_FD", "LBPROXY_PARENT_PID")
    }
    env.update(extra)
    return env


async def _wait_listening(proc: Process, port: int, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"replica exited with {proc.returncode} before listening")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.5)
        except (OSError, TimeoutError):
            if loop.time() > deadline:
                raise TimeoutError(f"replica not listening on {port} after {timeout}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


@pytest.fixture
async def replica() -> AsyncIterator[Callable[..., Any]]:
    """Start ``python -m lbproxy.replica`` with the given args/env; returns (proc, port)."""
    procs: list[Process] = []

    async def start(args: list[str], env: dict[str, str], port: int) -> tuple[Process, int]:
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-m",
            "lbproxy.replica",
            *args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        await _wait_listening(proc, port)
        return proc, port

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def _check_endpoints(http: aiohttp.ClientSession, port: int, server_id: str) -> None:
    base = f"http://127.0.0.1:{port}"
    async with http.get(f"{base}/home") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == {
            "message": f"Hello from Server: {server_id}",
            "status": "successful",
        }
    async with http.get(f"{base}/heartbeat") as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    for path in ("/", "/other", "/home/extra", "/heartbeat2", "/rep"):
        async with http.get(f"{base}{path}") as resp:
            assert resp.status == 404, path


async def _stop_with_sigterm(proc: Process) -> None:
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
    assert not pid_alive(proc.pid)


async def test_replica_with_arguments(http: aiohttp.ClientSession, replica: Any) -> None:
    port = free_port()
    proc, _ = await replica(
        ["--id", "Server 7", "--host", "127.0.0.1", "--port", str(port)], _clean_env(), port
    )
    await _check_endpoints(http, port, "Server 7")
    await _stop_with_sigterm(proc)


async def test_replica_with_environment(http: aiohttp.ClientSession, replica: Any) -> None:
    port = free_port()
    proc, _ = await replica([], _clean_env(SERVER_ID="S42", PORT=str(port)), port)
    await _check_endpoints(http, port, "S42")
    await _stop_with_sigterm(proc)


async def test_arguments_override_environment(http: aiohttp.ClientSession, replica: Any) -> None:
    port = free_port()
    proc, _ = await replica(
        ["--id", "from-arg", "--port", str(port)],
        _clean_env(SERVER_ID="from-env", PORT=str(free_port())),
        port,
    )
    await _check_endpoints(http, port, "from-arg")
    await _stop_with_sigterm(proc)


async def test_replica_keeps_serving_many_requests(
    http: aiohttp.ClientSession, replica: Any
) -> None:
    port = free_port()
    proc, _ = await replica(["--id", "busy", "--port", str(port)], _clean_env(), port)

    async def one() -> int:
        async with http.get(f"http://127.0.0.1:{port}/home") as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(100))), 30)
    assert statuses == [200] * 100
    await _stop_with_sigterm(proc)


async def test_launched_through_a_shell_it_serves(http: aiohttp.ClientSession) -> None:
    # LBPROXY_PARENT_PID names the launcher; a shell between them is not a reason to exit.
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        f"{PY} -m lbproxy.replica --id wrapped --port {port}; echo replica ended",
        env=_clean_env(LBPROXY_PARENT_PID=str(os.getpid())),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await _wait_listening(proc, port)
        await _check_endpoints(http, port, "wrapped")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)


async def test_exits_at_once_when_its_launcher_is_already_gone() -> None:
    # The launcher died before the replica could ask to die with it.
    gone = await asyncio.create_subprocess_exec(PY, "-c", "pass")
    await gone.wait()
    proc = await asyncio.create_subprocess_exec(
        PY,
        "-m",
        "lbproxy.replica",
        "--port",
        str(free_port()),
        env=_clean_env(LBPROXY_PARENT_PID=str(gone.pid)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(proc.wait(), 20) == 0
