"""Keeps every slot served: starts replicas, probes their heartbeat, replaces the dead.

One *keeper* task per slot runs the slot's life: start (retried with exponential backoff),
wait for the first heartbeat, watch (heartbeat on an interval, plus the backend's word that
the replica exited), and on failure leave the ring, stop the replica and start a replacement
with a new random hostname in the same slot, so it gets back exactly the same keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

import aiohttp

from ._config import Config
from ._errors import BackendError, NameInUseError
from ._names import random_name
from ._pool import Pool, Replica, State
from ._tasks import TaskSet
from .backends import Backend, ReplicaHandle

log = logging.getLogger("lbproxy.supervisor")

#: How many start attempts and recoveries the supervisor remembers.
HISTORY = 1000


def backoff_delay(failures: int, initial: float, maximum: float) -> float:
    """Wait before the next start after ``failures`` failed starts in a row (1, 2, ...)."""
    return min(maximum, initial * 2 ** max(0, failures - 1))


class Supervisor:
    def __init__(
        self,
        pool: Pool,
        backend: Backend,
        tasks: TaskSet,
        config: Callable[[], Config],
    ) -> None:
        self._pool = pool
        self._backend = backend
        self._tasks = tasks
        self._config = config
        self._keepers: dict[int, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        #: (slot, monotonic time) of the latest start attempts; bounded, since a replica that
        #: keeps failing would otherwise grow it for as long as the balancer runs.
        self.start_attempts: deque[tuple[int, float]] = deque(maxlen=HISTORY)
        #: (slot, monotonic time the failure was seen, monotonic time the replacement was up).
        self.recoveries: deque[tuple[int, float, float]] = deque(maxlen=HISTORY)

    # -- public ----------------------------------------------------------------------------

    def launch(self, replica: Replica) -> None:
        """Start keeping ``replica``'s slot served."""
        self._keepers[replica.slot] = self._tasks.spawn(
            self._keep(replica), name=f"keeper:{replica.slot}:{replica.hostname}"
        )

    async def retire(self, replica: Replica) -> None:
        """Stop keeping the slot and stop its replica (already removed from the pool)."""
        task = self._keepers.pop(replica.slot, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pool.refresh_ring()
        await self._stop(replica)

    async def wait_up(self, replicas: Iterable[Replica], timeout: float) -> bool:
        """True when all of ``replicas`` are up within ``timeout`` seconds."""
        waits = [r.up.wait() for r in replicas]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- health ----------------------------------------------------------------------------

    async def probe(self, handle: ReplicaHandle) -> bool:
        """One heartbeat: True when the replica answers 200 within the configured timeout."""
        health = self._config().health
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
            )
        try:
            async with self._session.get(
                f"http://{handle.address}{health.path}",
                timeout=aiohttp.ClientTimeout(total=health.timeout),
                allow_redirects=False,
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    # -- a slot's life ---------------------------------------------------------------------

    async def _keep(self, replica: Replica) -> None:
        failures = 0
        failed_at: float | None = None
        # A replica handed over already running (adopted by a restarted balancer) is only
        # probed; if it does not answer it is stopped and started afresh like any other.
        adopted = replica.handle is not None and self._backend.manages_lifecycle
        while True:
            up = await self._bring_up(replica, start=not adopted)
            adopted = False
            if up:
                failures = 0
                if failed_at is not None:
                    self.recoveries.append((replica.slot, failed_at, time.monotonic()))
                reason = await self._watch(replica)
                failed_at = time.monotonic()
                await self._mark_down(replica, reason)
                if not self._backend.manages_lifecycle:
                    continue  # a static server comes back by itself or not at all
                # The replacement starts at once; a hung replica may take stop_timeout to go.
                self._stop_in_background(replica)
                old, replica.hostname = replica.hostname, self._fresh_name()
                replica.restarts += 1
                log.warning("replacing %s in slot %d with %s", old, replica.slot, replica.hostname)
                continue
            failures += 1
            health = self._config().health
            delay = backoff_delay(failures, health.backoff_initial, health.backoff_max)
            log.warning(
                "replica %s (slot %d) failed to start %d time(s) in a row; next try in %.1fs",
                replica.hostname,
                replica.slot,
                failures,
                delay,
            )
            await asyncio.sleep(delay)

    async def _bring_up(self, replica: Replica, start: bool = True) -> bool:
        """Start the slot's replica (unless ``start`` is False: it runs already) and wait for
        its heartbeat. False if it did not come up."""
        replica.state = State.STARTING
        if start and (self._backend.manages_lifecycle or replica.handle is None):
            self.start_attempts.append((replica.slot, time.monotonic()))
            try:
                replica.handle = await self._backend.start(
                    replica.hostname, replica.slot, replica.restarts
                )
            except NameInUseError as e:
                # The slot must be served: under another name, since this one is not ours.
                replica.hostname = self._fresh_name()
                log.warning("%s; slot %d takes the name %s", e, replica.slot, replica.hostname)
                return False
            except BackendError as e:
                log.error("cannot start %s: %s", replica.hostname, e)
                return False
        handle = replica.handle
        managed = self._backend.manages_lifecycle
        exited = asyncio.ensure_future(self._backend.wait_exit(handle))
        try:
            health = self._config().health
            deadline = time.monotonic() + health.startup_timeout
            passes = 0
            while True:
                if exited.done():
                    log.error("%s %s while starting", replica.hostname, exited.result())
                    await self._stop(replica)
                    return False
                if await self.probe(handle):
                    passes += 1
                    if passes >= health.healthy_threshold:
                        break
                else:
                    passes = 0
                health = self._config().health
                if managed and time.monotonic() > deadline:
                    log.error(
                        "%s did not answer %s within %.1fs of starting",
                        replica.hostname,
                        health.path,
                        health.startup_timeout,
                    )
                    await self._stop(replica)
                    return False
                # A static server that is down is probed at the normal pace, not hammered.
                pause = health.startup_probe_interval if managed else health.interval
                await asyncio.wait({exited}, timeout=pause)
        finally:
            exited.cancel()
        replica.state = State.UP
        await self._pool.refresh_ring()
        replica.up.set()  # only now: whoever waits for it may route to it at once
        log.info("replica %s (slot %d) is up at %s", replica.hostname, replica.slot, handle.address)
        return True

    async def _watch(self, replica: Replica) -> str:
        """Return why the replica stopped being healthy (it is still in the ring)."""
        assert replica.handle is not None
        exited = asyncio.ensure_future(self._backend.wait_exit(replica.handle))
        misses = 0
        try:
            while True:
                suspect = asyncio.ensure_future(replica.suspect.wait())
                try:
                    await asyncio.wait(
                        {exited, suspect},
                        timeout=self._config().health.interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    suspect.cancel()
                if exited.done():
                    return exited.result()
                replica.suspect.clear()
                if await self.probe(replica.handle):
                    misses = 0
                    continue
                misses += 1
                threshold = self._config().health.unhealthy_threshold
                if misses >= threshold:
                    return f"missed {misses} heartbeats"
        finally:
            exited.cancel()

    def _fresh_name(self) -> str:
        return random_name(self._config().replicas.name_prefix, self._pool.hostnames())

    async def _mark_down(self, replica: Replica, reason: str) -> None:
        log.warning("replica %s (slot %d) is down: %s", replica.hostname, replica.slot, reason)
        replica.state = State.DOWN
        replica.up.clear()
        await self._pool.refresh_ring()

    async def _stop(self, replica: Replica) -> None:
        handle, replica.handle = replica.handle, None
        if handle is not None and self._backend.manages_lifecycle:
            await self._stop_handle(handle)

    def _stop_in_background(self, replica: Replica) -> None:
        handle, replica.handle = replica.handle, None
        if handle is not None:
            # Tracked like every task; if shutdown cancels it, backend.close() still stops it.
            self._tasks.spawn(self._stop_handle(handle), name=f"stop:{handle.hostname}")

    async def _stop_handle(self, handle: ReplicaHandle) -> None:
        try:
            await self._backend.stop(handle)
        except BackendError as e:
            log.error("cannot stop %s: %s", handle.hostname, e)
