"""Shared fixtures: real balancers, real replica processes, real upstream servers on loopback.

Nothing of lbproxy's own is mocked. In-process balancers (``balancer``) run the real Server on
the test's event loop so tests can look at its state; ``balancer_process`` runs the real CLI
as a child process for what only a separate process can show (signals, memory, leftovers).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from experiments._balancer import descendants
from lbproxy import Config, Server, parse_config
from lbproxy.backends import Backend

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if nested else v
    return out


#: Test defaults: ephemeral ports, quiet replicas, fast health checks, no file watching.
TEST_CONFIG: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 0},
    "admin": {"host": "127.0.0.1", "port": 0},
    "replicas": {"process": {"output": "discard"}, "stop_timeout": 3},
    "health": {"interval": 0.5, "timeout": 0.5, "backoff_initial": 0.2, "backoff_max": 2.0},
    "reload": {"enabled": False},
    "shutdown_timeout": 5,
}


def pids_of_children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    return set(descendants(pid))


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_processes(pgids: set[int]) -> set[int]:
    """Live (not zombie) processes in any of the process groups ``pgids``, as ``ps`` sees
    them (independently of the backend's own /proc reading)."""
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,pgid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    rows = (line.split() for line in out.splitlines())
    return {int(pid) for pid, pgid, stat in rows if int(pgid) in pgids and not stat.startswith("Z")}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


BalancerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def balancer() -> AsyncIterator[BalancerFactory]:
    """Start real balancers in this process: ``await balancer({"replicas": {"count": 2}})``."""
    started: list[Server] = []

    async def start(
        overrides: dict[str, Any] | None = None,
        config_path: Path | None = None,
        backend: Callable[[Config], Backend] | None = None,
    ) -> Server:
        config = parse_config(deep_merge(TEST_CONFIG, overrides or {}))
        server = Server(config, config_path, backend=backend(config) if backend else None)
        started.append(server)
        await server.startup()
        return server

    yield start
    for server in reversed(started):
        await server.shutdown()


def url(server: Server, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def admin_url(server: Server, path: str = "/") -> str:
    """``path`` on the balancer's admin listener."""
    return f"http://127.0.0.1:{server.admin_port}{path}"


UpstreamFactory = Callable[..., Awaitable[str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _heartbeat(request: web.Request) -> web.Response:
    return web.Response()


def body_sink(outcomes: asyncio.Queue[str]) -> Handler:
    """An upstream handler that reads the request body to its end and reports how that went:
    "complete <bytes>", or "error <exception> after <bytes>" for a body cut short."""

    async def sink(request: web.Request) -> web.Response:
        n = 0
        try:
            async for chunk in request.content.iter_any():
                n += len(chunk)
        except Exception as e:
            await outcomes.put(f"error {type(e).__name__} after {n}")
            raise
        await outcomes.put(f"complete {n}")
        return web.json_response({"bytes": n})

    return sink


def upstream_app(routes: dict[str, Handler]) -> web.Application:
    """An app serving ``routes`` (any method) plus a /heartbeat that answers 200."""
    app = web.Application()
    app.router.add_get("/heartbeat", _heartbeat)
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamFactory]:
    """Real aiohttp servers on loopback with handlers of the test's choosing.

    ``address = await upstream({"/path": handler})``; every one also answers /heartbeat.
    """
    runners: list[web.AppRunner] = []

    async def start(
        routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]], name: str = "up"
    ) -> str:
        runner = web.AppRunner(upstream_app(routes), access_log=None)
        await runner.setup()
        site = web.SockSite(runner, _listening_socket())
        await site.start()
        runners.append(runner)
        return f"127.0.0.1:{site._sock.getsockname()[1]}"  # type: ignore[attr-defined]

    yield start
    for r in runners:
        await r.cleanup()


def _listening_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class BalancerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, config: Path) -> None:
        self.proc = proc
        self.port = port
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def balancer_process(tmp_path: Path) -> Iterator[Callable[..., BalancerProcess]]:
    """Run ``python -m lbproxy run -c <config>`` as a real child process."""
    procs: list[BalancerProcess] = []

    def start(overrides: dict[str, Any] | None = None) -> BalancerProcess:
        port = free_port()
        data = deep_merge(TEST_CONFIG, {"listen": {"port": port}})
        data = deep_merge(data, overrides or {})
        path = tmp_path / f"config-{port}.yaml"
        path.write_text(yaml.safe_dump(data))
        proc = subprocess.Popen(
            [PY, "-m", "lbproxy", "run", "-c", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        bp = BalancerProcess(proc, port, path)
        procs.append(bp)
        wait_for_port(port, proc=proc)
        return bp

    yield start
    for bp in procs:
        if bp.proc.poll() is None:
            bp.proc.kill()
            bp.proc.wait()
        if bp.proc.stdout:
            bp.proc.stdout.close()


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


# -- raw upstreams: servers whose every byte the test decides ------------------------------


class RawRequest:
    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes):
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


async def read_raw_request(reader: asyncio.StreamReader) -> RawRequest | None:
    """One HTTP/1.1 request (Content-Length or chunked body); None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [(k, v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)]
    req = RawRequest(method, target, headers, b"")
    if "chunked" in (req.header("Transfer-Encoding") or "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        req.body = bytes(body)
    elif req.header("Content-Length"):
        req.body = await reader.readexactly(int(req.header("Content-Length") or 0))
    return req


def raw_response(status: int, body: bytes = b"", headers: str = "") -> bytes:
    """A complete answer with a Content-Length (``headers``: extra lines, each ending CRLF)."""
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


RawHandler = Callable[
    [RawRequest, asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]
]


class RawUpstream:
    """A server that answers /heartbeat itself and hands every other request to the test.

    The handler gets (request, reader, writer, number of the connection from 1) and returns
    whether to go on reading requests on that connection.
    """

    def __init__(self) -> None:
        self.address = ""
        self.connections = 0
        self.requests: list[RawRequest] = []
        self.writers: list[asyncio.StreamWriter] = []


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[RawHandler], Awaitable[RawUpstream]]]:
    servers: list[tuple[asyncio.Server, RawUpstream]] = []

    async def start(handler: RawHandler) -> RawUpstream:
        up = RawUpstream()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up.connections += 1
            number = up.connections
            up.writers.append(writer)
            try:
                while (req := await read_raw_request(reader)) is not None:
                    if req.target == "/heartbeat":
                        writer.write(raw_response(200))
                        continue
                    up.requests.append(req)
                    if not await handler(req, reader, writer, number):
                        break
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        up.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        servers.append((server, up))
        return up

    yield start
    for server, up in servers:
        server.close()
        for w in up.writers:
            w.close()
        await server.wait_closed()


# --- the repository's tools -----------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def hot_modules() -> tuple[str, ...]:
    """setup.py's HOT_MODULES, the modules it compiles (read, not run: running it builds)."""
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "HOT_MODULES":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no HOT_MODULES")


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"lbproxy_{name}", REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# --- Docker -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """Skips (with the reason in pytest's summary) where no Docker engine can be reached."""
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("Docker tests skipped: the docker command is not installed")
    except subprocess.TimeoutExpired:
        pytest.skip("Docker tests skipped: the Docker engine did not answer within 30s")
    if info.returncode != 0:
        pytest.skip(f"Docker tests skipped: no Docker engine reachable ({info.stderr.strip()})")
    return info.stdout.strip()


@pytest.fixture(scope="session")
def docker_images(docker_engine: str) -> None:
    """lbproxy/lb and lbproxy/server built as `make images` builds them (no registry)."""
    done = subprocess.run([PY, str(REPO / "tools" / "images.py")], timeout=900)
    assert done.returncode == 0, "tools/images.py failed to build the images"


def docker_names() -> str:
    """A prefix unique to this test: container names are global on an engine."""
    return f"lbt{os.getpid() % 1000}{secrets.token_hex(2)}"


def docker_ps(instance: str, *, running: bool = True) -> dict[str, str]:
    """{container name: id} of containers labelled with ``instance``."""
    cmd = ["docker", "ps", "--no-trunc", "--filter", f"label=lbproxy.instance={instance}"]
    cmd += ["--format", "{{.Names}} {{.ID}}"]
    if not running:
        cmd.insert(2, "-a")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def docker_cleanup(instance: str, network: str | None = None) -> None:
    """Remove whatever a test left behind under its own instance label and network."""
    ids = list(docker_ps(instance, running=False).values())
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    if network:
        subprocess.run(["docker", "network", "rm", network], capture_output=True)


async def docker_cli(*args: str) -> str:
    """Run ``docker *args`` without blocking the event loop (an in-process balancer runs on
    it); returns its output, raises if it fails."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {err.decode().strip()}")
    return out.decode().strip()


# -- a raw-logging replica (tests/raw_http.py) -------------------------------------------------


@pytest.fixture
async def raw_replica() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``replica = await raw_replica(answer)``: a ``raw_http.RawReplica`` on loopback."""
    from raw_http import RawReplica, default_answer

    started: list[RawReplica] = []

    async def start(answer: Any = default_answer) -> RawReplica:
        replica = await RawReplica.start(answer)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.close()
