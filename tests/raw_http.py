"""Both ends of adversarial tests, strict where the balancer is tested: a replica that records
exactly the bytes it receives and answers with bytes the test chooses, and a client that
sends raw bytes and reads answers with a strict parser.

The replica (``RawReplica``):

Whatever the balancer sends is kept per connection, byte for byte (``Connection.received``),
and parsed by h11, a strict HTTP/1.1 parser independent of the balancer's httptools: a
request counts as received (``RawReplica.requests``) only once h11 has read it whole, and
anything h11 refuses is recorded (``Connection.error``) and ends that connection. The test's
``answer(request, connection)`` returns the raw answer, or None to leave the request
unanswered (a hung replica); by default each answer says which request it answers
(``X-Seq``), so a client can tell whether it got its own.

The client (``StrictClient``) reads the balancer's answers with h11 too: an answer that is
not framed exactly right fails the test instead of being guessed at.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import h11


@dataclass
class Received:
    """One request the replica read whole."""

    seq: int  # in arrival order over all connections, from 0
    connection: int  # index in RawReplica.connections
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased (h11)
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name.lower()]


def default_answer(req: Received, conn: Connection) -> bytes:
    body = b"seq %d %s %s %d" % (req.seq, req.method, req.target, len(req.body))
    return b"HTTP/1.1 200 OK\r\nX-Seq: %d\r\nContent-Length: %d\r\n\r\n%s" % (
        req.seq,
        len(body),
        body,
    )


Answer = Callable[[Received, "Connection"], bytes | None]


@dataclass(eq=False)
class Connection(asyncio.Protocol):
    replica: RawReplica
    index: int
    received: bytearray = field(default_factory=bytearray)
    #: What h11 refused in what the balancer sent (None: nothing).
    error: str | None = None
    #: The balancer closed (or reset) the connection; ``cut``: in the middle of a request.
    closed: bool = False
    cut: bool = False
    reset: bool = False
    transport: asyncio.Transport | None = None
    _h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.SERVER))
    _head: h11.Request | None = None
    _body: bytearray = field(default_factory=bytearray)
    _waiting: bool = False  # a request is unanswered (hung): read nothing more of h11

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.error is None:
            self._h11.receive_data(data)
            self._process()

    def eof_received(self) -> bool:
        # Everything before the EOF was read already: all h11 can object to now is a request
        # cut short, which is how a balancer gives up an exchange, not a framing error.
        if self.error is None and not self._waiting:
            self._h11.receive_data(b"")
            self._process(at_eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reset = isinstance(exc, ConnectionResetError)

    def _process(self, at_eof: bool = False) -> None:
        while not self._waiting:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as e:
                if at_eof:
                    self.cut = True
                elif self._head is not None or self.received.strip():
                    self.error = f"h11 refused what the balancer sent: {e}"
                if self.transport is not None:
                    self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Request):
                self._head = event
                self._body = bytearray()
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._complete()

    def _complete(self) -> None:
        head, self._head = self._head, None
        assert head is not None
        replica = self.replica
        if head.target == b"/heartbeat":
            replica.heartbeats += 1
            if replica.hung:
                self._waiting = True
            else:
                self._respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return
        req = Received(
            len(replica.requests),
            self.index,
            head.method,
            head.target,
            [(k, v) for k, v in head.headers],
            bytes(self._body),
        )
        replica.requests.append(req)
        answer = replica.answer(req, self)
        if answer is None:
            self._waiting = True  # hung: never answers this one
            return
        self._respond(answer)

    def _respond(self, raw: bytes) -> None:
        assert self.transport is not None
        self.transport.write(raw)
        # h11 is told an answer went out (its bytes are not sent) to move on to the next
        # request; a request that said "close" ends the connection after its answer.
        h = self._h11
        h.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
        h.send(h11.EndOfMessage())
        if h.our_state is h11.MUST_CLOSE or b"connection: close" in raw.lower():
            self.transport.close()
            return
        if h.their_state is h11.DONE:
            h.start_next_cycle()

    def abort(self) -> None:
        """Leave with a TCP reset."""
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()


class RawReplica:
    """A loopback server recording what it receives; ``await RawReplica.start(answer)``."""

    def __init__(self, answer: Answer = default_answer) -> None:
        self.answer = answer
        self.connections: list[Connection] = []
        self.requests: list[Received] = []
        self.heartbeats = 0
        #: Set to stop answering heartbeats too, as a hung (SIGSTOPped) process would.
        self.hung = False
        self.address = ""
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(cls, answer: Answer = default_answer) -> RawReplica:
        replica = cls(answer)
        loop = asyncio.get_running_loop()
        replica._server = await loop.create_server(replica._connection, "127.0.0.1", 0)
        port = replica._server.sockets[0].getsockname()[1]
        replica.address = f"127.0.0.1:{port}"
        return replica

    def _connection(self) -> Connection:
        conn = Connection(self, len(self.connections))
        self.connections.append(conn)
        return conn

    @property
    def errors(self) -> list[str]:
        return [c.error for c in self.connections if c.error is not None]

    def raw(self) -> bytes:
        """Everything received on every connection, heartbeats left out."""
        return b"".join(
            bytes(c.received) for c in self.connections if b"/heartbeat" not in c.received
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for c in self.connections:
                if c.transport is not None:
                    c.transport.abort()
            await self._server.wait_closed()


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def seq(self) -> int | None:
        """Which replica request this answers (``default_answer``), None for the balancer's."""
        values = self.header(b"x-seq")
        return int(values[0]) if values else None


class ReplyReader:
    """Reads one answer from an h11 client connection's events (1xx ones skipped)."""

    def __init__(self, h: h11.Connection) -> None:
        self.h = h
        self.head: h11.Response | None = None
        self.body = bytearray()

    def poll(self) -> Reply | None:
        """The answer once all of it is in; None while more data is needed. Raises
        ``ConnectionError`` if the connection ended first, h11's error if it is malformed."""
        while True:
            event = self.h.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self.head = event
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self.head is not None
                return Reply(self.head.status_code, list(self.head.headers), bytes(self.body))
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the balancer closed the connection")


class StrictClient:
    """A raw connection to the balancer whose answers h11 parses (strictly)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._h11 = h11.Connection(h11.CLIENT)
        self._methods: list[bytes] = []

    @classmethod
    async def open(cls, port: int) -> StrictClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes, *methods: bytes) -> None:
        """Send raw ``data`` holding requests with these ``methods`` (what h11 needs to know
        to read their answers: a HEAD's has no body)."""
        self._methods += methods
        self.writer.write(data)

    async def answer(self, timeout: float = 5.0) -> Reply:
        """The next answer, read whole; raises if it is not well framed or not in time."""
        h = self._h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
        if h.our_state is h11.IDLE:
            method = self._methods.pop(0) if self._methods else b"GET"
            h.send(h11.Request(method=method, target="/", headers=[("Host", "lb")]))
            h.send(h11.EndOfMessage())
        reader = ReplyReader(h)
        async with asyncio.timeout(timeout):
            while (reply := reader.poll()) is None:
                h.receive_data(await self.reader.read(65536))
            return reply

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the balancer ends the connection (EOF or reset) within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            return True
        return True

    def close(self) -> None:
        self.writer.close()
