"""Keeps every slot served: starts replicas, probes their heartbeat, replaces the dead.

One *keeper* task per slot runs the slot's life: start (retried with exponential backoff),
wait for the first heartbeat, watch (heartbeat on an interval, plus the backend's word that
the replica exited), and on failure leave the ring, stop the replica and start a replacement
with a new random hostname in the same slot, so it gets back exactly the same keys.

A keeper never ends by itself: any error while starting, probing or stopping (a backend's
BackendError, an OSError such as EMFILE when descriptors run out, any other exception) is a
failed attempt, logged and retried after a backoff. Should a keeper end all the same (a bug,
a stray cancellation), a watchdog starts a new one for the slot. A replica that leaves the
pool (/rm, a scale-down) is *retired*: its keeper is cancelled, and a drain task stops it once
the requests it has are done, or after ``replicas.drain_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

import aiohttp

from ._config import Config
from ._errors import BackendError, NameInUseError
from ._events import Events
from ._names import random_name
from ._pool import Pool, Replica, State
from ._replica_handle import ReplicaHandle
from ._stats import Histogram
from ._tasks import TaskSet
from .backends import Backend
from .backends._orchestrator import Orchestrator

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
        events: Events | None = None,
        heartbeats: Histogram | None = None,
    ) -> None:
        self._pool = pool
        self._backend = backend
        #: The dashboard's timeline: deaths, replacements, replicas coming up.
        self.events = events if events is not None else Events()
        #: How long each heartbeat took (None: metrics are off).
        self._heartbeats = heartbeats
        self._tasks = tasks
        self._config = config
        self._keepers: dict[Replica, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        #: Replicas out of the pool that finish their requests before they are stopped (a
        #: dict for its order: /status lists them as they left).
        self.draining: dict[Replica, None] = {}
        #: With worker processes (``workers: N``): waits until none of them has requests in
        #: flight to a replica, or the timeout (seconds) runs out (False).
        self.elsewhere: Callable[[Replica, float], Awaitable[bool]] | None = None
        #: True once shutdown began: no keeper is restarted, nobody waits for a replica.
        self.closing = False
        self._closed = asyncio.Event()
        #: How many times the watchdog had to start a keeper again, per replica.
        self._keeper_crashes: dict[Replica, int] = {}
        self.keeper_restarts = 0
        #: (slot, monotonic time) of the latest start attempts; bounded, since a replica that
        #: keeps failing would otherwise grow it for as long as the balancer runs.
        self.start_attempts: deque[tuple[int, float]] = deque(maxlen=HISTORY)
        #: (slot, monotonic time the failure was seen, monotonic time the replacement was up).
        self.recoveries: deque[tuple[int, float, float]] = deque(maxlen=HISTORY)

    # -- public ----------------------------------------------------------------------------

    def launch(self, replica: Replica, delay: float = 0.0) -> None:
        """Start keeping ``replica``'s slot served (after ``delay`` seconds)."""
        task = self._tasks.spawn(
            self._keep(replica, delay), name=f"keeper:{replica.slot}:{replica.hostname}"
        )
        self._keepers[replica] = task
        task.add_done_callback(functools.partial(self._keeper_ended, replica))

    def retire(self, replica: Replica) -> None:
        """Stop keeping ``replica``, already out of the pool (so routed to no more): a task
        stops it once its requests in flight are done, or after ``replicas.drain_timeout``."""
        keeper = self._keepers.pop(replica, None)
        if keeper is not None:
            keeper.cancel()  # lands before the keeper runs again: nothing restarts the replica
        replica.state = State.DRAINING
        self.draining[replica] = None
        try:
            self._tasks.spawn(self._drain(replica, keeper), name=f"drain:{replica.hostname}")
        except RuntimeError:
            # Shutting down: what is in flight finishes under shutdown_timeout, then
            # backend.close() stops every replica.
            del self.draining[replica]

    def begin_shutdown(self) -> None:
        """No keeper is restarted from now on, and whoever waits for a replica stops waiting."""
        self.closing = True
        self._closed.set()

    async def wait_up(self, replicas: Iterable[Replica], timeout: float) -> bool:
        """Wait until each of ``replicas`` is up or has left the pool (or the balancer shuts
        down, or ``timeout`` seconds pass); True if all of them are up."""
        replicas = list(replicas)
        try:
            async with asyncio.timeout(timeout):
                for r in replicas:
                    await _first_set((r.up, r.removed, self._closed))
        except TimeoutError:
            return False
        return all(r.up.is_set() for r in replicas)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- health ----------------------------------------------------------------------------

    async def probe(self, handle: ReplicaHandle) -> bool:
        """One heartbeat: True when the replica answers 200 within the configured timeout."""
        health = self._config().health
        started = time.perf_counter()
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(
                    cookie_jar=aiohttp.DummyCookieJar(),
                    connector=aiohttp.TCPConnector(limit=0, force_close=True),
                )
            async with self._session.get(
                f"http://{handle.address}{health.path}",
                timeout=aiohttp.ClientTimeout(total=health.timeout),
                allow_redirects=False,
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        except Exception as e:
            # A probe that cannot even be made is a miss, never the end of the keeper.
            log.warning("cannot probe %s: %r", handle.hostname, e)
            return False
        finally:
            if self._heartbeats is not None:
                self._heartbeats.observe(time.perf_counter() - started)

    # -- a slot's life ---------------------------------------------------------------------

    async def _keep(self, replica: Replica, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        failures = 0
        failed_at: float | None = None
        # A replica handed over already running (adopted by a restarted balancer, or left by
        # a keeper the watchdog replaced) is only probed; if it does not answer it is stopped
        # and started afresh like any other.
        running = replica.handle is not None and self._backend.manages_lifecycle
        while True:
            try:
                up = await self._bring_up(replica, start=not running)
                running = False
                if up:
                    failures = 0
                    if failed_at is not None:
                        self.recoveries.append((replica.slot, failed_at, time.monotonic()))
                    reason = await self._watch(replica)
                    failed_at = time.monotonic()
                    await self._replace(replica, reason)
                    continue
            except Exception:
                # Whatever it was, the slot must stay served: a failed attempt like any other.
                log.exception("keeping %s (slot %d) failed", replica.hostname, replica.slot)
                running = False
                await self._abandon(replica)
            failures += 1
            delay = self._backoff(failures)
            log.warning(
                "replica %s (slot %d) failed to start %d time(s) in a row; next try in %.1fs",
                replica.hostname,
                replica.slot,
                failures,
                delay,
            )
            await asyncio.sleep(delay)

    def _backoff(self, failures: int) -> float:
        health = self._config().health
        return backoff_delay(failures, health.backoff_initial, health.backoff_max)

    def _keeper_ended(self, replica: Replica, task: asyncio.Task[None]) -> None:
        """The watchdog: a keeper that ends without being asked to is started again."""
        if self._keepers.get(replica) is not task:
            return  # retired: its end was asked for
        del self._keepers[replica]
        if self.closing or self._pool.replicas.get(replica.slot) is not replica:
            return
        if task.cancelled():
            why = "it was cancelled"
        elif task.exception() is not None:
            why = f"it failed: {task.exception()!r}"
        else:
            why = "it returned"
        crashes = self._keeper_crashes[replica] = self._keeper_crashes.get(replica, 0) + 1
        delay = self._backoff(crashes)
        log.error(
            "the keeper of %s (slot %d) ended unexpectedly (%s); a new one starts in %.1fs",
            replica.hostname,
            replica.slot,
            why,
            delay,
        )
        self.keeper_restarts += 1
        with contextlib.suppress(RuntimeError):  # shutting down after all
            self.launch(replica, delay)

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
                # An orchestrator names the replica (for its slot).
                replica.hostname = replica.handle.hostname
            except NameInUseError as e:
                # The slot must be served: under another name, since this one is not ours.
                replica.hostname = self._fresh_name()
                log.warning("%s; slot %d takes the name %s", e, replica.slot, replica.hostname)
                return False
            except Exception as e:
                # Not only BackendError: with descriptors exhausted, a backend can fail with
                # OSError (EMFILE) before it gets to wrap it.
                _log_backend_error(f"cannot start {replica.hostname} (slot {replica.slot})", e)
                return False
        handle = replica.handle
        if handle is None:
            return False
        managed = self._backend.manages_lifecycle
        exited = asyncio.ensure_future(self._backend.wait_exit(handle))
        try:
            health = self._config().health
            deadline = time.monotonic() + health.startup_timeout
            passes = 0
            while True:
                if exited.done():
                    log.error("%s %s while starting", replica.hostname, _exit_reason(exited))
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
        self._keeper_crashes.pop(replica, None)
        log.info("replica %s (slot %d) is up at %s", replica.hostname, replica.slot, handle.address)
        self.events.add("up", replica.hostname, replica.slot, handle.address)
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
                    return _exit_reason(exited)
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

    async def _replace(self, replica: Replica, reason: str) -> None:
        """The replica failed while up: out of the ring, stopped, and (if the backend starts
        replicas) renamed for the replacement the keeper starts next."""
        await self._mark_down(replica, reason)
        if not self._backend.manages_lifecycle:
            return  # a static server comes back by itself or not at all
        # The replacement starts at once; a hung replica may take stop_timeout to go.
        self._stop_in_background(replica)
        old = replica.hostname
        if not isinstance(self._backend, Orchestrator):  # which restarts it under its name
            replica.hostname = self._fresh_name()
        replica.restarts += 1
        log.warning("replacing %s in slot %d with %s", old, replica.slot, replica.hostname)
        self.events.add("replaced", old, replica.slot, f"by {replica.hostname}")

    async def _abandon(self, replica: Replica) -> None:
        """After an unexpected error: out of the ring and stopped, as far as that can be done
        (never raises; routing skips a replica that is not up even before the ring changes)."""
        replica.state = State.DOWN
        replica.up.clear()
        try:
            await self._pool.refresh_ring()
        except Exception:
            log.exception("cannot rebuild the ring without %s", replica.hostname)
        await self._stop(replica)

    async def _drain(self, replica: Replica, keeper: asyncio.Task[None] | None) -> None:
        """Stop a retired replica once its requests in flight are done (or drain_timeout)."""
        try:
            while keeper is not None and not keeper.done():
                # A task can swallow a cancellation (see TaskSet.close): ask again.
                keeper.cancel()
                await asyncio.wait({keeper}, timeout=0.1)
            if self.elsewhere is not None:
                # The worker processes serve the port: they hold the requests in flight.
                timeout = self._config().replicas.drain_timeout
                if not await self.elsewhere(replica, timeout):
                    log.warning(
                        "%s still has request(s) in flight after replicas.drain_timeout "
                        "(%gs); stopping it anyway",
                        replica.hostname,
                        timeout,
                    )
            elif replica.in_flight:
                timeout = self._config().replicas.drain_timeout
                log.info(
                    "%s left the ring; waiting for its %d request(s) in flight (at most %gs)",
                    replica.hostname,
                    replica.in_flight,
                    timeout,
                )
                if not await replica.drained(timeout):
                    log.warning(
                        "%s still has %d request(s) in flight after replicas.drain_timeout "
                        "(%gs); stopping it anyway",
                        replica.hostname,
                        replica.in_flight,
                        timeout,
                    )
            await self._stop(replica)
            log.info("replica %s (slot %d) stopped", replica.hostname, replica.slot)
            self.events.add("stopped", replica.hostname, replica.slot, "drained")
        finally:
            replica.state = State.DOWN
            self.draining.pop(replica, None)
            self._keeper_crashes.pop(replica, None)

    def _fresh_name(self) -> str:
        taken = [*self._pool.hostnames(), *(r.hostname for r in self.draining)]
        return random_name(self._config().replicas.name_prefix, taken)

    async def _mark_down(self, replica: Replica, reason: str) -> None:
        log.warning("replica %s (slot %d) is down: %s", replica.hostname, replica.slot, reason)
        self.events.add("died", replica.hostname, replica.slot, reason)
        replica.state = State.DOWN
        replica.up.clear()
        await self._pool.refresh_ring()

    async def _stop(self, replica: Replica) -> None:
        handle = replica.handle
        if handle is not None and self._backend.manages_lifecycle:
            await self._stop_handle(handle)
        # Forgotten only once stopped: a stop cut short (cancelled) is finished by the next.
        if replica.handle is handle:
            replica.handle = None

    def _stop_in_background(self, replica: Replica) -> None:
        handle, replica.handle = replica.handle, None
        if handle is not None:
            # Tracked like every task; if shutdown cancels it, backend.close() still stops it.
            with contextlib.suppress(RuntimeError):  # already shutting down: the same
                self._tasks.spawn(self._stop_handle(handle), name=f"stop:{handle.hostname}")

    async def _stop_handle(self, handle: ReplicaHandle) -> None:
        try:
            await self._backend.stop(handle)
        except Exception as e:
            # Never the caller's end; backend.close() tries again on shutdown.
            _log_backend_error(f"cannot stop {handle.hostname}", e)


def _log_backend_error(what: str, error: Exception) -> None:
    """A backend's own errors and OSErrors say what they are in a line; anything else is
    unexpected and gets its traceback."""
    known = isinstance(error, BackendError | OSError)
    log.error("%s: %s", what, error if known else repr(error), exc_info=not known)


def _exit_reason(exited: asyncio.Future[str]) -> str:
    """Why the backend says the replica died (or that it could not tell)."""
    error = exited.exception()
    return exited.result() if error is None else f"could not be watched ({error!r})"


async def _first_set(events: Sequence[asyncio.Event]) -> None:
    """Return once any of ``events`` is set."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
