"""One client connection: requests answered one at a time and in order, backpressure both
ways, and the connection's end (closing, lingering, idle and stalled clients)."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

import httptools

from .._errors import ClientDisconnectedError
from .._flow import FlowControl
from .._framing import write_chunk
from .._messages import Answer, failure
from .._tunnel import TunnelEnd
from ._parser import RequestParser
from ._refusals import Refusals
from ._request import Request
from ._timeouts import Timeouts

if TYPE_CHECKING:
    from ._server import Front

log = logging.getLogger("lbproxy.front")

#: Reading from a client pauses once this much of its request body waits to be sent on.
BODY_HIGH_WATER = 256 * 1024
#: How long a connection that will be closed keeps reading (and discarding) what the client
#: still sends, so that closing it does not reset the answer the client has yet to read.
LINGER = 2.0

_ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


class ClientConnection(Refusals):
    """The ``ClientSink`` of its requests; ``Front.dispatch`` serves each.

    An asyncio protocol by its methods, not by deriving from ``asyncio.Protocol``: compiled
    (mypyc), a class with a Python base keeps its attributes in a dict, and every one of the
    dozens of attribute reads per request would be a dictionary lookup."""

    __slots__ = (
        "_closed",
        "_discarding",
        "_early",
        "_error",
        "_watch",
        "closing",
        "current",
        "eof",
        "flow",
        "front",
        "loop",
        "lost",
        "parser",
        "pending",
        "remote",
        "requests",
        "rx",
        "scheme",
        "transport",
    )

    def __init__(self, front: Front) -> None:
        self.front = front
        self.loop = front.loop
        self.scheme = front.scheme
        self.parser = RequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.remote: str | None = None
        self.current: Request | None = None
        self.pending: collections.deque[Request] = collections.deque()
        self.closing = False  # no more requests: after the current answer, close
        self.lost = False
        self.eof = False  # the client sent EOF: it may still read
        self.requests = 0
        self.rx = 0  # data_received calls: progress of a client sending a request body
        self._discarding = False  # input is ignored from now on
        self._closed = False
        self._error: Answer | None = None  # a 400/414/431 to send once the current answer ends
        #: After a head that asks to upgrade: the bytes that followed it (None: no upgrade).
        self._early: bytes | None = None
        self._watch: Timeouts | None = None

    # -- the asyncio protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(transport, self.loop)  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        if not self.front.admit(self):
            self.lost = self._discarding = True
            return
        self._watch = Timeouts(self)

    def data_received(self, data: bytes) -> None:
        self.rx += 1
        if self._discarding:
            return
        try:
            self.parser.feed(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as e:
            self._parse_stopped(e, data)

    def eof_received(self) -> bool | None:
        # The client finished sending; answers to what it asked for still go out.
        self.eof = True
        self.closing = True
        if self.parser.parsing is not None:
            self.parser.parsing.wake()  # a body cut short
        if self.current is None:
            self.transport.close()  # type: ignore[union-attr]
        return True  # keep our side open until the answers are written

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closing = True
        self.front.connections.discard(self)
        if self._watch is not None:
            self._watch.stop()
        for req in (self.parser.parsing, *self.pending):
            if req is not None:
                req.wake()
        self.pending.clear()
        current = self.current
        if current is not None and current.client_left():
            self.done(current)
        if self.flow is not None:
            self.flow.lose(ClientDisconnectedError("the client went away"))

    def pause_writing(self) -> None:
        self.flow.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        if self._watch is not None:
            self._watch.resumes += 1
        self.flow.resume_writing()  # type: ignore[union-attr]

    # -- what the parser hands on ------------------------------------------------------------

    def queue(self, req: Request) -> None:
        self.pending.append(req)  # pipelined: answered after the ones before it
        self.update_reading()

    def body_queued(self, req: Request) -> None:
        if req.queued > BODY_HIGH_WATER and not self.flow.read_paused:  # type: ignore[union-attr]
            self.update_reading()

    # -- ClientSink --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def write_chunk(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            write_chunk(self.transport, data)

    @property
    def write_paused(self) -> bool:
        flow = self.flow
        return flow is not None and flow.write_paused

    async def drain(self) -> None:
        await self.flow.drain()  # type: ignore[union-attr]

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def last_answer(self) -> bool:
        return self.closing and not self.pending and self._error is None

    @property
    def body_gone(self) -> bool:
        return self.lost or self.eof

    def body_taken(self) -> None:
        self.update_reading()

    def switch(self, head: bytes) -> TunnelEnd:
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            raise ClientDisconnectedError("the client left before its upgrade")
        transport.write(head)
        if self._watch is not None:  # the tunnel has its own idle timeout
            self._watch.stop()
            self._watch = None
        early, self._early = self._early or b"", None
        return TunnelEnd(transport, early, self.connection_lost)

    def own_answer(self, status: int) -> None:
        self.front.own_answer(status)

    def done(self, req: Request) -> None:
        if self.current is not req:
            return
        self.current = None
        if self.lost:
            return
        if not req.finished:
            self.abort()
        elif self.pending and req.keep_alive:
            self.start(self.pending.popleft())
            self.update_reading()
        elif self._error is not None:
            self._reject(self._error)  # what could not be parsed, after what could
        elif not req.keep_alive or self.closing:
            self.close()
        elif self.flow.read_paused or self.parser.parsing is not None:  # type: ignore[union-attr]
            # Nothing is pending here, so reading needs no change unless it is paused or a
            # request body is being read: the usual keep-alive request skips the call.
            self.update_reading()

    # -- serving -----------------------------------------------------------------------------

    def start(self, req: Request) -> None:
        """Serve ``req`` now (nothing is being answered)."""
        self.current = req
        self.requests += 1
        front = self.front
        if req.method == "CONNECT":
            req.answer(failure("CONNECT is not supported", 405, {"Allow": _ALLOW}))
            self.done(req)
        elif front.routes and (route := front.routes.get(req.raw_path)) is not None:
            route(req)
        else:
            front.dispatch(req)

    def update_reading(self) -> None:
        """Read from the client unless requests or body bytes are piling up unanswered."""
        if self.lost or self.flow is None:
            return
        req = self.parser.parsing
        if (
            self.pending
            or self._early is not None  # the rest is for a tunnel, if an upgrade is made
            or (req is not None and req.queued > BODY_HIGH_WATER)
        ):
            self.flow.pause_reading()
        else:
            self.flow.resume_reading()

    def close(self) -> None:
        """Close after what was written is sent; keep discarding input for a while so the
        kernel does not reset the connection under an answer not yet read."""
        transport = self.transport
        if self.lost or transport is None or self._closed:
            return
        self._closed = self._discarding = True
        if transport.is_closing():  # a tunnel's, closed by it
            return
        if self.eof:
            transport.close()
            return
        self.flow.resume_reading()  # type: ignore[union-attr]
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # the client is gone already (asyncio's transport says so here)
                transport.close()
                return
            self.loop.call_later(LINGER, self._hard_close)
        else:
            transport.close()

    def _hard_close(self) -> None:
        if not self.lost and self.transport is not None:
            self.transport.close()

    def stop_reading(self) -> None:
        """No more requests: what the client still sends is discarded."""
        self.closing = self._discarding = True

    def shutdown(self) -> None:
        """Shutting down: no more requests; an idle connection closes now."""
        self.closing = True
        if self.current is None:
            self.close()
