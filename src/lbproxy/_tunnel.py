"""Two connections relayed as raw bytes both ways, after an HTTP/1.1 upgrade (101, RFC 9110
section 15.2.2; WebSocket, RFC 6455 section 4).

Each side's transport gets a ``TunnelEnd`` as its protocol (``transport.set_protocol``):
from then on nothing parses its bytes, they go to the other side's transport as they come.
Backpressure holds both ways: when one side's transport stops taking writes, reading from
the other pauses until it drains. The tunnel ends when either side closes, sends EOF or
stays quiet (both ways) for ``idle_timeout``; then both are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class TunnelEnd(asyncio.Protocol):
    """One side of a tunnel: the protocol of a transport taken over from HTTP."""

    __slots__ = ("_early", "_on_lost", "peer", "transport", "tunnel")

    def __init__(
        self,
        transport: asyncio.Transport,
        early: bytes,
        on_lost: Callable[[Exception | None], None] | None = None,
    ) -> None:
        #: What arrived after the HTTP head, before the tunnel was made: relayed first.
        self._early = early
        #: Called once the transport is lost (the HTTP protocol's own bookkeeping).
        self._on_lost = on_lost
        self.transport = transport
        self.tunnel: Tunnel | None = None
        self.peer: TunnelEnd | None = None
        transport.set_protocol(self)
        if not transport.is_closing():
            transport.pause_reading()  # until the tunnel is made: nowhere to send to yet

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.last_activity = tunnel.loop.time()
            self.peer.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        if self.tunnel is not None:
            self.tunnel.close()
        return False  # close this side: a half-closed tunnel is not relayed

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(exc)

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.transport.is_closing():
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.transport.is_closing():
            peer.transport.resume_reading()

    def _open(self, tunnel: Tunnel, peer: TunnelEnd) -> None:
        self.tunnel = tunnel
        self.peer = peer
        early, self._early = self._early, b""
        if early:
            peer.transport.write(early)

    def _start(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()


class Tunnel:
    """Relays ``a`` and ``b`` both ways until either ends or both stay quiet too long."""

    __slots__ = ("_a", "_b", "_closed", "_idle_timeout", "_timer", "last_activity", "loop")

    def __init__(self, a: TunnelEnd, b: TunnelEnd, idle_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._a, self._b = a, b
        self._idle_timeout = idle_timeout
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self.last_activity = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        a._open(self, b)
        b._open(self, a)
        if a.transport.is_closing() or b.transport.is_closing():
            self.close()
            return
        a._start()
        b._start()
        self._timer = self.loop.call_later(idle_timeout, self._on_timer)

    async def wait(self) -> None:
        """Until the tunnel is closed; cancelling the wait closes it."""
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()

    def close(self) -> None:
        """Close both sides (what was written still goes out)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for end in (self._a, self._b):
            end.transport.close()
        if not self._closed.done():
            self._closed.set_result(None)

    def _on_timer(self) -> None:
        # One timer for the tunnel, re-armed from the last activity: relaying a chunk
        # costs a clock read, never a timer.
        quiet = self.loop.time() - self.last_activity
        if quiet >= self._idle_timeout * 0.999:
            self._timer = None
            self.close()
        else:
            self._timer = self.loop.call_later(self._idle_timeout - quiet, self._on_timer)
