"""What a backend offers when an orchestrator (Docker Swarm) keeps the replicas, not the balancer.

The balancer then follows: its pool holds the slots the orchestrator runs, each replica named
for its slot, and a change of N is a request to the orchestrator (which any number of balancers
may make; the orchestrator's spec is the one source of truth). The keepers still probe each
slot's replica and take it out of the ring when it fails, but never start or stop one: the
backend's ``start`` waits for the orchestrator's task in the slot and its ``stop`` does nothing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Orchestrator(Protocol):
    def name_of(self, slot: int) -> str:
        """The hostname of the slot's replica (every task in the slot has it)."""
        ...

    async def slots(self) -> frozenset[int]:
        """The slots the orchestrator runs now, read afresh."""
        ...

    async def changed(self, known: frozenset[int]) -> frozenset[int]:
        """Return the slots once they differ from ``known``."""
        ...

    async def scale_by(self, delta: int) -> frozenset[int]:
        """Ask for ``delta`` more (or fewer) replicas than the orchestrator has now; returns
        the slots once it has made the change (or after a while, as they are then).
        Raises BackendError."""
        ...

    async def scale_to(self, count: int) -> None:
        """Ask for ``count`` replicas, unless another balancer changes N meanwhile: then
        its change stands (a config reload must not undo an /add made elsewhere)."""
        ...
