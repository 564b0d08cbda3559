"""Membership: which replica holds each ring slot, its state, and the ring of those that are up.

No I/O here; the supervisor changes states and the proxy reads them.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ._hashing import HashScheme
from ._replica_handle import ReplicaHandle
from ._ring import Probing, members_of
from ._routing import LoadBound, Ring, build_ring

WeightOf = Callable[[str], float]


class Member(NamedTuple):
    """One replica as the supervisor tells its worker processes of it (``workers: N``); a
    tuple, so that it pickles the same from a compiled module as from its source."""

    slot: int
    hostname: str
    state: str
    address: str | None
    weight: float


class Load:
    """Requests in flight over all of a pool's replicas: what bounded loads compare each
    replica's own count with (kept as one counter so that costs nothing per request)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


class State(enum.Enum):
    STARTING = "starting"
    UP = "up"
    #: Leaving (by /rm, a scale-down or shutdown): out of the ring, finishing what it has.
    DRAINING = "draining"
    DOWN = "down"


@dataclass(eq=False)
class Replica:
    """One ring slot and the replica currently serving it."""

    slot: int
    hostname: str
    state: State = State.STARTING
    handle: ReplicaHandle | None = None
    #: How many times this slot's replica was replaced or restarted after failing.
    restarts: int = 0
    #: Set while the replica is up: what /add waits for.
    up: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set to ask the supervisor for a heartbeat now (a request just failed to connect).
    suspect: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the replica has left the pool (/rm, a scale-down): whoever waits for it to
    #: come up (/add) learns at once that it never will.
    removed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Requests sent to this slot's replica whose exchange has not ended yet.
    in_flight: int = 0
    #: Requests sent to this slot's replica in all.
    requests: int = 0
    #: Requests in a row that this replica failed (no connection, broken off, timed out).
    failures: int = 0
    #: Out of routing for a while after ``proxy.outlier_failures`` failures in a row, though
    #: still up (still in the ring: its keys go to the next replica meanwhile).
    ejected: bool = False
    #: Its share of the keys and of the bounded-load cap, relative to the others' weights.
    weight: float = 1.0
    #: The pool's total of requests in flight, which ``begin`` and ``finish`` keep too.
    load: Load = field(default_factory=Load, repr=False)
    #: Made by the first ``drained`` call; set whenever ``in_flight`` returns to 0.
    _idle: asyncio.Event | None = field(default=None, repr=False)

    @property
    def address(self) -> str | None:
        return self.handle.address if self.handle else None

    def begin(self) -> None:
        """A request is sent to this replica (the data path calls ``finish`` when it is over)."""
        self.in_flight += 1
        self.requests += 1
        self.load.total += 1

    def finish(self) -> None:
        """A request sent to this replica is over (answered, failed or given up)."""
        self.in_flight -= 1
        self.load.total -= 1
        if not self.in_flight and self._idle is not None:
            self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in flight here; False if ``timeout`` ran out first."""
        if self._idle is None:
            self._idle = asyncio.Event()  # from now on ``end`` reports each return to 0
        try:
            async with asyncio.timeout(timeout):
                while self.in_flight:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True


class Pool:
    """The managed replicas, in the order they were added (the order /rep lists)."""

    def __init__(
        self,
        scheme: HashScheme,
        probing: Probing = "linear",
        balance_factor: float | None = None,
        weight_of: WeightOf | None = None,
    ) -> None:
        self.replicas: dict[int, Replica] = {}
        self.scheme = scheme
        self.probing: Probing = probing
        self.balance_factor = balance_factor
        self._weight_of: WeightOf = weight_of or (lambda _: 1.0)
        #: The hostname each slot was added under: its weight follows it, so a replacement
        #: started in the slot under a new name keeps the slot's weight (and keys).
        self._added_as: dict[int, str] = {}
        self.load = Load()
        self.ring: Ring = build_ring(scheme, (), probing)
        #: The caps of ``ring``'s members, None when bounded loads are off; always replaced
        #: together with ``ring``.
        self.bound: LoadBound | None = None
        self._ring_lock = asyncio.Lock()
        #: Called with each replica that leaves the ring because it failed (state DOWN, not
        #: one draining): the data path gives up what is in flight there and can be replayed.
        self.on_failed: list[Callable[[Replica], None]] = []

    # -- membership ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.replicas)

    def hostnames(self) -> list[str]:
        return [r.hostname for r in self.replicas.values()]

    def by_hostname(self, name: str) -> Replica | None:
        low = name.lower()
        for r in self.replicas.values():
            if r.hostname.lower() == low:
                return r
        return None

    def free_slots(self, n: int) -> list[int]:
        """The ``n`` lowest unused slot numbers (from 1, as the assignment numbers replicas)."""
        out: list[int] = []
        s = 1
        while len(out) < n:
            if s not in self.replicas:
                out.append(s)
            s += 1
        return out

    def add(self, slot: int, hostname: str) -> Replica:
        replica = Replica(
            slot=slot, hostname=hostname, weight=self._weight_of(hostname), load=self.load
        )
        self.replicas[slot] = replica
        self._added_as[slot] = hostname
        return replica

    def remove(self, slot: int) -> Replica:
        """Take the slot's replica out: no longer listed, and no request is routed to it from
        now on (``route`` only yields members); the requests it has may finish (DRAINING)."""
        replica = self.replicas.pop(slot)
        self._added_as.pop(slot, None)
        replica.state = State.DRAINING
        replica.up.clear()
        replica.removed.set()
        return replica

    def drain_all(self) -> None:
        """Shutting down: no new request goes to any replica; those in flight may finish."""
        for replica in self.replicas.values():
            replica.state = State.DRAINING
            replica.up.clear()

    # -- workers ---------------------------------------------------------------------------

    def members(self) -> tuple[Member, ...]:
        """What a worker process needs of each replica to route as this pool does."""
        return tuple(
            Member(r.slot, r.hostname, r.state.value, r.address, r.weight)
            for r in self.replicas.values()
        )

    def mirror(
        self,
        members: tuple[Member, ...],
        routing: tuple[Ring, LoadBound | None] | None = None,
    ) -> list[Replica]:
        """Make this pool (a worker's) what the supervisor's is: ``members`` and, when it
        changed, its ``routing`` (ring and caps, the supervisor's own objects). Replicas kept
        under the same slot and name keep their counters; the ones that left (out of the pool,
        or replaced under a new name) are returned, draining, for what they still have in
        flight."""
        old = self.replicas
        new: dict[int, Replica] = {}
        left: list[Replica] = []
        for m in members:
            r = old.get(m.slot)
            if r is None or r.hostname != m.hostname:
                if r is not None:
                    left.append(r)
                r = Replica(slot=m.slot, hostname=m.hostname, load=self.load)
            r.state = State(m.state)
            r.weight = m.weight
            if m.address is None:
                r.handle = None
            elif r.handle is None or r.handle.address != m.address:
                r.handle = ReplicaHandle(m.hostname, m.slot, m.address, "")
            new[m.slot] = r
        left.extend(r for slot, r in old.items() if slot not in new)
        for r in left:
            if r.state is not State.DOWN:
                r.state = State.DRAINING
        self.replicas = new
        if routing is not None:
            ring, bound = routing
            self._members_changed(frozenset(self.ring.weights), frozenset(ring.weights))
            self.ring, self.bound = ring, bound
        return left

    # -- routing ---------------------------------------------------------------------------

    def pick(self, key: str) -> Replica | None:
        """The replica ``key`` goes to now: the first of ``route(key)``, found without
        allocating anything while its own replica has room. None: its own replica is not up
        (the ring lags behind), so ``route`` must walk on."""
        slot = self.ring.lookup(key)
        replica = self.replicas.get(slot)  # type: ignore[arg-type]
        if replica is None or replica.state is not State.UP or replica.ejected:
            return None
        bound = self.bound
        if bound is None:
            return replica
        num, den = bound.caps[replica.slot]
        if replica.in_flight * den < num * (self.load.total + 1):
            return replica
        return next(self.route(key), None)

    def route(self, key: str) -> Iterator[Replica]:
        """Up replicas for ``key``: its own first, then the next distinct ones in its order
        (clockwise on a ring); an ejected one is passed over. With bounded loads, those
        without room come after the others, in the same order; loads are read as each comes
        up, so a retry sees its moment's."""
        replicas = self.replicas
        bound = self.bound
        passed: list[Replica] = []
        for slot in self.ring.walk(key):
            r = replicas.get(slot)
            if r is None or r.state is not State.UP or r.ejected:
                continue
            if bound is None or bound.has_room(slot, r.in_flight, self.load.total):
                yield r
            else:
                passed.append(r)
        # None had room (only possible while the ring lags behind who is up): the key's order.
        yield from passed

    def up_slots(self) -> frozenset[int]:
        return frozenset(s for s, r in self.replicas.items() if r.state is State.UP)

    def weights(self) -> dict[int, float]:
        """The replicas that are up, slot -> weight: what the ring is built of."""
        return {s: r.weight for s, r in self.replicas.items() if r.state is State.UP}

    async def refresh_ring(self) -> None:
        """Rebuild the ring for the current up replicas, weights and scheme, if any changed.

        Building takes up to tens of milliseconds (more for large rings), so it is done in a
        thread; requests go on being routed by the previous ring meanwhile (and never to a
        replica that is not up, which ``route`` checks).
        """
        async with self._ring_lock:
            scheme, probing, weights = self.scheme, self.probing, self.weights()
            ring = self.ring
            if (ring.scheme, ring.probing, ring.weights) != (scheme, probing, members_of(weights)):
                self._members_changed(frozenset(ring.weights), frozenset(weights))
                ring = await asyncio.to_thread(build_ring, scheme, weights, probing)
            factor = self.balance_factor
            bound = None if factor is None else LoadBound(factor, weights)
            # Together, with no await between: the caps always belong to the ring in use.
            self.ring, self.bound = ring, bound

    def _members_changed(self, old: frozenset[int], new: frozenset[int]) -> None:
        # Before the new ring is built (tens of milliseconds): requests in flight on a
        # failed replica are given up now, and ``route`` already passes it over.
        for slot in old - new:
            r = self.replicas.get(slot)
            if r is not None and r.state is State.DOWN:
                for hook in self.on_failed:
                    hook(r)
        for slot in new - old:
            r = self.replicas.get(slot)
            if r is not None:  # (re)joining, maybe as a replacement: a clean slate
                r.failures = 0
                r.ejected = False

    async def configure(
        self,
        scheme: HashScheme,
        probing: Probing,
        balance_factor: float | None,
        weight_of: WeightOf,
    ) -> None:
        """Apply (re)loaded routing settings: the scheme, bounded loads and weights."""
        self.scheme, self.probing, self.balance_factor = scheme, probing, balance_factor
        self._weight_of = weight_of
        for slot, replica in self.replicas.items():
            replica.weight = weight_of(self._added_as.get(slot, replica.hostname))
        await self.refresh_ring()
