"""The supervisor's side of ``workers: N``: starting the worker processes, keeping N of them,
telling them every change of the pool and configuration, and adding up their counters.

Changes are found by looking (every ``PUBLISH_INTERVAL``) rather than by hooks in every
place that changes the pool: nothing can be missed, and a burst of changes (a replica down,
the ring rebuilt, a replacement up) goes out as one message per worker. Each worker answers
each view with its version, so the supervisor knows when all of them route by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._channel import Channel, ChannelClosedError
from ._config import Config
from ._errors import LbproxyError
from ._pool import Member, Pool, Replica
from ._routing import LoadBound, Ring
from ._stats import ReplicaStats, summed
from ._tasks import TaskSet
from ._worker import (
    Applied,
    Init,
    Ready,
    Reconfigure,
    Report,
    ReportRequest,
    Stop,
    Suspect,
    View,
)

log = logging.getLogger("lbproxy.workers")

#: How often the pool is compared with what the workers were last told: a change reaches
#: every worker within this plus a message's trip (well under the 100 ms promised).
PUBLISH_INTERVAL = 0.02
#: Longest wait for a worker to start listening, and for its counters.
READY_TIMEOUT = 30.0
REPORT_TIMEOUT = 1.0
#: A worker that leaves this many report requests in a row unanswered is hung (stopped, stuck
#: in a loop): its socket would keep taking connections it never serves, so it is killed
#: and started again. The dashboard's sampler asks once a second.
MISSED_REPORTS = 3
#: Restarts of a worker that keeps dying back off up to this.
BACKOFF_MAX = 5.0
_STARTER = "import sys; from lbproxy._worker import main; main()"


@dataclass(eq=False)
class WorkerProcess:
    """One worker slot and the process currently serving it."""

    index: int
    pid: int | None = None
    process: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    ready: bool = False
    #: The last view version it confirmed routing by.
    applied: int = -1
    restarts: int = 0
    #: Report requests in a row it left unanswered.
    missed: int = 0
    last_report: Report | None = None
    _waiting: dict[int, asyncio.Future[Report]] = field(default_factory=dict)
    _applied_changed: asyncio.Event = field(default_factory=asyncio.Event)


class Workers:
    def __init__(
        self,
        count: int,
        host: str,
        port: int,
        admin_address: str,
        admin_paths: tuple[str, ...],
        pool: Pool,
        config: Callable[[], Config],
        tasks: TaskSet,
        backlog: int,
    ) -> None:
        self.procs = [WorkerProcess(i + 1) for i in range(count)]
        self._host, self._port = host, port
        self._admin_address = admin_address
        self._admin_paths = admin_paths
        self._pool = pool
        self._config = config
        self._tasks = tasks
        self._backlog = backlog
        self._closing = False
        #: What the workers were last told.
        self.version = 0
        self._members: tuple[Member, ...] = pool.members()
        self._routing: tuple[Ring, LoadBound | None] = (pool.ring, pool.bound)
        self._told_config: Config = config()
        self._changed_at = time.monotonic()
        #: How long the latest view took from being sent to being applied by every worker.
        self.last_lag: float | None = None
        self._ids = itertools.count()
        #: Counters of worker processes that ended, so the sums never go back.
        self._carried: dict[str, ReplicaStats] = {}
        self._carried_counts: dict[str, tuple[int, int]] = {}
        #: The sums, as of the latest ``refresh``.
        self.stats: dict[str, ReplicaStats] = {}
        self.counts: dict[str, tuple[int, int]] = {}
        self.connections = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each listens (LbproxyError if one cannot)."""
        started = [asyncio.get_running_loop().create_future() for _ in self.procs]
        for proc, ready in zip(self.procs, started, strict=True):
            self._tasks.spawn(self._keep(proc, ready), name=f"worker:{proc.index}")
        self._tasks.spawn(self._publish(), name="workers-publish")
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.gather(*started)
        except TimeoutError:
            raise LbproxyError(f"the workers did not start within {READY_TIMEOUT:g}s") from None

    async def _keep(self, proc: WorkerProcess, ready: asyncio.Future[None]) -> None:
        failures = 0
        while not self._closing:
            began = time.monotonic()
            try:
                await self._run(proc, ready)
            except (OSError, ChannelClosedError, LbproxyError) as e:
                if not ready.done():
                    ready.set_exception(LbproxyError(f"worker {proc.index} cannot start: {e}"))
                    return
                if not self._closing and not isinstance(e, ChannelClosedError):
                    log.warning("worker %d: %s", proc.index, e)
            except Exception as e:
                # A bug here must not leave the port one worker short for good.
                if not ready.done():
                    ready.set_exception(e)
                    return
                log.exception("worker %d: keeper failed", proc.index)
            finally:
                self._ended(proc)
            if self._closing:
                return
            failures = failures + 1 if time.monotonic() - began < 10 else 1
            delay = min(BACKOFF_MAX, 0.1 * 2 ** (failures - 1))
            proc.restarts += 1
            log.warning("worker %d ended; starting it again in %.1fs", proc.index, delay)
            await asyncio.sleep(delay)

    async def _run(self, proc: WorkerProcess, ready: asyncio.Future[None]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _STARTER,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        proc.process, proc.pid = process, process.pid
        channel = proc.channel = await Channel.open(ours)
        try:
            channel.send(
                Init(
                    proc.index,
                    self._told_config,
                    self._host,
                    self._port,
                    self._admin_address,
                    self._admin_paths,
                    self.version,
                    self._members,
                    self._routing,
                    self._backlog,
                )
            )
            proc.applied = self.version
            await self._serve_channel(proc, channel, ready)
        finally:
            channel.close()
            if process.returncode is None and not self._closing:
                # The channel broke but the process lives on: it must not serve unwatched.
                process.kill()
            code = await process.wait()
            if not self._closing:
                log.warning("worker %d (pid %d) exited with status %s", proc.index, proc.pid, code)

    async def _serve_channel(
        self, proc: WorkerProcess, channel: Channel, ready: asyncio.Future[None]
    ) -> None:
        while True:
            message = await channel.recv()
            if isinstance(message, Ready):
                proc.ready = True
                if not ready.done():
                    ready.set_result(None)
                log.info("worker %d (pid %d) serving", proc.index, message.pid)
            elif isinstance(message, Applied):
                proc.applied = message.version
                proc._applied_changed.set()
                if message.version == self.version and all(
                    p.applied >= self.version for p in self.procs if p.ready
                ):
                    self.last_lag = time.monotonic() - self._changed_at
            elif isinstance(message, Report):
                proc.last_report = message
                waiter = proc._waiting.pop(message.ident, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
            elif isinstance(message, Suspect):
                replica = self._pool.by_hostname(message.hostname)
                if replica is not None:
                    replica.suspect.set()

    def _ended(self, proc: WorkerProcess) -> None:
        """A worker's process is gone: keep its last counters in the sums."""
        report = proc.last_report
        if report is not None:
            if report.stats is not None:
                self._carried = summed(self._carried, report.stats)
            for name, (requests, _) in report.counts.items():
                before = self._carried_counts.get(name, (0, 0))[0]
                self._carried_counts[name] = (before + requests, 0)
        proc.ready = False
        proc.missed = 0
        proc.channel = None
        proc.last_report = None
        for waiter in proc._waiting.values():
            if not waiter.done():
                waiter.cancel()
        proc._waiting.clear()

    async def close(self, timeout: float) -> None:
        """Ask every worker to stop (each finishes what it is answering, up to ``timeout``),
        then kill what is left."""
        self._closing = True
        live = [p for p in self.procs if p.process is not None and p.process.returncode is None]
        for p in live:
            if p.channel is not None:
                with contextlib.suppress(ChannelClosedError):
                    p.channel.send(Stop())
        waits = [p.process.wait() for p in live if p.process is not None]
        try:
            async with asyncio.timeout(timeout + 1):
                await asyncio.gather(*waits)
        except TimeoutError:
            for p in live:
                if p.process is not None and p.process.returncode is None:
                    log.warning("worker %d did not stop in time; killing it", p.index)
                    p.process.kill()
            await asyncio.gather(*(p.process.wait() for p in live if p.process is not None))

    # -- telling the workers ---------------------------------------------------------------

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL)
            self.publish()

    def publish(self) -> None:
        """Tell every worker what changed since it was last told."""
        config = self._config()
        if config is not self._told_config:
            self._told_config = config
            self._send(Reconfigure(config))
        members = self._pool.members()
        routing = (self._pool.ring, self._pool.bound)
        new_routing = routing[0] is not self._routing[0] or routing[1] is not self._routing[1]
        if members == self._members and not new_routing:
            return
        self.version += 1
        self._members, self._routing = members, routing
        self._changed_at = time.monotonic()
        self._send(View(self.version, members, routing if new_routing else None))

    def _send(self, message: object) -> None:
        for p in self.procs:
            if p.channel is not None:
                # A closed one's keeper starts it again, with everything in its Init.
                with contextlib.suppress(ChannelClosedError):
                    p.channel.send(message)

    async def applied(self, timeout: float = 1.0) -> bool:
        """Tell the workers what changed, if anything did, and wait until every live one
        routes by it (False: ``timeout``)."""
        self.publish()
        version = self.version
        try:
            async with asyncio.timeout(timeout):
                for p in self.procs:
                    while p.ready and p.applied < version:
                        p._applied_changed.clear()
                        await p._applied_changed.wait()
        except TimeoutError:
            return False
        return True

    # -- hearing from them -----------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask every worker for its counters and add them up (``stats``, ``counts``,
        ``connections``). A worker that does not answer in time counts with its last report."""
        asked: list[tuple[WorkerProcess, int, asyncio.Future[Report]]] = []
        for p in self.procs:
            if p.channel is None or not p.ready:
                continue
            ident = next(self._ids)
            waiter: asyncio.Future[Report] = asyncio.get_running_loop().create_future()
            p._waiting[ident] = waiter
            try:
                p.channel.send(ReportRequest(ident))
            except ChannelClosedError:
                p._waiting.pop(ident, None)
                continue
            asked.append((p, ident, waiter))
        if asked:
            await asyncio.wait([w for _, _, w in asked], timeout=REPORT_TIMEOUT)
        for p, ident, waiter in asked:
            if waiter.done():
                p.missed = 0
            else:
                p._waiting.pop(ident, None)
                waiter.cancel()
                p.missed += 1
                self._hung(p)
        reports = [p.last_report for p in self.procs if p.last_report is not None]
        self.stats = summed(self._carried, *(r.stats for r in reports if r.stats is not None))
        counts = dict(self._carried_counts)
        for r in reports:
            for name, (requests, in_flight) in r.counts.items():
                before = counts.get(name, (0, 0))
                counts[name] = (before[0] + requests, before[1] + in_flight)
        self.counts = counts
        self.connections = sum(r.connections for r in reports)

    def _hung(self, p: WorkerProcess) -> None:
        if p.missed < MISSED_REPORTS or p.process is None or p.process.returncode is not None:
            return
        log.error(
            "worker %d (pid %s) left %d report requests in a row unanswered: hung; killing it "
            "(it is started again)",
            p.index,
            p.pid,
            p.missed,
        )
        p.missed = 0
        with contextlib.suppress(ProcessLookupError):
            p.process.kill()

    def show(self, replicas: list[Replica]) -> None:
        """Put the sums on the supervisor's replicas, for /status and the dashboard."""
        for r in replicas:
            r.requests, r.in_flight = self.counts.get(r.hostname, (0, 0))

    async def drained(self, replica: Replica, timeout: float) -> bool:
        """Wait until no worker has a request in flight to ``replica`` (out of the pool
        already); False if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        await self.applied(timeout)  # from then on no worker sends it any more
        while True:
            await self.refresh()
            if not self.counts.get(replica.hostname, (0, 0))[1]:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    def describe(self) -> list[dict[str, object]]:
        """For /status."""
        return [
            {
                "worker": p.index,
                "pid": p.pid,
                "serving": p.ready,
                "restarts": p.restarts,
                "view": p.applied,
            }
            for p in self.procs
        ]
