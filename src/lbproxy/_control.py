"""Changing how many replicas run: /add, /rm and config reloads all come through here.

The controller owns its lock: every change holds it from its validation to its last change
of the pool, so what was checked is what is changed: two /add, an /add and an /rm, a reload's
scale_to never interleave. /rm and scale-downs take replicas out of the pool at once (no new
request reaches them) and leave their stopping to a drain task; /add waits for its replicas
outside the lock, until each is up or was removed meanwhile, so it answers with the truth.

It speaks no HTTP: a refused change raises a ``ChangeRefusedError`` (``_errors.py``), an
invalid body a ``RequestError`` (``_admin_input``); ``_admin.py`` turns them into answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ._admin_input import parse_add, parse_kill, parse_rm
from ._config import Config
from ._errors import (
    BackendError,
    FixedReplicasError,
    KillFailedError,
    NameCheckError,
    NameTakenError,
    OrchestratorError,
    RequestError,
    ShuttingDownError,
)
from ._events import Events
from ._names import random_name
from ._pool import Pool, Replica
from ._replica_handle import ReplicaHandle
from ._supervisor import Supervisor
from .backends import Backend
from .backends._orchestrator import Orchestrator

log = logging.getLogger("lbproxy")

T = TypeVar("T")


class Controller:
    def __init__(
        self,
        pool: Pool,
        supervisor: Supervisor,
        backend: Backend,
        config: Callable[[], Config],
        events: Events | None = None,
    ) -> None:
        self.pool = pool
        self._supervisor = supervisor
        self.events = events if events is not None else supervisor.events
        self._backend = backend
        self._config = config
        #: One change at a time: validation and the change it allows must see the same pool.
        self._lock = asyncio.Lock()

    @property
    def closing(self) -> bool:
        return self._supervisor.closing

    def _refuse_if_closing(self) -> None:
        if self.closing:
            raise ShuttingDownError("The balancer is shutting down")

    def _refuse_if_fixed(self, verb: str) -> None:
        if not self._backend.manages_lifecycle:
            backend = self._config().replicas.backend
            raise FixedReplicasError(f"The {backend} backend cannot {verb} replicas")

    def draining(self) -> list[Replica]:
        """Replicas out of the pool that are finishing their requests before they stop."""
        return list(self._supervisor.draining)

    def in_use(self) -> list[str]:
        """Hostnames a new replica may not take: the pool's and those still draining."""
        return [*self.pool.hostnames(), *(r.hostname for r in self.draining())]

    @property
    def orchestrator(self) -> Orchestrator | None:
        """The backend, when an orchestrator keeps the replicas (the pool follows it)."""
        return self._backend if isinstance(self._backend, Orchestrator) else None

    async def add_checked(self, raw: bytes) -> list[Replica]:
        """/add: validate the body ``raw`` against the pool and add, as one step; then wait
        until the new replicas serve, or a concurrent /rm took them out again, or
        ``health.startup_timeout`` runs out (they are kept trying)."""
        self._refuse_if_fixed("start")
        config = self._config()
        cap = config.replicas.max
        async with self._lock:
            self._refuse_if_closing()
            if self.orchestrator is not None:
                added = await self._add_orchestrated(self.orchestrator, raw, cap)
            else:
                req = parse_add(raw, self.in_use(), len(self.pool), cap)
                if req.hostnames:
                    await self._check_available(req.hostnames)
                    # That asked the backend (I/O): check again what may have changed
                    # meanwhile (a keeper renames a replacement; shutdown may have begun).
                    self._refuse_if_closing()
                    req = parse_add(raw, self.in_use(), len(self.pool), cap)
                added = self._add(req.n, req.hostnames)
        await self._supervisor.wait_up(added, config.health.startup_timeout)
        self._refuse_if_closing()
        return added

    async def remove_checked(self, raw: bytes) -> list[Replica]:
        """/rm: validate the body ``raw`` against the pool and remove, as one step."""
        self._refuse_if_fixed("remove")
        async with self._lock:
            self._refuse_if_closing()
            if self.orchestrator is not None:
                return await self._remove_orchestrated(self.orchestrator, raw)
            req = parse_rm(raw, self.pool.hostnames())
            return await self._remove(req.n, req.hostnames)

    # -- following an orchestrator (docs/swarm.md) -----------------------------------------

    async def _add_orchestrated(
        self, orchestrator: Orchestrator, raw: bytes, cap: int
    ) -> list[Replica]:
        """/add as a bigger replica count. The orchestrator puts new replicas in the lowest
        free slots and names each for its slot, so the hostnames given must be those names
        (any order); a request that names others is refused, changing nothing."""
        await self._follow(orchestrator, await _asked(orchestrator.slots()))
        req = parse_add(raw, self.in_use(), len(self.pool), cap)
        slots = self.pool.free_slots(req.n)
        names = [orchestrator.name_of(s) for s in slots]
        stray = [h for h in req.hostnames if h.lower() not in {n.lower() for n in names}]
        if stray:
            raise RequestError(
                f"<Error> Hostname {stray[0]!r} cannot be given: with the swarm backend each "
                f"replica is named for its slot, and this /add adds {', '.join(names)}"
            )
        self._refuse_if_closing()
        await self._follow(orchestrator, await _asked(orchestrator.scale_by(req.n)))
        return [r for s in slots if (r := self.pool.replicas.get(s)) is not None]

    async def _remove_orchestrated(self, orchestrator: Orchestrator, raw: bytes) -> list[Replica]:
        """/rm as a smaller replica count. Swarm alone chooses which tasks a scale-down
        removes, so /rm takes ``n`` only: named replicas are refused (400), not silently
        swapped for others."""
        await self._follow(orchestrator, await _asked(orchestrator.slots()))
        req = parse_rm(raw, self.pool.hostnames())
        if req.hostnames:
            raise RequestError(
                "<Error> With the swarm backend Swarm chooses which replicas a scale-down "
                'removes: /rm takes only n (e.g. {"n": 1}), not hostnames'
            )
        before = dict(self.pool.replicas)
        await self._follow(orchestrator, await _asked(orchestrator.scale_by(-req.n)))
        return [r for s, r in before.items() if s not in self.pool.replicas]

    async def follow(
        self,
        orchestrator: Orchestrator,
        slots: frozenset[int],
        adopted: Sequence[ReplicaHandle] = (),
    ) -> list[Replica]:
        """Make the pool's slots ``slots``; returns the replicas added."""
        async with self._lock:
            return await self._follow(orchestrator, slots, adopted)

    async def follow_forever(self, orchestrator: Orchestrator) -> None:
        """Keep the pool's slots the orchestrator's, whoever changes them (another balancer,
        `docker service scale`), for as long as the balancer runs."""
        while not self.closing:
            slots = await orchestrator.changed(frozenset(self.pool.replicas))
            async with self._lock:
                if not self.closing:
                    await self._follow(orchestrator, slots)

    async def _follow(
        self,
        orchestrator: Orchestrator,
        slots: frozenset[int],
        adopted: Sequence[ReplicaHandle] = (),
    ) -> list[Replica]:
        """``follow`` with ``lock`` held: slots that went are retired (drained; the backend
        stops nothing), new ones are kept by a keeper that waits for their task."""
        gone = [r for s, r in self.pool.replicas.items() if s not in slots]
        for r in gone:
            self.pool.remove(r.slot)
            self._supervisor.retire(r)
        handles = {h.slot: h for h in adopted}
        added = []
        for slot in sorted(slots - set(self.pool.replicas)):
            replica = self.pool.add(slot, orchestrator.name_of(slot))
            handle = handles.get(slot)
            if handle is not None:
                replica.handle = handle
                replica.restarts = handle.restarts
            self._supervisor.launch(replica)
            added.append(replica)
        if gone:
            await self.pool.refresh_ring()
            log.info("Swarm removed %s", ", ".join(r.hostname for r in gone))
        if added:
            log.info("following %s", ", ".join(r.hostname for r in added))
        return added

    def _add(self, n: int, hostnames: Sequence[str] = ()) -> list[Replica]:
        """Add ``n`` replicas (named ones first, the rest named at random). Hold the lock."""
        names = list(hostnames)
        prefix = self._config().replicas.name_prefix
        while len(names) < n:
            names.append(random_name(prefix, [*self.in_use(), *names]))
        added = []
        for slot, name in zip(self.pool.free_slots(n), names, strict=True):
            replica = self.pool.add(slot, name)
            self._supervisor.launch(replica)
            added.append(replica)
            self.events.add("added", name, slot)
        log.info("added %s", ", ".join(names))
        return added

    async def _check_available(self, hostnames: Sequence[str]) -> None:
        """Refuse names the backend cannot give a replica (e.g. another container's)."""
        try:
            taken = await self._backend.unavailable(hostnames) if hostnames else []
        except BackendError as e:
            raise NameCheckError(f"Cannot check the hostnames: {e}") from e
        if taken:
            raise NameTakenError(taken[0])

    async def _remove(self, n: int, hostnames: Sequence[str] = ()) -> list[Replica]:
        """Remove the named replicas plus random others up to ``n``. Hold the lock.

        Returns once they are out of the pool and the ring: no new request reaches them.
        Each is stopped by a drain task once its requests in flight are done (or after
        ``replicas.drain_timeout``), so nothing in flight is cut."""
        chosen = [r for h in hostnames if (r := self.pool.by_hostname(h)) is not None]
        others = [r for r in self.pool.replicas.values() if r not in chosen]
        chosen += random.sample(others, n - len(chosen))
        for r in chosen:
            self.pool.remove(r.slot)  # from here on, routing skips it
            self._supervisor.retire(r)
            self.events.add("removed", r.hostname, r.slot, "draining")
        await self.pool.refresh_ring()
        log.info("removed %s (draining)", ", ".join(r.hostname for r in chosen))
        return chosen

    async def kill_checked(self, raw: bytes) -> list[str]:
        """/kill: kill the named replicas as a crash would; the supervisor notices the death
        (the backend's word, or missed heartbeats) and replaces each as for any failure."""
        self._refuse_if_fixed("kill")
        async with self._lock:
            self._refuse_if_closing()
            req = parse_kill(raw, self.pool.hostnames())
            chosen = [r for h in req.hostnames if (r := self.pool.by_hostname(h)) is not None]
            others = [r for r in self.pool.replicas.values() if r not in chosen]
            chosen += random.sample(others, req.n - len(chosen))
            killed = []
            for r in chosen:
                handle = r.handle
                if handle is None:
                    continue  # no replica runs in the slot right now (being replaced)
                # Its name now: the supervisor may see the death, and rename the slot for the
                # replacement, before the kill call returns. The timeline says "killed"
                # before the "died" that follows.
                name = handle.hostname
                self.events.add("killed", name, r.slot, "by /kill")
                try:
                    await self._backend.kill(handle)
                except BackendError as e:
                    self.events.add("killed", name, r.slot, f"failed: {e}")
                    raise KillFailedError(f"Cannot kill {name}: {e}") from e
                killed.append(name)
            if killed:
                log.warning("killed %s (by /kill)", ", ".join(killed))
            return killed

    async def scale_to(self, count: int) -> None:
        """Grow or shrink to ``count`` (config reload): new ones at random names, the newest
        slots removed first so the long-standing replicas keep their keys."""
        async with self._lock:
            if self.closing or not self._backend.manages_lifecycle:
                return
            if self.orchestrator is not None:
                try:
                    await self.orchestrator.scale_to(count)
                except BackendError as e:
                    log.error("cannot scale to replicas.count=%d: %s", count, e)
                return  # the pool follows the orchestrator
            have = len(self.pool)
            if count != have:
                log.info("replica count %d -> %d", have, count)
            if count > have:
                self._add(count - have)
            elif count < have:
                newest = sorted(self.pool.replicas, reverse=True)[: have - count]
                names = [self.pool.replicas[s].hostname for s in newest]
                await self._remove(len(names), names)

    def start_initial(self, adopted: Sequence[ReplicaHandle] = ()) -> list[Replica]:
        """The replicas a fresh balancer starts with: those ``adopted`` in their slots (left
        running by an earlier balancer), then new ones up to ``replicas.count``, named
        ``<prefix>-<slot>``; or, with a backend whose replicas are fixed, those."""
        names = self._backend.fixed_hostnames
        count = self._config().replicas.count if names is None else len(names)
        replicas = []
        for handle in adopted:
            replica = self.pool.add(handle.slot, handle.hostname)
            replica.handle = handle
            replica.restarts = handle.restarts
            self._supervisor.launch(replica)
            replicas.append(replica)
        if adopted:
            log.info("adopted %s", ", ".join(h.hostname for h in adopted))
        missing = count - len(self.pool)
        if missing <= 0:
            return replicas
        if names is None:
            prefix = self._config().replicas.name_prefix
            taken = self.pool.hostnames()
            names = []
            for slot in self.pool.free_slots(missing):
                name = f"{prefix}-{slot}"
                if self.pool.by_hostname(name) is not None or name in names:
                    name = random_name(prefix, [*taken, *names])
                names.append(name)
        return replicas + self._add(missing, names)


async def _asked(request: Awaitable[T]) -> T:
    """An orchestrator's answer; when it cannot give one, the change is refused (503)."""
    try:
        return await request
    except BackendError as e:
        raise OrchestratorError(str(e)) from e
