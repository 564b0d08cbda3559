"""Upstream transport on asyncio protocols and httptools' C parser, keep-alive pools per replica.

One ``_Connection`` protocol per TCP connection to a replica, parsing answers with httptools as
they arrive; one ``_HostPool`` per replica address keeps idle connections for reuse (most
recently used first, so the ones a replica is about to time out are the ones left unused).
Nothing is read whole: a body is handed on piece by piece, and reading from the replica is
paused while more than ``HIGH_WATER`` bytes wait for a slow client (and writing to it waits
for ``drain``), so backpressure holds both ways.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import cast

import httptools

from .._config import ProxyConfig
from .._errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError
from .._flow import ByteQueue, FlowControl
from .._framing import CHUNKED_LINE, BodyFraming, write_chunk
from .._headers import decode_wire
from .._tunnel import TunnelEnd
from ._base import IDEMPOTENT, RequestBody
from ._parsing import AnswerParsing
from ._read_timeout import ReadTimeout

log = logging.getLogger("lbproxy.transport")


class _StaleConnection(Exception):
    """A reused connection was closed by the replica before any of the answer came back."""


class _Response(ByteQueue):
    """One exchange on a connection; what ``Transport.request`` returns (UpstreamResponse).
    Its body queues on it as it arrives."""

    __slots__ = (
        "_conn",
        "_error",
        "_raw",
        "_released",
        "body_started",
        "close_delimited",
        "complete",
        "end_to_end",
        "has_body",
        "head_done",
        "head_only",
        "header_lines",
        "length",
        "reason",
        "received",
        "replayable",
        "status",
        "upgrade",
    )

    def __init__(
        self, conn: _Connection, head_only: bool, replayable: bool, upgrade: bool = False
    ) -> None:
        # An empty ByteQueue, set here rather than by calling its __init__: 0.4 µs less per
        # answer (python -m bench.hotpath).
        self._chunks, self.queued, self.waiter = [], 0, None
        self._conn = conn
        self.head_only = head_only
        #: The request asks to upgrade: a 101 answer is taken (and ``detach`` makes a tunnel).
        self.upgrade = upgrade
        #: Every byte received, for an upgrade only: the parser does not always say where
        #: a 101's head ends, and what follows it belongs to the tunnel.
        self._raw: bytearray | None = bytearray() if upgrade else None
        #: Bodiless and idempotent: may be sent to another replica if this one gives up.
        self.replayable = replayable
        self.status = 0
        self.reason = ""
        self.header_lines: list[bytes] = []
        self.length: int | None = None
        self.end_to_end = True
        self.has_body = True
        self.complete = False
        self.head_done = False
        self.close_delimited = False
        self.received = False  # any byte of the answer has come in
        self.body_started = False  # any byte of the request body was taken from the client
        self._error: UpstreamError | _StaleConnection | None = None
        self._released = False

    # -- for the proxy -----------------------------------------------------------------------

    @property
    def headers(self) -> list[tuple[str, str]]:
        return decode_wire(self.header_lines)

    async def read(self) -> bytes:
        while True:
            if self._chunks:
                data = self.take()
                flow = self._conn.flow
                if flow is not None and flow.read_paused:
                    flow.resume_reading()  # the client took what held reading back
                return data
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            await self.wait(self._conn.loop)

    def detach(self) -> TunnelEnd:
        """A 101 answer to an upgrade: the connection leaves HTTP (and its pool) and becomes
        one end of a tunnel; what came after the answer's head goes through it first."""
        conn = self._conn
        assert self.status == 101 and self.upgrade and conn.transport is not None
        self._released = True
        conn.detach()
        return TunnelEnd(conn.transport, self.take())

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.finish(self)

    @property
    def error(self) -> UpstreamError | None:
        """Why the exchange failed (``UpstreamError``), or None."""
        error = self._error
        if isinstance(error, _StaleConnection):
            return UpstreamProtocolError(
                f"{self._conn.pool.address} closed a kept-alive connection"
            )
        return error

    @property
    def stale(self) -> bool:
        """The replica closed the reused connection before answering anything: the request
        (bodiless, idempotent) may be sent again on another connection."""
        return isinstance(self._error, _StaleConnection)

    # -- for the connection ------------------------------------------------------------------

    def fail(self, error: UpstreamError | _StaleConnection) -> None:
        if self._error is None and not self.complete:
            self._error = error
            self.wake()


def after_switch(received: bytes | bytearray) -> bytes:
    """What follows the head of the 101 answer in ``received`` (the exchange's bytes: maybe
    interim 1xx heads, the 101's, then the other protocol's)."""
    pos = 0
    while (end := received.find(b"\r\n\r\n", pos)) >= 0:
        if received[pos + 9 : pos + 12] == b"101":
            return bytes(received[end + 4 :])
        pos = end + 4
    return b""


class _Connection(AnswerParsing, ReadTimeout):
    """One keep-alive connection to a replica, serving one exchange at a time.

    An asyncio protocol by its methods, not by deriving from ``asyncio.Protocol``: compiled
    (mypyc), a class with a Python base keeps its attributes in a dict, and every attribute
    read on the hot path would be a dictionary lookup."""

    __slots__ = (
        "_exchange",
        "_framing",
        "_interim",
        "_last_activity",
        "_on_answer",
        "_status",
        "_timer",
        "_waiting_on_client",
        "closed",
        "flow",
        "idle",
        "idle_since",
        "keep_alive",
        "loop",
        "parser",
        "pool",
        "reused",
        "transport",
    )

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle = False  # in the pool's idle list
        self.reused = False
        self.idle_since = 0.0
        self.flow: FlowControl | None = None
        self.keep_alive = False
        self._exchange: _Response | None = None
        self._status = b""
        self._interim = False
        self._framing = BodyFraming()
        self._timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._waiting_on_client = False
        #: For ``send_nowait``: called once the answer's head is in, or the exchange failed.
        self._on_answer: Callable[[_Response], None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(transport, self.loop)  # type: ignore[arg-type]
        self.pool.connections.add(self)

    def data_received(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.complete:
            if ex is not None and ex.upgrade and ex.status == 101:
                ex.push(data)  # the other protocol's, for the tunnel about to be made
                return
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.keep_alive = False
            if ex is None:
                self.abort()
            return
        ex.received = True
        self._last_activity = self.loop.time()
        if ex._raw is not None:
            ex._raw += data
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as e:
            if ex.upgrade and ex.status == 101:  # the parser stopped after the 101's head
                ex.push(after_switch(ex._raw or b""))
            elif isinstance(e, httptools.HttpParserError):
                ex.fail(UpstreamProtocolError(f"{self.pool.address} sent a malformed answer: {e}"))
                self.abort()
        on_answer = self._on_answer
        if on_answer is not None and (ex.head_done or ex._error is not None):
            self._on_answer = None  # _notify inlined: called once per proxied request
            on_answer(ex)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.connections.discard(self)
        if self.idle:
            self.pool.forget(self)
        self._cancel_timer()
        ex = self._exchange
        if ex is not None and not ex.complete:
            if ex.head_done and ex.close_delimited:
                self._complete(ex)  # an answer without a length ends when the replica hangs up
            elif self.reused and not ex.received:
                ex.fail(_StaleConnection())
            else:
                what = "its answer" if ex.head_done else "the connection before answering"
                ex.fail(UpstreamProtocolError(f"{self.pool.address} broke off {what}"))
        if self.flow is not None:
            self.flow.wake_writer()  # the body being sent stops: the exchange failed
        if ex is not None and self._on_answer is not None:
            self._notify(ex)

    def eof_received(self) -> bool | None:
        return None  # the replica is done sending: close, connection_lost says the rest

    def pause_writing(self) -> None:
        self.flow.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self._last_activity = self.loop.time()
        self.flow.resume_writing()  # type: ignore[union-attr]

    # -- the exchange ------------------------------------------------------------------------

    def send_nowait(
        self, head: bytes, head_only: bool, on_answer: Callable[[_Response], None]
    ) -> _Response:
        """Send a bodiless request; ``on_answer`` is called when the head is in or it failed."""
        assert self.transport is not None
        ex = _Response(self, head_only, True)
        self._exchange = ex
        self._on_answer = on_answer
        self.keep_alive = False
        self._last_activity = self.loop.time()
        if self._timer is None:
            self._arm(self.pool.read_timeout)
        self.transport.write(head)
        return ex

    def _notify(self, ex: _Response) -> None:
        on_answer, self._on_answer = self._on_answer, None
        if on_answer is not None:
            on_answer(ex)

    async def send(
        self,
        head: bytes,
        body: RequestBody | None,
        head_only: bool,
        chunked: bool,
        replayable: bool = False,
        upgrade: bool = False,
    ) -> _Response:
        """Send a request and wait for the answer's head; the body streams while it comes."""
        assert self.transport is not None
        ex = _Response(self, head_only, replayable, upgrade)
        self._exchange = ex
        self.keep_alive = False
        self._last_activity = self.loop.time()
        if self._timer is None:
            self._arm(self.pool.read_timeout)
        try:
            self.transport.write(head)
            if body is not None:
                await self._send_body(ex, body, chunked)
            while not ex.head_done and ex._error is None:
                await ex.wait(self.loop)
        except BaseException:
            # Cancelled, or the client left mid-body: the replica must see a cut request.
            self.abort()
            raise
        if not ex.head_done:
            error = ex._error
            assert error is not None
            self.finish(ex)
            if isinstance(error, _StaleConnection) and ex.body_started:
                raise UpstreamProtocolError(
                    f"{self.pool.address} closed the connection during the request"
                )
            raise error
        return ex

    async def _send_body(self, ex: _Response, body: RequestBody, chunked: bool) -> None:
        assert self.transport is not None and self.flow is not None
        transport, flow = self.transport, self.flow
        while True:
            self._waiting_on_client = True
            try:
                chunk = await body.read()
            finally:
                self._waiting_on_client = False
            ex.body_started = True
            if ex.head_done or ex._error is not None or self.closed:
                # The replica answered (or failed) before the body was all sent: what it
                # still expects never comes, so the connection is not reused.
                self.keep_alive = False
                return
            if chunked:
                write_chunk(transport, chunk)
                if not chunk:
                    return
            elif not chunk:
                return
            else:
                transport.write(chunk)
            self._last_activity = self.loop.time()
            if flow.write_paused:
                await flow.drain()

    def detach(self) -> None:
        """Leave HTTP for a tunnel: out of the pool, no read timeout, never reused."""
        self._exchange = None
        self._on_answer = None
        self.closed = True
        self.pool.connections.discard(self)
        self._cancel_timer()
        if self.flow is not None:
            self.flow.resume_reading()  # the tunnel pauses and resumes it from now on

    def finish(self, ex: _Response) -> None:
        """The proxy is done with ``ex``: back to the pool if the connection is clean."""
        if self._exchange is not ex:
            return
        self._exchange = None
        self._on_answer = None
        if ex.complete and ex._error is None and self.keep_alive and not self.closed:
            flow = self.flow
            if flow.read_paused:  # type: ignore[union-attr]
                flow.resume_reading()  # type: ignore[union-attr]
            self.pool.release(self)
        elif ex.complete and ex._error is None:
            self.close()
        else:
            self.abort()  # mid-answer: reset, so the replica cannot take it for complete

    # -- helpers -----------------------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _HostPool:
    """Idle keep-alive connections to one replica address, at most ``size`` of them."""

    def __init__(self, address: str, config: ProxyConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self.loop = loop
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._size = config.pool_size
        self._keepalive = config.keepalive_timeout
        self._connect_timeout = config.connect_timeout
        self.read_timeout = config.read_timeout
        self._idle: collections.deque[_Connection] = collections.deque()
        #: Every open connection, idle or busy (so that ``abandon`` finds the busy ones).
        self.connections: set[_Connection] = set()
        self.closing = False

    def acquire(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.idle = False
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await self.loop.create_connection(
                    lambda: cast(asyncio.Protocol, _Connection(self)), self._host, self._port
                )
        except TimeoutError:
            raise UpstreamConnectError(f"timed out connecting to {self.address}") from None
        except OSError as e:
            raise UpstreamConnectError(
                f"cannot connect to {self.address}: {e.strerror or e}"
            ) from None
        return cast(_Connection, protocol)

    def release(self, conn: _Connection) -> None:
        idle = self._idle
        if self.closing or len(idle) >= self._size:
            conn.close()
            return
        now = self.loop.time()
        conn.idle_since = now
        conn.idle = True
        idle.append(conn)
        # The longest-idle connections sit at the left end; drop those past keepalive_timeout.
        while idle and now - idle[0].idle_since > self._keepalive:
            old = idle.popleft()
            old.idle = False
            old.close()

    def abandon(self, reason: str) -> int:
        """The replica was taken out: close the idle connections, and fail the exchanges that
        can go to another replica and have had nothing back (the others may still be
        answered). Returns how many exchanges were failed."""
        failed = 0
        for conn in list(self.connections):
            ex = conn._exchange
            if ex is None:
                conn.close()
            elif ex.replayable and not ex.received and not ex.complete and ex._error is None:
                ex.fail(UpstreamProtocolError(f"{self.address} {reason}"))
                conn.abort()
                failed += 1
        return failed

    def forget(self, conn: _Connection) -> None:
        conn.idle = False
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def close(self) -> None:
        self.closing = True
        while self._idle:
            conn = self._idle.pop()
            conn.idle = False
            conn.close()

    def __len__(self) -> int:
        return len(self._idle)


def encode_head(method: str, target: str, headers: bytes, chunked: bool) -> bytes:
    return b"%s %s HTTP/1.1\r\n%s%s\r\n" % (
        method.encode("latin-1"),
        target.encode("latin-1"),
        headers,
        CHUNKED_LINE if chunked else b"",
    )


class HttptoolsTransport:
    """The upstream transport: keep-alive HTTP/1.1 to replicas, ``pool_size`` idle per replica."""

    def __init__(self, config: ProxyConfig) -> None:
        self._config = config
        self._pools: dict[str, _HostPool] = {}
        self._closed = False

    def idle_connections(self, address: str) -> int:
        pool = self._pools.get(address)
        return len(pool) if pool is not None else 0

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: bytes,
        body: RequestBody | None,
        upgrade: bool = False,
    ) -> _Response:
        pool = self._pools.get(address)
        if pool is None:
            if self._closed:
                raise UpstreamConnectError("the balancer is shutting down")
            pool = self._pools[address] = _HostPool(
                address, self._config, asyncio.get_running_loop()
            )
        chunked = body is not None and body.length is None
        head = encode_head(method, target, headers, chunked)
        head_only = method == "HEAD"
        replayable = body is None and method in IDEMPOTENT
        conn = pool.acquire() or await pool.connect()
        try:
            return await conn.send(head, body, head_only, chunked, replayable, upgrade)
        except _StaleConnection:
            if method not in IDEMPOTENT:
                raise UpstreamProtocolError(
                    f"{address} closed a kept-alive connection as the request went out"
                ) from None
        # The replica closed the idle connection just as it was reused: nothing of the answer
        # came back and none of the request body was taken, so an idempotent request goes
        # out again on a fresh connection.
        log.debug("%s closed a reused connection; sending again on a new one", address)
        conn = await pool.connect()
        try:
            return await conn.send(head, body, head_only, chunked, replayable, upgrade)
        except _StaleConnection:
            raise UpstreamProtocolError(f"{address} closed the connection at once") from None

    def send_nowait(
        self,
        address: str,
        method: str,
        target: str,
        headers: bytes,
        on_answer: Callable[[_Response], None],
    ) -> _Response | None:
        """See ``Transport.send_nowait``."""
        pool = self._pools.get(address)
        conn = pool.acquire() if pool is not None else None
        if conn is None:
            return None
        head = encode_head(method, target, headers, False)
        return conn.send_nowait(head, method == "HEAD", on_answer)

    def abandon(self, address: str, reason: str) -> int:
        """See ``Transport.abandon``."""
        pool = self._pools.get(address)
        return pool.abandon(reason) if pool is not None else 0

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
