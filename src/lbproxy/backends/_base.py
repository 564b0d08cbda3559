"""What every replica backend offers: start, stop, list, and each replica's address."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._replica_handle import ReplicaHandle


class Backend(Protocol):
    #: False for backends that route to replicas they neither start nor stop (static).
    manages_lifecycle: bool

    @property
    def fixed_hostnames(self) -> Sequence[str] | None:
        """The hostnames of the replicas, when the backend fixes them (static: its list);
        None when the balancer names its replicas itself."""
        ...

    async def open(self) -> list[ReplicaHandle]:
        """Get ready to run replicas (raises BackendError when that is impossible) and return
        the replicas an earlier balancer left behind, to adopt in their slots: the running
        ones, and a new one in the slot of each that died meanwhile."""
        ...

    async def watch(self) -> None:
        """Learn of replica deaths as they happen, for as long as the balancer runs (the
        Server runs this as a tracked task); returns at once if ``wait_exit`` needs no help."""
        ...

    async def start(self, hostname: str, slot: int, restarts: int = 0) -> ReplicaHandle:
        """Start a replica (the slot's ``restarts``-th replacement); returns once it exists
        (not once it answers). Raises BackendError."""
        ...

    async def unavailable(self, hostnames: Sequence[str]) -> list[str]:
        """Those of ``hostnames`` (free in the pool) that something outside this balancer
        already uses, so a replica cannot take them."""
        ...

    async def stop(self, handle: ReplicaHandle) -> None:
        """Stop and remove it; returns once it is gone. Never raises for an already-dead one."""
        ...

    async def kill(self, handle: ReplicaHandle) -> None:
        """Kill it at once, as a crash would (SIGKILL, ``docker kill``), and leave it to the
        supervisor to notice and replace. Raises BackendError if this backend cannot."""
        ...

    async def wait_exit(self, handle: ReplicaHandle) -> str:
        """Return (with a reason) when the replica is known to have died; may never return."""
        ...

    async def list(self) -> list[ReplicaHandle]:
        """Replicas this backend currently runs."""
        ...

    async def close(self) -> None:
        """Stop every replica still running; used on shutdown."""
        ...
