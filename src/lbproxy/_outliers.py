"""Replicas that fail requests in a row leave routing for a while (``proxy.outlier_*``);
a replica the supervisor takes out has its requests in flight sent elsewhere at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ._config import Config
from ._errors import UpstreamConnectError, UpstreamError, UpstreamTimeoutError
from ._pool import Pool, Replica, State
from ._throttled_log import ThrottledLog
from .transport import Transport

log = logging.getLogger("lbproxy.proxy")


class Outliers:
    def __init__(self, pool: Pool, config: Callable[[], Config], transport: Transport) -> None:
        self._pool = pool
        self._config = config
        self._transport = transport
        #: Failures are said once per replica and event, with counts (a stopped replica
        #: fails every request routed to it until it leaves the ring).
        self._notes = ThrottledLog(log)
        #: Readmission timers of the replicas out of routing as outliers.
        self._ejected: dict[Replica, asyncio.TimerHandle] = {}
        pool.on_failed.append(self._taken_out)

    def failed(self, replica: Replica, name: str, error: UpstreamError) -> None:
        """A replica failed a request (no connection, broken off, timed out): say so (once
        per event), probe it now, and take it out of routing if it keeps failing."""
        if isinstance(error, UpstreamConnectError):
            self._notes.warning(
                name, "cannot connect", "%s: %s; trying the next replica", name, error
            )
        elif isinstance(error, UpstreamTimeoutError):
            self._notes.warning(name, "timed out", "replica %s: %s", name, error)
        else:
            self._notes.warning(name, "failed", "replica %s failed: %s", name, error)
        replica.suspect.set()  # a heartbeat now, rather than at the next interval
        replica.failures += 1
        limit = self._config().proxy.outlier_failures
        if limit and replica.failures >= limit and not replica.ejected:
            self._eject(replica, name)

    def _eject(self, replica: Replica, name: str) -> None:
        if replica.state is not State.UP or replica.hostname != name:
            return  # already out, or replaced meanwhile
        up = [r for r in self._pool.replicas.values() if r.state is State.UP]
        # At most half of the replicas out at once: failures everywhere are more likely the
        # network's or the balancer's own, and ejecting every replica would serve nobody.
        if 2 * (sum(r.ejected for r in up) + 1) > len(up):
            return
        cfg = self._config().proxy
        replica.ejected = True
        log.warning(
            "replica %s failed %d requests in a row: out of routing for %gs",
            name,
            replica.failures,
            cfg.outlier_ejection_time,
        )
        old = self._ejected.pop(replica, None)
        if old is not None:
            old.cancel()
        self._ejected[replica] = asyncio.get_running_loop().call_later(
            cfg.outlier_ejection_time, self._readmit, replica, name
        )

    def _readmit(self, replica: Replica, name: str) -> None:
        self._ejected.pop(replica, None)
        if replica.ejected:
            replica.ejected = False
            replica.failures = 0
            if replica.hostname == name and replica.state is State.UP:
                log.info("replica %s is back in routing", name)

    def _taken_out(self, replica: Replica) -> None:
        """The supervisor took ``replica`` out (it failed): what waits on it and can go
        elsewhere goes now, rather than when the replica is killed or times out."""
        address = replica.address
        if address is not None:
            n = self._transport.abandon(address, f"was taken out ({replica.hostname} is down)")
            if n:
                log.info("%d requests in flight on %s go to other replicas", n, replica.hostname)
