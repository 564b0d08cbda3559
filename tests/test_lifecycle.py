"""Shutdown and the command line: the real CLI as a child process, real signals, real ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from conftest import (
    PY,
    TEST_CONFIG,
    deep_merge,
    eventually,
    free_port,
    group_processes,
    pid_alive,
    pids_of_children,
    url,
    wait_for_port,
)
from lbproxy import Server, parse_config


def _port_free(port: int) -> bool:
    """Another balancer could listen on the port now (as a restart would, SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


async def _children(pid: int, n: int) -> set[int]:
    return await eventually(lambda: (c := pids_of_children(pid)) and len(c) == n and c, timeout=20)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_balancer_and_its_replicas(
    balancer_process: Any, http: aiohttp.ClientSession, sig: signal.Signals
) -> None:
    bp = balancer_process()
    children = await _children(bp.proc.pid, 3)
    assert len(children) == 3
    async with http.get(f"{bp.url}/rep") as resp:
        assert resp.status == 200
        assert (await resp.json())["message"]["N"] == 3
    async with http.get(f"{bp.url}/home") as resp:
        assert resp.status == 200

    started = time.monotonic()
    code = await asyncio.to_thread(bp.stop, sig, 20)
    elapsed = time.monotonic() - started
    print(f"\n{sig.name} -> exit {code} in {elapsed * 1000:.0f} ms")
    assert code == 0
    assert elapsed < 5, elapsed
    # Every replica was stopped before the balancer exited; nothing is left.
    assert not [p for p in children if pid_alive(p)]
    assert _port_free(bp.port)
    assert bp.proc.stdout is not None
    output = bp.proc.stdout.read().decode()
    assert "shutting down" in output
    assert "stopped" in output
    assert "Traceback" not in output


#: A replica command that starts a child of its own (a worker, a sidecar), then becomes the
#: built-in server.
SPAWNS_A_CHILD = (
    "import os, subprocess, sys\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'lbproxy.replica'])\n"
)
#: Replica commands a user may configure, with how many processes each runs.
COMMANDS: dict[str, tuple[list[str] | None, int]] = {
    "builtin": (None, 1),
    # A shell that runs the server as its child (no exec), as a wrapper script would.
    "sh-without-exec": (["/bin/sh", "-c", f"{PY} -m lbproxy.replica; echo replica ended"], 2),
    "spawns-a-child": ([PY, "-c", SPAWNS_A_CHILD], 2),
}


@pytest.mark.parametrize(("command", "per_replica"), COMMANDS.values(), ids=COMMANDS.keys())
async def test_killed_balancer_leaves_no_replicas(
    balancer_process: Any, http: aiohttp.ClientSession, command: list[str] | None, per_replica: int
) -> None:
    bp = balancer_process({"replicas": {"process": {"command": command}}})
    async with http.get(f"{bp.url}/rep") as resp:
        names = (await resp.json())["message"]["replicas"]
    assert len(names) == 3
    # Every replica serves, whatever its command.
    seen = set()
    for i in range(60):
        async with http.get(f"{bp.url}/home", headers={"X-Request-Id": str(i)}) as resp:
            assert resp.status == 200
            seen.add((await resp.json())["message"].removeprefix("Hello from Server: "))
    assert seen == set(names)
    children = await _children(bp.proc.pid, 3 * per_replica)
    groups = {os.getpgid(p) for p in children}
    assert len(groups) == 3  # a process group per replica
    # The replicas' processes, and whatever else is in their groups (their watchers).
    members = group_processes(groups)
    assert children <= members

    bp.proc.kill()
    assert await asyncio.to_thread(bp.proc.wait, 10) == -signal.SIGKILL
    killed_at = time.monotonic()
    # Every process of every replica's group ends: SIGTERM at once, SIGKILL after the
    # stop timeout for anything that ignores it.
    await eventually(lambda: not group_processes(groups), timeout=15)
    print(f"\nbalancer SIGKILL -> replica groups gone in {time.monotonic() - killed_at:.2f}s")
    assert not [p for p in members if pid_alive(p)]
    await eventually(lambda: _port_free(bp.port), timeout=5)


async def test_in_process_shutdown_leaves_nothing(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    server = await balancer({"replicas": {"count": 2}})
    backend_pids = pids_of_children(os.getpid())
    assert len(backend_pids) == 2
    assert len(server.tasks) >= 2  # a keeper per slot
    async with http.get(url(server, "/home")) as resp:
        assert resp.status == 200
    port = server.port
    assert port is not None

    await asyncio.wait_for(server.shutdown(), 20)
    assert len(server.tasks) == 0
    assert not [p for p in backend_pids if pid_alive(p)]
    assert pids_of_children(os.getpid()) == set()
    assert await server.backend.list() == []
    assert _port_free(port)
    # Spawning more work after shutdown is refused, so nothing can restart a replica.
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        server.tasks.spawn(coro, name="late")
    # Shutting down twice (the fixture does it again) is harmless.
    await asyncio.wait_for(server.shutdown(), 20)


async def test_shutdown_while_replica_is_still_starting(tmp_path: Path) -> None:
    # A replica that never answers: shutdown comes while its slot is starting or backing off.
    config = parse_config(
        deep_merge(
            TEST_CONFIG,
            {
                "replicas": {
                    "count": 2,
                    "stop_timeout": 2,
                    "process": {"command": [PY, "-c", "import time; time.sleep(120)"]},
                },
                "health": {"startup_timeout": 0.5},
            },
        )
    )
    server = Server(config)
    try:
        await asyncio.wait_for(server.startup(), 20)
        await eventually(lambda: len(pids_of_children(os.getpid())) == 2, timeout=10)
    finally:
        started = time.monotonic()
        await asyncio.wait_for(server.shutdown(), 20)
    assert time.monotonic() - started < 5
    assert len(server.tasks) == 0
    assert pids_of_children(os.getpid()) == set()


async def test_shutdown_does_not_hang_on_a_swallowed_cancellation(balancer: Any) -> None:
    # aiohttp turns a cancellation that meets a firing request timeout into a TimeoutError,
    # so a keeper probing a silent replica can miss the first cancel; shutdown must still end.
    server = await balancer({"replicas": {"count": 1}})
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed >= 2:
                    raise
                swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    server.tasks.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    pids = pids_of_children(os.getpid())
    await asyncio.wait_for(server.shutdown(), 10)
    assert swallowed == 2
    assert len(server.tasks) == 0
    assert not [p for p in pids if pid_alive(p)]


# -- the command line ----------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "lbproxy", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_help(tmp_path: Path) -> None:
    top = _cli("--help", cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    assert "--config" in top.stdout
    assert "run" in top.stdout
    assert "replica" in top.stdout

    run = _cli("run", "--help", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "--config" in run.stdout
    assert "--check" in run.stdout

    replica = _cli("replica", "--help", cwd=tmp_path)
    assert replica.returncode == 0, replica.stderr
    assert "--port" in replica.stdout
    assert "SERVER_ID" in replica.stdout


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"replicas": {"count": 2, "bogus": 1}}, "replicas.bogus"),
        ({"health": {"intervall": 1}}, "health.intervall"),
        ({"replicas": {"count": -1}}, "replicas.count"),
        ("listen: [unclosed\n", "not valid YAML"),
    ],
    ids=["unknown-key", "typo", "negative-count", "broken-yaml"],
)
def test_invalid_config_exits_2_naming_the_field(tmp_path: Path, content: Any, named: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    for args in (["run", "-c", str(path)], ["-c", str(path)], ["run", "-c", str(path), "--check"]):
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert named in result.stderr
        assert "invalid configuration" in result.stderr
        assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = _cli("run", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


def test_check_prints_validated_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"replicas": {"count": 2}, "hashing": {"function": "modulo"}}))
    result = _cli("run", "-c", str(path), "--check", "--port", "6123", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["replicas"]["count"] == 2
    assert printed["hashing"]["function"] == "modulo"
    assert printed["listen"]["port"] == 6123  # command-line override
    # Defaults are filled in: the whole validated config, not the file echoed back.
    assert printed["health"]["interval"] == 2.0
    assert printed["replicas"]["backend"] == "process"
    assert parse_config(printed) == parse_config(
        deep_merge(yaml.safe_load(path.read_text()), {"listen": {"port": 6123}})
    )

    # With no config file at all, ./config.yaml is optional and the defaults are printed.
    default = _cli("--check", cwd=tmp_path / "..")
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout) == json.loads(parse_config({}).model_dump_json())


def test_set_overrides_any_field_and_rejects_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"replicas": {"count": 2}}))
    args = ["run", "-c", str(path), "--check", "--backend", "docker"]
    sets = ["--set", "replicas.docker.network=other-net", "--set", "health.interval=0.5"]
    result = _cli(*args, *sets, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["replicas"]["backend"] == "docker"
    assert printed["replicas"]["docker"]["network"] == "other-net"
    assert printed["health"]["interval"] == 0.5  # VALUE is YAML: a number, not a string
    assert printed["replicas"]["count"] == 2

    unknown = _cli(
        "run", "-c", str(path), "--check", "--set", "replicas.dockr.image=x", cwd=tmp_path
    )
    assert unknown.returncode == 2
    assert "replicas.dockr" in unknown.stderr
    malformed = _cli("run", "-c", str(path), "--check", "--set", "health.interval", cwd=tmp_path)
    assert malformed.returncode == 2
    assert "FIELD=VALUE" in malformed.stderr


@pytest.mark.parametrize("content", ["", "# every line commented out\n"], ids=["empty", "comments"])
def test_empty_config_file_is_refused_at_startup(tmp_path: Path, content: str) -> None:
    # Startup has no running configuration to fall back on, and a file with no document
    # cannot be told from one cut short: it is refused rather than run as all defaults.
    path = tmp_path / "config.yaml"
    path.write_text(content)
    for args in (
        ["run", "-c", str(path), "--check"],
        ["run", "-c", str(path), "--port", "0", "--set", "admin.port=0"],
    ):
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "the file is empty" in result.stderr
        assert "write {} in it" in result.stderr
        assert "Traceback" not in result.stderr


TOKEN = "env-token-0123456789abcdef"


def test_check_never_prints_the_admin_token(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"admin": {"token": "file-token-0123456789abcdef"}}))
    for env in ({}, {"LBPROXY_ADMIN_TOKEN": TOKEN}):
        result = subprocess.run(
            [PY, "-m", "lbproxy", "run", "-c", str(path), "--check"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed["admin"] == {
            "host": "127.0.0.1",
            "port": 5001,
            "token": "**********",
            "on_main_port": True,
        }
        assert "token-0123456789abcdef" not in result.stdout + result.stderr
    short = subprocess.run(
        [PY, "-m", "lbproxy", "run", "-c", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "LBPROXY_ADMIN_TOKEN": "short"},
    )
    assert short.returncode == 2 and "admin.token" in short.stderr


def test_admin_token_from_a_file_a_secret_names(tmp_path: Path) -> None:
    # How a Swarm secret reaches the balancer (docs/swarm.md): LBPROXY_ADMIN_TOKEN_FILE.
    secret = tmp_path / "token"

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "lbproxy", "run", "-c", str(tmp_path / "none.yaml"), "--check"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "LBPROXY_ADMIN_TOKEN_FILE": str(path)},
        )

    secret.write_text(TOKEN + "\n")
    (tmp_path / "none.yaml").write_text("{}\n")
    result = check(secret)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["admin"]["token"] == "**********"
    assert TOKEN not in result.stdout + result.stderr
    secret.write_text("short")
    result = check(secret)
    assert result.returncode == 2 and "admin.token" in result.stderr
    result = check(tmp_path / "missing")
    assert result.returncode == 2 and "LBPROXY_ADMIN_TOKEN_FILE" in result.stderr


async def test_admin_token_from_the_environment(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port, admin_port = free_port(), free_port()
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            deep_merge(
                TEST_CONFIG,
                {"listen": {"port": port}, "admin": {"port": admin_port}, "replicas": {"count": 1}},
            )
        )
    )
    proc = await asyncio.create_subprocess_exec(
        PY,
        "-m",
        "lbproxy",
        "run",
        "-c",
        str(path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LBPROXY_ADMIN_TOKEN": TOKEN},
    )
    try:
        await asyncio.to_thread(wait_for_port, admin_port)
        for where in (port, admin_port):
            async with http.post(f"http://127.0.0.1:{where}/add", data=b'{"n": 1}') as r:
                assert r.status == 401
            async with http.post(
                f"http://127.0.0.1:{where}/add",
                data=b'{"n": 1}',
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r:
                assert r.status == 200, await r.text()
        async with http.get(f"http://127.0.0.1:{admin_port}/status") as r:
            assert (await r.json())["message"]["N"] == 3
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
