"""The upstream transport's protocol on an in-memory transport (``memory_transport``): no
socket, no sleep. The test plays the replica, byte for byte, and looks at what the
connection writes, whether it reads, and what the proxy gets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from lbproxy import UpstreamProtocolError
from lbproxy._config import ProxyConfig
from lbproxy._tunnel import Tunnel, TunnelEnd
from lbproxy.transport._httptools import _Connection, _HostPool, encode_head
from lbproxy.transport._parsing import HIGH_WATER
from memory_transport import MemoryTransport, connect

GET = encode_head("GET", "/a", b"Host: r\r\n", False)


@pytest.fixture
async def pool() -> AsyncIterator[_HostPool]:
    pool = _HostPool("127.0.0.1:9", ProxyConfig(), asyncio.get_running_loop())
    yield pool
    pool.close()
    for conn in list(pool.connections):
        conn.abort()


def replica_connection(pool: _HostPool) -> tuple[_Connection, MemoryTransport]:
    conn = _Connection(pool)
    return conn, connect(conn)


class Body:
    """A request body the test hands over piece by piece (``length`` None: sent chunked);
    ``asks`` gets a token each time the sender wants the next piece."""

    def __init__(self, length: int | None) -> None:
        self.length = length
        self.pieces: asyncio.Queue[bytes] = asyncio.Queue()
        self.asks: asyncio.Queue[None] = asyncio.Queue()

    async def read(self) -> bytes:
        self.asks.put_nowait(None)
        return await self.pieces.get()


async def test_a_whole_answer_comes_back_in_one_callback_and_the_connection_is_reused(
    pool: _HostPool,
) -> None:
    conn, transport = replica_connection(pool)
    answered = []
    ex = conn.send_nowait(GET, False, answered.append)
    assert transport.take() == b"GET /a HTTP/1.1\r\nHost: r\r\n\r\n"
    transport.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhel")
    assert answered == [ex] and not ex.complete  # the head is in
    transport.feed(b"lo")
    assert ex.complete and ex.take() == b"hello"
    assert (ex.status, ex.length, ex.headers) == (200, 5, [("Content-Length", "5"), ("X-A", "1")])
    ex.release()
    assert pool.acquire() is conn  # clean: back in the pool, reused


async def test_a_chunked_answer_body_pauses_reading_past_the_high_water(
    pool: _HostPool,
) -> None:
    conn, transport = replica_connection(pool)
    ex = conn.send_nowait(GET, False, lambda ex: None)
    transport.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert ex.length is None and ex.has_body
    piece = b"%x\r\n%s\r\n" % (HIGH_WATER // 4, b"y" * (HIGH_WATER // 4))
    fed = 0
    while transport.reading:  # the client reads nothing: reading stops past the high water
        transport.feed(piece)
        fed += HIGH_WATER // 4
    assert fed > HIGH_WATER
    assert len(await ex.read()) == fed and transport.reading  # taking resumes
    transport.feed(b"0\r\n\r\n")
    assert await ex.read() == b"" and ex.complete


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "only chunked"),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
         "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "malformed"),
    ],
)  # fmt: skip
async def test_answers_not_relayed_exactly_fail_the_exchange_and_reset(
    pool: _HostPool, answer: bytes, why: str
) -> None:
    conn, transport = replica_connection(pool)
    answered = []
    ex = conn.send_nowait(GET, False, answered.append)
    transport.feed(answer)
    assert answered == [ex]
    assert isinstance(ex.error, UpstreamProtocolError) and why in str(ex.error)
    assert transport.aborted  # never reused


async def test_a_request_body_is_chunked_and_waits_for_drain(pool: _HostPool) -> None:
    conn, transport = replica_connection(pool)
    body = Body(None)
    head = encode_head("POST", "/", b"", True)
    sending = asyncio.ensure_future(conn.send(head, body, False, True))
    await body.asks.get()
    assert transport.take() == head
    transport.high_water = 4  # the replica reads slowly from now on
    transport.wrote.clear()
    body.pieces.put_nowait(b"abc")
    await transport.wrote.wait()  # written, and the sender went on to wait in drain
    assert transport.write_paused and conn.flow is not None and conn.flow.drain_waiter
    assert body.asks.empty()  # nothing more is read from the client meanwhile
    assert transport.take() == b"3\r\nabc\r\n"  # the replica reads: writing resumes
    await body.asks.get()
    transport.high_water = None
    body.pieces.put_nowait(b"de")
    await body.asks.get()
    transport.wrote.clear()
    body.pieces.put_nowait(b"")
    await transport.wrote.wait()
    assert transport.take() == b"2\r\nde\r\n0\r\n\r\n"
    transport.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    ex = await sending
    assert ex.status == 204 and not ex.has_body


async def test_a_reused_connection_closed_before_any_answer_is_stale(pool: _HostPool) -> None:
    conn, transport = replica_connection(pool)
    ex = conn.send_nowait(GET, False, lambda ex: None)
    transport.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    ex.release()
    conn = pool.acquire()
    assert conn is not None and conn.reused
    answered = []
    ex = conn.send_nowait(GET, False, answered.append)
    conn.connection_lost(None)  # the replica had closed it
    assert answered == [ex] and ex.stale


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 101 Switching\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ],
    ids=["101", "101-connection-upgrade", "103-then-101"],
)
async def test_a_101_to_an_upgrade_makes_a_tunnel_end_with_the_bytes_after_it(
    pool: _HostPool, head: bytes
) -> None:
    conn, transport = replica_connection(pool)
    sending = asyncio.ensure_future(
        conn.send(encode_head("GET", "/ws", b"Upgrade: websocket\r\n", False), None, False, False,
                  upgrade=True)
    )  # fmt: skip
    await transport.wrote.wait()  # the request went out
    transport.feed(head + b"first")
    transport.feed(b" second")  # before the tunnel is made
    ex = await sending
    assert ex.status == 101 and ex.complete
    end = ex.detach()
    assert isinstance(end, TunnelEnd) and transport.get_protocol() is end
    assert end._early == b"first second"
    assert conn not in pool.connections
    ex.release()  # a no-op now: the tunnel owns the connection
    assert not transport.closed


async def test_a_tunnel_relays_both_ways_with_backpressure_and_ends_with_either_side() -> None:
    a_transport = MemoryTransport(asyncio.Protocol())
    b_transport = MemoryTransport(asyncio.Protocol())
    a = TunnelEnd(a_transport, b"to b first")
    b = TunnelEnd(b_transport, b"")
    tunnel = Tunnel(a, b, idle_timeout=60)
    assert b_transport.take() == b"to b first"
    a_transport.feed(b"ping")
    b_transport.feed(b"pong")
    assert (b_transport.take(), a_transport.take()) == (b"ping", b"pong")
    b.pause_writing()  # b's peer reads slowly: a is not read meanwhile
    assert not a_transport.reading and b_transport.reading
    b.resume_writing()
    assert a_transport.reading
    a.eof_received()  # one side done: both close
    await tunnel.wait()
    assert a_transport.closed and b_transport.closed


async def test_an_idle_tunnel_closes_itself() -> None:
    a_transport = MemoryTransport(asyncio.Protocol())
    b_transport = MemoryTransport(asyncio.Protocol())
    tunnel = Tunnel(TunnelEnd(a_transport, b""), TunnelEnd(b_transport, b""), idle_timeout=0.05)
    await asyncio.wait_for(tunnel.wait(), 5)  # nothing relayed: closed by its timer
    assert a_transport.closed and b_transport.closed
