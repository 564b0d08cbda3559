"""Static backend: a fixed list of servers that already run. Routed and probed, never started
or stopped, for putting lbproxy in front of existing servers and for benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .._config import StaticReplica
from .._errors import BackendError
from .._replica_handle import ReplicaHandle


class StaticBackend:
    manages_lifecycle = False

    def __init__(self, replicas: Sequence[StaticReplica]) -> None:
        self._addresses = {r.hostname: r.address for r in replicas}
        self._handles: dict[str, ReplicaHandle] = {}

    @property
    def fixed_hostnames(self) -> list[str]:
        return list(self._addresses)

    async def open(self) -> list[ReplicaHandle]:
        return []

    async def watch(self) -> None:
        return

    async def start(self, hostname: str, slot: int, restarts: int = 0) -> ReplicaHandle:
        address = self._addresses.get(hostname)
        if address is None:
            raise BackendError(f"{hostname!r} is not in replicas.static")
        handle = ReplicaHandle(hostname, slot, address, address, restarts)
        self._handles[hostname] = handle
        return handle

    async def unavailable(self, hostnames: Sequence[str]) -> list[str]:
        return []  # hostnames are only labels here

    async def stop(self, handle: ReplicaHandle) -> None:
        self._handles.pop(handle.hostname, None)

    async def kill(self, handle: ReplicaHandle) -> None:
        raise BackendError("the static backend does not run its servers: it cannot kill them")

    async def wait_exit(self, handle: ReplicaHandle) -> str:
        # Nothing tells us a static server died but its heartbeat.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def list(self) -> list[ReplicaHandle]:
        return list(self._handles.values())

    async def close(self) -> None:
        self._handles.clear()
