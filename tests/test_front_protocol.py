"""The front's protocol on an in-memory transport (``memory_transport``): no socket, no
sleep. A test plays the client (bytes in, bytes out) and the application (the ``dispatch``
callable), and looks at what the connection writes and whether it reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h11
import pytest

from lbproxy._messages import success
from lbproxy._tunnel import TunnelEnd
from lbproxy.front import BODY_HIGH_WATER, Front, Request
from memory_transport import MemoryTransport, connect

GET = b"GET /a?x=1 HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 123456\r\n\r\n"


class App:
    """The dispatch callable: keeps each request for the test to answer."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[Request] = asyncio.Queue()

    def __call__(self, request: Request) -> None:
        self.requests.put_nowait(request)

    def next(self) -> Request:
        return self.requests.get_nowait()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    yield App()


@pytest.fixture
async def front(app: App) -> AsyncIterator[Front]:
    front = Front(app, {}, idle_timeout=60, client_timeout=60)
    yield front
    for conn in list(front.connections):
        conn.abort()


def answers(
    data: bytes, methods: list[bytes] | None = None
) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The answers in ``data``, read by h11 (strict): (status, headers, body) each."""
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    asked = iter(methods or [b"GET"] * 8)
    conn = h11.Connection(h11.CLIENT)

    def ask() -> None:
        conn.send(h11.Request(method=next(asked, b"GET"), target="/", headers=[("Host", "lb")]))
        conn.send(h11.EndOfMessage())

    ask()
    conn.receive_data(data)
    status, headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
            return out
        if isinstance(event, h11.Response):
            status, headers, body = event.status_code, dict(event.headers), b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append((status, headers, body))
            if h11.MUST_CLOSE in (conn.our_state, conn.their_state):
                return out
            conn.start_next_cycle()
            ask()


async def test_a_request_reaches_dispatch_and_its_answer_the_client(front: Front, app: App) -> None:
    transport = connect(front_connection(front))
    transport.feed(GET)
    req = app.next()
    assert (req.method, req.target, req.path, req.query) == ("GET", "/a?x=1", "/a", {"x": "1"})
    assert req.headers["x-request-id"] == "123456" and req.remote == "127.0.0.1"
    assert req.scheme == "http" and not req.has_body and req.upgrade is None
    req.answer(success("hi"))
    req.done()
    [(status, headers, body)] = answers(transport.take())
    assert status == 200 and body == b'{"message": "hi", "status": "successful"}'
    assert b"connection" not in headers  # kept alive
    assert not transport.closed and transport.reading


async def test_pipelined_requests_wait_their_turn_and_reading_pauses(
    front: Front, app: App
) -> None:
    transport = connect(front_connection(front))
    transport.feed(GET.replace(b"/a", b"/1") + GET.replace(b"/a", b"/2"))
    first = app.next()
    assert app.requests.empty()  # the second waits for the first's answer
    assert not transport.reading  # and nothing more is read meanwhile
    first.send_whole(200, "OK", b"Content-Length: 1\r\n", b"1", "length")
    first.done()
    second = app.next()
    assert second.target == "/2?x=1" and transport.reading
    second.start(200, "OK", b"", "chunked")
    second.write(b"ab")
    second.write(b"c")
    second.end()
    second.done()
    data = transport.take()
    assert data.endswith(b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")  # chunked here, exactly
    assert [a[2] for a in answers(data)] == [b"1", b"abc"]


async def test_a_body_is_streamed_with_backpressure(front: Front, app: App) -> None:
    transport = connect(front_connection(front))
    size = 3 * BODY_HIGH_WATER
    transport.feed(b"POST /up HTTP/1.1\r\nHost: lb\r\nContent-Length: %d\r\n\r\n" % size)
    req = app.next()
    assert req.has_body and req.length == size
    piece = b"x" * (BODY_HIGH_WATER // 4)
    sent = 0
    while transport.reading:  # nobody reads the body: reading stops past the high water
        transport.feed(piece)
        sent += len(piece)
    assert BODY_HIGH_WATER < sent < size
    assert len(await req.read()) == sent  # taking it resumes reading
    assert transport.reading
    transport.feed(b"x" * (size - sent))
    assert len(await req.read()) == size - sent
    assert await req.read() == b""
    req.answer(success("ok"))
    req.done()
    assert answers(transport.take(), [b"POST"])[0][0] == 200


async def test_expect_100_continue_is_sent_when_the_body_is_read(front: Front, app: App) -> None:
    transport = connect(front_connection(front))
    transport.feed(
        b"PUT /p HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    req = app.next()
    assert transport.take() == b""  # not before someone wants the body
    reading = asyncio.ensure_future(req.read())
    await asyncio.sleep(0)  # one loop turn: the read starts and finds nothing yet
    assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    transport.feed(b"ok")
    assert await reading == b"ok"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: lb\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: lb\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: upgrade\r\nUpgrade: x\r\n"
         b"Content-Length: 1\r\n\r\nx", 400),
        (b"\x00\x01garbage\r\n\r\n", 400),
    ],
)  # fmt: skip
async def test_a_bad_head_is_answered_and_the_connection_ends(
    front: Front, app: App, data: bytes, status: int
) -> None:
    transport = connect(front_connection(front))
    transport.feed(data)
    assert app.requests.empty()  # nothing reaches the application
    [(got, headers, _)] = answers(transport.take())
    assert got == status and headers[b"connection"] == b"close"
    assert transport.eof_written  # closed after the answer (lingering)


async def test_a_malformed_body_fails_its_reader_at_once(front: Front, app: App) -> None:
    transport = connect(front_connection(front))
    transport.feed(b"POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
    req = app.next()
    assert await req.read() == b"ab"
    transport.feed(b"cXX")  # not the chunk's CRLF
    with pytest.raises(Exception, match="Malformed"):
        await req.read()


async def test_a_client_leaving_cancels_the_task_serving_it(front: Front, app: App) -> None:
    conn = front_connection(front)
    transport = connect(conn)
    transport.feed(GET)
    req = app.next()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Future()

    req.spawn(forever())
    await started.wait()
    transport.abort()
    await transport.lost.wait()
    assert req._task is not None
    with pytest.raises(asyncio.CancelledError):
        await req._task
    assert conn not in front.connections


async def test_an_upgrade_hands_the_connection_and_its_early_bytes_to_a_tunnel(
    front: Front, app: App
) -> None:
    transport = connect(front_connection(front))
    transport.feed(
        b"GET /ws HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"early frame"
    )
    req = app.next()
    assert req.upgrade == "websocket"
    assert not transport.reading  # what follows waits for the tunnel
    end = req.switch(101, "Switching Protocols", b"Upgrade: websocket\r\nConnection: Upgrade\r\n")
    assert isinstance(end, TunnelEnd) and transport.get_protocol() is end
    assert transport.take() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert end._early == b"early frame"


async def test_an_upgrade_answered_otherwise_ends_the_connection(front: Front, app: App) -> None:
    transport = connect(front_connection(front))
    transport.feed(
        b"GET /ws HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nnot http"
    )
    req = app.next()
    req.answer(success("plain"))
    req.done()
    [(status, headers, _)] = answers(transport.take())
    assert status == 200 and headers[b"connection"] == b"close"
    assert transport.eof_written


def front_connection(front: Front) -> asyncio.Protocol:
    from lbproxy.front._connection import ClientConnection

    return ClientConnection(front)


__all__ = ["MemoryTransport"]


def test_the_front_imports_no_application() -> None:
    """The front sits low in the import graph: what it imports of lbproxy is the shared
    HTTP pieces, never the admin API, the controller, the supervisor or the proxy."""
    import ast
    from pathlib import Path

    import lbproxy.front

    allowed = {"_errors", "_flow", "_framing", "_headers", "_messages", "_throttled_log", "_tunnel"}
    imported: set[str] = set()
    for path in Path(lbproxy.front.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:  # from .. import
                imported.add((node.module or "").split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("lbproxy"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("lbproxy") for a in node.names), path
    assert imported <= allowed, imported - allowed
