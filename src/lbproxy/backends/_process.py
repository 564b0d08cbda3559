"""Process backend: each replica a child process on a free loopback port (the embedded default).

The balancer binds the listening socket itself and hands it to the child (LISTEN_FD), so
there is no window in which another program can take the port between choosing and using it.

Every replica runs in a process group of its own, and dies with the balancer however the
balancer ends (even by SIGKILL), whatever its command does: a shell that does not ``exec``,
children, grandchildren. A *watcher* in the group does it: a ``/bin/sh`` that blocks reading
the balancer's guard pipe, which the balancer never writes to; the read returns only at end
of file, that is when the last copy of the write end closes, when the balancer process is
gone. The watcher then sends SIGTERM to the whole group, and SIGKILL after the stop
timeout. It holds 0.1-0.2 MB of its own per replica (the smallest Python process would hold
2.8 MB): ``.venv/bin/python tools/guard_memory.py`` measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from .._config import ProcessBackendConfig
from .._errors import BackendError
from .._replica_handle import ReplicaHandle

#: The watcher: reads the guard pipe (its stdin) to its end, then ends its process group.
WATCHER = """read _; trap "" TERM; kill -TERM 0; sleep "$1"; kill -KILL 0"""
#: What every replica starts as (``python -I -S -c STARTER <guard fd> <grace> <command...>``),
#: for an instant: it starts the watcher, doubly forked so it is no child of the command's (a
#: command that waits for its children must not wait for it) but in the replica's group all
#: the same (so the balancer's SIGTERM to the group ends it with the replica), holding only
#: the guard pipe (a listening socket it held would take connections nobody answers once the
#: replica is gone). Then it becomes the command (exec), which keeps the pid the balancer
#: started and gets neither the pipe nor anything of this Python.
STARTER = f"""\
import os, sys
guard, grace, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
if os.fork() == 0:
    if os.fork() == 0:
        os.dup2(guard, 0)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        # The only descriptors passed on (the rest are close-on-exec).
        os.close(guard)
        if "LISTEN_FD" in os.environ:
            os.close(int(os.environ["LISTEN_FD"]))
        os.execv("/bin/sh", ["lbproxy-watcher", "-c", {WATCHER!r}, "lbproxy-watcher", grace])
    os._exit(0)
os.wait()
os.close(guard)
try:
    os.execvp(command[0], command)
except OSError as e:
    print(f"lbproxy: cannot run {{command[0]}}: {{e.strerror}}", file=sys.stderr)
    os._exit(127)
"""
#: How often a stop looks whether a replica's group still has live processes.
GROUP_POLL = 0.05
#: Longest wait for processes sent SIGKILL to be gone (one stuck in the kernel may take long).
KILL_WAIT = 5.0


def group_members(pgid: int, proc: str = "/proc") -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from /proc."""
    out = []
    with contextlib.suppress(OSError):
        for entry in os.listdir(proc):
            if not entry.isdigit():
                continue
            try:
                with open(f"{proc}/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            # After the command name: state, ppid, pgrp.
            if fields[0] != "Z" and fields[2] == str(pgid):
                out.append(int(entry))
    return out


def _group_alive(pgid: int) -> bool:
    if os.path.isdir("/proc"):
        return bool(group_members(pgid))
    try:
        os.killpg(pgid, 0)  # counts zombies too: may wait longer, never less
    except ProcessLookupError:
        return False
    return True


class ProcessBackend:
    manages_lifecycle = True
    #: The balancer names the replicas.
    fixed_hostnames = None

    def __init__(self, config: ProcessBackendConfig, stop_timeout: float = 5.0) -> None:
        self._config = config
        self._stop_timeout = stop_timeout
        self._procs: dict[ReplicaHandle, asyncio.subprocess.Process] = {}
        #: The guard pipe (read end, write end): every replica's watcher reads the read end;
        #: only this process holds the write end (both are close-on-exec here).
        self._guard: tuple[int, int] | None = None

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

    async def start(self, hostname: str, slot: int, restarts: int = 0) -> ReplicaHandle:
        command = self._command()
        # The starter would report a missing program only by exiting; say it up front.
        if shutil.which(command[0]) is None:
            raise BackendError(
                f"cannot start replica {hostname!r}: {command[0]!r} is not an executable program"
            )
        host = self._config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self._guard is None:
                self._guard = os.pipe()
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            inherited = ("LBPROXY_PARENT_PID", "LISTEN_FD")
            env = {k: v for k, v in os.environ.items() if k not in inherited}
            env |= {"SERVER_ID": hostname, "PORT": str(port)}
            passed: tuple[int, ...] = ()
            if self._config.listen_fd:
                sock.listen(1024)
                env["LISTEN_FD"] = str(sock.fileno())
                passed = (sock.fileno(),)
            else:
                sock.close()  # the command binds the port itself
            out = subprocess.DEVNULL if self._config.output == "discard" else None
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                "-c",
                STARTER,
                str(self._guard[0]),
                str(max(1, math.ceil(self._stop_timeout))),
                *command,
                env=env,
                pass_fds=(*passed, self._guard[0]),
                # Own session: a Ctrl-C in the terminal reaches the balancer only, which then
                # stops its replicas in order instead of racing their deaths. Its id is the
                # group's, which stop() signals as a whole.
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
        handle = ReplicaHandle(hostname, slot, address, str(proc.pid), restarts)
        self._procs[handle] = proc
        return handle

    async def unavailable(self, hostnames: Sequence[str]) -> list[str]:
        return []  # hostnames are only labels here

    async def stop(self, handle: ReplicaHandle) -> None:
        """SIGTERM to the replica's whole group (the command, anything it started, its
        watcher); SIGKILL to what is left of it after the stop timeout."""
        proc = self._procs.get(handle)
        if proc is None:
            return
        pgid = proc.pid
        # Even when the command has exited already: its children and watcher may not have.
        self._signal(pgid, signal.SIGTERM)
        try:
            # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the
            # process exits, and a keeper cancelled on shutdown would then carry on.
            async with asyncio.timeout(self._stop_timeout):
                await proc.wait()
                await self._group_gone(pgid)
        except TimeoutError:
            self._signal(pgid, signal.SIGKILL)
            await proc.wait()
            # A killed process is gone only once the kernel has run its exit.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await self._group_gone(pgid)
        # Forgotten only once it is dead: if this stop is cancelled, close() still finds it.
        self._procs.pop(handle, None)

    async def kill(self, handle: ReplicaHandle) -> None:
        proc = self._procs.get(handle)
        if proc is not None:
            self._signal(proc.pid, signal.SIGKILL)  # the whole group, as a crash of the box would

    @staticmethod
    async def _group_gone(pgid: int) -> None:
        # Polled: nothing reports the end of processes that are not our children.
        while True:
            if not await asyncio.to_thread(_group_alive, pgid):
                return
            await asyncio.sleep(GROUP_POLL)

    @staticmethod
    def _signal(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

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
        if self._guard is not None:
            # A watcher still running (a stop failed) sees the end of the pipe and stops
            # its group, as if the balancer had exited.
            for fd in self._guard:
                os.close(fd)
            self._guard = None
