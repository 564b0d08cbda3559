"""Process backend: each replica a child process on a free loopback port (the embedded default).

The balancer binds the listening socket itself and hands it to the child (LISTEN_FD), so
there is no window in which another program can take the port between choosing and using it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from .._config import ProcessBackendConfig
from .._errors import BackendError
from ._base import ReplicaHandle


class ProcessBackend:
    manages_lifecycle = True

    def __init__(self, config: ProcessBackendConfig, stop_timeout: float = 5.0) -> None:
        self._config = config
        self._stop_timeout = stop_timeout
        self._procs: dict[ReplicaHandle, asyncio.subprocess.Process] = {}

    def _command(self) -> list[str]:
        return self._config.command or [sys.executable, "-m", "lbproxy.replica"]

    def pid(self, handle: ReplicaHandle) -> int | None:
        proc = self._procs.get(handle)
        return proc.pid if proc else None

    async def open(self) -> list[ReplicaHandle]:
        # Child processes die with their balancer: there is never anything to adopt.
        return []

    async def watch(self) -> None:
        return  # the event loop's child watcher reports exits to wait_exit

    async def start(self, hostname: str, slot: int) -> ReplicaHandle:
        host = self._config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0))
            sock.listen(1024)
            port = sock.getsockname()[1]
            fd = sock.fileno()
            env = {
                **os.environ,
                "SERVER_ID": hostname,
                "PORT": str(port),
                "LISTEN_FD": str(fd),
                "LBPROXY_PARENT_PID": str(os.getpid()),
            }
            out = subprocess.DEVNULL if self._config.output == "discard" else None
            proc = await asyncio.create_subprocess_exec(
                *self._command(),
                env=env,
                pass_fds=(fd,),
                # Own session: a Ctrl-C in the terminal reaches the balancer only, which then
                # stops its replicas in order instead of racing their deaths.
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        except OSError as e:
            raise BackendError(f"cannot start replica {hostname!r}: {e}") from e
        finally:
            sock.close()
        address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        handle = ReplicaHandle(hostname=hostname, slot=slot, address=address, ident=str(proc.pid))
        self._procs[handle] = proc
        return handle

    async def unavailable(self, hostnames: Sequence[str]) -> list[str]:
        return []  # hostnames are only labels here

    async def stop(self, handle: ReplicaHandle) -> None:
        proc = self._procs.get(handle)
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(proc, signal.SIGTERM)
            try:
                # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the
                # process exits, and a keeper cancelled on shutdown would then carry on.
                async with asyncio.timeout(self._stop_timeout):
                    await proc.wait()
            except TimeoutError:
                self._signal(proc, signal.SIGKILL)
                await proc.wait()
        # Forgotten only once it is dead: if this stop is cancelled, close() still finds it.
        self._procs.pop(handle, None)

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
        # The whole group: a configured command may be a shell that runs the real server.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    async def wait_exit(self, handle: ReplicaHandle) -> str:
        proc = self._procs.get(handle)
        if proc is None:
            return "not running"
        code = await proc.wait()
        return f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"

    async def list(self) -> list[ReplicaHandle]:
        return [h for h, p in self._procs.items() if p.returncode is None]

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(h) for h in list(self._procs)), return_exceptions=True)
