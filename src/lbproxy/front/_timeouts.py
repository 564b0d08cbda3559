"""A client connection's two limits: idle between requests (``client_keepalive_timeout``)
and stalled mid-request (``client_timeout``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .._messages import failure

if TYPE_CHECKING:
    from ._connection import ClientConnection


class Timeouts:
    """One coarse timer per connection, never touched per request: a busy connection costs
    no timer work. Activity is noticed at the next tick, so a limit is enforced at most two
    ticks (half the smaller limit) late, never early."""

    __slots__ = ("_conn", "_idle_since", "_io_since", "_seen", "_timer", "resumes")

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self.resumes = 0  # resume_writing calls: progress of a client reading an answer
        self._seen = (0, 0, 0)  # (requests, rx, resumes) at the last tick
        self._io_since = self._idle_since = conn.loop.time()
        self._timer: asyncio.TimerHandle | None = conn.loop.call_later(
            conn.front.tick, self._on_timer
        )

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        conn = self._conn
        self._timer = None
        if conn.lost:
            return
        now = conn.loop.time()
        seen = (conn.requests, conn.rx, self.resumes)
        if seen[0] != self._seen[0] or conn.current is not None:
            self._idle_since = now
        if seen[1:] != self._seen[1:]:
            self._io_since = now
        self._seen = seen
        front = conn.front
        if conn.current is None and not conn.write_paused:
            if now - self._idle_since >= front.idle_timeout:
                conn.close()
                return
        elif self._waiting_on_client() and now - self._io_since >= front.client_timeout:
            self._cut_stalled()
            return
        self._timer = conn.loop.call_later(front.tick, self._on_timer)

    def _waiting_on_client(self) -> bool:
        """Whether the client holds things up: it does not read the answer, or it does not
        send the rest of a request body that the balancer is ready to read."""
        conn = self._conn
        if conn.write_paused:
            return True
        req = conn.parser.parsing
        return req is not None and req is conn.current and not conn.flow.read_paused  # type: ignore[union-attr]

    def _cut_stalled(self) -> None:
        """A client stalled mid-request for ``client_timeout``: free the replica's connection
        and the client's; 408 if none of the answer went out yet."""
        conn = self._conn
        req = conn.current
        if req is None or req.started:
            conn.abort()  # connection_lost drops the upstream exchange
            return
        front = conn.front
        front.notes.info(
            "clients", "stalled", "%s %s: client stalled mid-request; 408", req.method, req.target
        )
        conn.stop_reading()
        req.keep_alive = False
        req.answer(
            failure(
                f"The request was not received in time (nothing for {front.client_timeout:g}s)",
                408,
            )
        )
        if not req.cut():  # a task's ending (its finally) closes the connection
            conn.done(req)
