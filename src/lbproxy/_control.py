"""Changing how many replicas run: /add, /rm and config reloads all come through here.

Every change holds ``lock`` from its validation to its last change of the pool, so what was
checked is what is changed: two /add, an /add and an /rm, a reload's scale_to never
interleave. /rm and scale-downs take replicas out of the pool at once (no new request reaches
them) and leave their stopping to a drain task; /add waits for its replicas outside the lock,
until each is up or was removed meanwhile, so it answers with the truth at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

from ._admin_input import parse_add, parse_kill, parse_rm
from ._config import Config
from ._errors import BackendError, RequestError
from ._events import Events
from ._names import random_name
from ._pool import Pool, Replica
from ._supervisor import Supervisor
from .backends import Backend, ReplicaHandle

log = logging.getLogger("lbproxy")


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
        self.lock = asyncio.Lock()

    @property
    def closing(self) -> bool:
        return self._supervisor.closing

    def _refuse_if_closing(self) -> None:
        if self.closing:
            raise RequestError("<Error> The balancer is shutting down", 503)

    def draining(self) -> list[Replica]:
        """Replicas out of the pool that are finishing their requests before they stop."""
        return list(self._supervisor.draining)

    def in_use(self) -> list[str]:
        """Hostnames a new replica may not take: the pool's and those still draining."""
        return [*self.pool.hostnames(), *(r.hostname for r in self.draining())]

    async def add_checked(self, raw: bytes, cap: int) -> list[Replica]:
        """/add: validate the body ``raw`` against the pool and add, as one step."""
        async with self.lock:
            self._refuse_if_closing()
            req = parse_add(raw, self.in_use(), len(self.pool), cap)
            if req.hostnames:
                await self.check_available(req.hostnames)
                # That asked the backend (I/O): check again what may have changed meanwhile
                # (a keeper renames a replacement; shutdown may have begun).
                self._refuse_if_closing()
                req = parse_add(raw, self.in_use(), len(self.pool), cap)
            return self.add(req.n, req.hostnames)

    async def remove_checked(self, raw: bytes) -> list[Replica]:
        """/rm: validate the body ``raw`` against the pool and remove, as one step."""
        async with self.lock:
            self._refuse_if_closing()
            req = parse_rm(raw, self.pool.hostnames())
            return await self.remove(req.n, req.hostnames)

    def add(self, n: int, hostnames: Sequence[str] = ()) -> list[Replica]:
        """Add ``n`` replicas (named ones first, the rest named at random). Hold ``lock``."""
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

    async def check_available(self, hostnames: Sequence[str]) -> None:
        """Refuse names the backend cannot give a replica (e.g. another container's)."""
        try:
            taken = await self._backend.unavailable(hostnames) if hostnames else []
        except BackendError as e:
            raise RequestError(f"<Error> Cannot check the hostnames: {e}", 503) from e
        if taken:
            raise RequestError(
                f"<Error> Hostname {taken[0]!r} is already in use outside this balancer"
            )

    async def remove(self, n: int, hostnames: Sequence[str] = ()) -> list[Replica]:
        """Remove the named replicas plus random others up to ``n``. Hold ``lock``.

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
        async with self.lock:
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
                    raise RequestError(f"<Error> Cannot kill {name}: {e}", 503) from e
                killed.append(name)
            if killed:
                log.warning("killed %s (by /kill)", ", ".join(killed))
            return killed

    async def wait_up(self, replicas: Sequence[Replica], timeout: float) -> bool:
        """Until each of ``replicas`` is up or was removed (or shutdown, or ``timeout``)."""
        return await self._supervisor.wait_up(replicas, timeout)

    async def scale_to(self, count: int) -> None:
        """Grow or shrink to ``count`` (config reload): new ones at random names, the newest
        slots removed first so the long-standing replicas keep their keys."""
        async with self.lock:
            if self.closing:
                return
            have = len(self.pool)
            if count > have:
                self.add(count - have)
            elif count < have:
                newest = sorted(self.pool.replicas, reverse=True)[: have - count]
                names = [self.pool.replicas[s].hostname for s in newest]
                await self.remove(len(names), names)

    def start_initial(
        self,
        count: int,
        names: Sequence[str] | None = None,
        adopted: Sequence[ReplicaHandle] = (),
    ) -> list[Replica]:
        """The replicas a fresh balancer starts with: those ``adopted`` in their slots (left
        running by an earlier balancer), then new ones up to ``count``, named ``names`` or
        ``<prefix>-<slot>``."""
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
        return replicas + self.add(missing, names)
