"""A real lbproxy balancer in its own process, started for one experiment and stopped after it.

The balancer is run the way users run it (``python -m lbproxy run -c config.yaml``) with a
generated config on an ephemeral port; the port is read from its log. Its replicas are found
and killed through a small per-backend interface (``Replicas``): child processes found in
/proc by their ``SERVER_ID`` for the process backend, containers named by their hostname for
the Docker backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import yaml

BackendName = Literal["process", "docker"]
BACKENDS: tuple[BackendName, ...] = ("process", "docker")

#: Environment variable set on every balancer this tool starts (and so inherited by its
#: process replicas), so that leftovers can be found by run and ended by pid, never by name.
RUN_TAG = "LBPROXY_EXPERIMENT_RUN"

_LISTENING = re.compile(r"lbproxy listening on \S+?:(\d+) ")


class ExperimentError(Exception):
    """An experiment could not run (the balancer did not start, an admin call failed...)."""


def balancer_config(
    hash_name: str,
    replicas: int,
    backend: BackendName,
    overrides: dict[str, Any] | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """The config.yaml an experiment runs with: loopback, ephemeral ports, no file watching."""
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "replicas": {"count": replicas, "backend": backend},
        "hashing": {"function": hash_name},
        "reload": {"enabled": False},
        "log_level": "info",
    }
    if backend == "process":
        config["replicas"]["process"] = {"output": "discard"}
    elif run is not None:
        # Its own instance label and network: it neither adopts nor disturbs other balancers'
        # containers (a `make up` stack, another run).
        config["replicas"]["docker"] = {"instance": docker_instance(run), "network": f"lbexp-{run}"}
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            config[section] = {**config.get(section, {}), **values}
        else:
            config[section] = values
    return config


def docker_instance(run: str) -> str:
    """The instance label of the containers of one run's balancer."""
    return f"lbexp-{run}"


# -- finding and killing replicas -----------------------------------------------------------


class Replicas(Protocol):
    """What the experiments need of a backend's replicas, seen from outside the balancer."""

    async def running(self) -> dict[str, str]:
        """hostname -> an id (pid or container) of every replica that runs now."""
        ...

    async def kill(self, hostname: str) -> None:
        """Kill the replica ``hostname`` abruptly (SIGKILL, ``docker kill``)."""
        ...


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue  # a zombie is dead, whatever its parent has not collected yet
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc."""
    children = _proc_children()
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with ({} if it is gone or not ours to read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


class ProcessReplicas:
    """Replicas that are child processes of the balancer, named by ``SERVER_ID``."""

    def __init__(self, balancer_pid: int) -> None:
        self._pid = balancer_pid

    def _scan(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for pid in descendants(self._pid):
            name = environ(pid).get("SERVER_ID")
            if name is not None:
                # A replica command may be a shell running the server: keep the topmost.
                found.setdefault(name, str(pid))
        return found

    async def running(self) -> dict[str, str]:
        # /proc walks take a few milliseconds: off the event loop that is sending the load.
        return await asyncio.to_thread(self._scan)

    async def kill(self, hostname: str) -> None:
        pid = (await self.running()).get(hostname)
        if pid is None:
            raise ExperimentError(f"no running replica process named {hostname!r}")
        os.kill(int(pid), signal.SIGKILL)


class DockerReplicas:
    """Replicas that are containers named by their hostname (the Docker backend), of one
    balancer (its instance label)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._label = f"label=lbproxy.instance={instance}"

    async def _docker(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "docker",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode:
            raise ExperimentError(f"docker {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def running(self) -> dict[str, str]:
        out = await self._docker(
            "ps", "--no-trunc", "--filter", self._label, "--format", "{{.Names}} {{.ID}}"
        )
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    async def kill(self, hostname: str) -> None:
        await self._docker("kill", hostname)

    async def remove_all(self) -> None:
        """Whatever the balancer could not remove itself (it was killed)."""
        ids = (await self._docker("ps", "-aq", "--filter", self._label)).split()
        if ids:
            await self._docker("rm", "-f", *ids)


# -- the balancer ---------------------------------------------------------------------------


class Balancer:
    """A started balancer: its address, its admin API and its replicas."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        port: int,
        log_path: Path,
        replicas: Replicas,
        session: aiohttp.ClientSession,
    ) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.replicas = replicas
        self._session = session

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """One request to the balancer: (status, decoded JSON or text, headers)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        async with self._session.request(
            method,
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as r:
            text = await r.text()
            try:
                decoded: Any = json.loads(text)
            except ValueError:
                decoded = text
            return r.status, decoded, dict(r.headers)

    async def _admin(self, method: str, path: str, body: Any = None) -> list[str]:
        status, answer, _ = await self.call(method, path, body)
        if status != 200:
            raise ExperimentError(f"{method} {path} {body}: {status} {answer}")
        return list(answer["message"]["replicas"])

    async def rep(self) -> list[str]:
        return await self._admin("GET", "/rep")

    async def add(self, n: int, hostnames: Sequence[str] = ()) -> list[str]:
        return await self._admin("POST", "/add", {"n": n, "hostnames": list(hostnames)})

    async def rm(self, n: int, hostnames: Sequence[str] = ()) -> list[str]:
        return await self._admin("DELETE", "/rm", {"n": n, "hostnames": list(hostnames)})

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def _wait_for_port(proc: asyncio.subprocess.Process, log_path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log_path.read_text, errors="replace")
        found = _LISTENING.search(text)
        if found:
            return int(found.group(1))
        if proc.returncode is not None:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.05)
    text = await asyncio.to_thread(log_path.read_text, errors="replace")
    tail = "\n".join(text.splitlines()[-15:])
    state = f"exited with {proc.returncode}" if proc.returncode is not None else "not listening"
    raise ExperimentError(f"the balancer {state} after {timeout:g}s; its log ends:\n{tail}")


async def _stop(proc: asyncio.subprocess.Process, run: str, timeout: float = 30.0) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    # The balancer stops its replicas; anything of this run still alive (it was killed, or a
    # replica outlived it) is ended here, by pid, found by this run's tag.
    for pid in await asyncio.to_thread(_tagged, run):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tagged(run: str) -> list[int]:
    me = os.getpid()
    return [
        int(e)
        for e in os.listdir("/proc")
        if e.isdigit() and int(e) != me and environ(int(e)).get(RUN_TAG) == run
    ]


@contextlib.asynccontextmanager
async def running_balancer(
    workdir: Path,
    hash_name: str = "default",
    replicas: int = 3,
    backend: BackendName = "process",
    overrides: dict[str, Any] | None = None,
    startup_timeout: float = 90.0,
) -> AsyncIterator[Balancer]:
    """Start ``python -m lbproxy run`` with a generated config; stop it and all it started."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:12]
    config_path = workdir / f"config-{hash_name}-{run}.yaml"
    log_path = workdir / f"balancer-{hash_name}-{run}.log"
    config = balancer_config(hash_name, replicas, backend, overrides, run)
    await asyncio.to_thread(config_path.write_text, yaml.safe_dump(config, sort_keys=False))
    with open(log_path, "wb") as log:  # noqa: ASYNC230 (opening a new local file is instant)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lbproxy",
            "run",
            "-c",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, RUN_TAG: run},
        )
    docker = DockerReplicas(docker_instance(run)) if backend == "docker" else None
    try:
        port = await _wait_for_port(proc, log_path, startup_timeout)
        control: Replicas = docker or ProcessReplicas(proc.pid)
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Balancer(proc, port, log_path, control, session)
    finally:
        await _stop(proc, run)
        if docker is not None:
            await docker.remove_all()
