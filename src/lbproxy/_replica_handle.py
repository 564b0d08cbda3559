"""What a backend tells of a running replica; kept apart so that the pool and the control
plane name it without importing any backend (or its client library)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaHandle:
    """A running replica as its backend knows it."""

    hostname: str
    slot: int
    #: ``host:port`` the balancer connects to.
    address: str
    #: The backend's own id for it (a pid, a container id, the static address).
    ident: str
    #: How many times the slot's replica was replaced after failing, as the backend keeps it
    #: (a container's label): an adopted replica's count survives the balancer's restart.
    restarts: int = 0
