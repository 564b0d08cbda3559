"""The upstream transport on its own, against raw servers on loopback whose every byte the
test decides: keep-alive reuse, stale connections, framing, timeouts, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from conftest import RawHandler, RawRequest, RawUpstream, eventually, free_port, raw_response
from lbproxy import (
    ClientDisconnectedError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from lbproxy._config import ProxyConfig
from lbproxy._headers import encode_headers
from lbproxy.transport import HttptoolsTransport

Start = Callable[[RawHandler], Awaitable[RawUpstream]]
HOST = encode_headers([("Host", "test")])
MiB = 1 << 20


@pytest.fixture
async def transport() -> AsyncIterator[Callable[..., HttptoolsTransport]]:
    made: list[HttptoolsTransport] = []

    def make(**config: Any) -> HttptoolsTransport:
        t = HttptoolsTransport(ProxyConfig(**config))
        made.append(t)
        return t

    yield make
    for t in made:
        await t.close()


class Body:
    """A request body from a list of pieces (``length`` None: sent chunked)."""

    def __init__(self, pieces: list[bytes], length: int | None, fail: bool = False) -> None:
        self.pieces = list(pieces)
        self.length = length
        self.fail = fail

    async def read(self) -> bytes:
        await asyncio.sleep(0)
        if self.pieces:
            return self.pieces.pop(0)
        if self.fail:
            raise ClientDisconnectedError("gone")
        return b""


async def read_all(resp: Any) -> bytes:
    out = bytearray()
    while chunk := await resp.read():
        out += chunk
    return bytes(out)


def echo(status: int = 200) -> RawHandler:
    async def handler(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        writer.write(raw_response(status, req.body or req.target.encode()))
        return True

    return handler


async def test_connections_are_kept_alive_and_reused(raw_upstream: Start, transport: Any) -> None:
    up = await raw_upstream(echo())
    t = transport()
    for i in range(5):
        resp = await t.request(up.address, "GET", f"/r{i}", HOST, None)
        assert (resp.status, await read_all(resp)) == (200, f"/r{i}".encode())
        resp.release()
    assert up.connections == 1
    assert t.idle_connections(up.address) == 1


async def test_pool_keeps_at_most_pool_size_idle(raw_upstream: Start, transport: Any) -> None:
    gate, all_in = asyncio.Event(), asyncio.Event()

    async def slow(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        if len(up.requests) == 5:
            all_in.set()
        await gate.wait()
        writer.write(raw_response(200, b"ok"))
        return True

    up = await raw_upstream(slow)
    t = transport(pool_size=2)
    pending = [asyncio.create_task(t.request(up.address, "GET", "/", HOST, None)) for _ in range(5)]
    await asyncio.wait_for(all_in.wait(), 5)  # five at once: none waited for a connection
    gate.set()
    for resp in await asyncio.gather(*pending):
        assert await read_all(resp) == b"ok"
        resp.release()
    assert up.connections == 5  # a request never waits for a connection
    assert t.idle_connections(up.address) == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_stale_kept_alive_connection(
    method: str, raw_upstream: Start, transport: Any
) -> None:
    # The replica answers the first request on a connection and then hangs up on the next one
    # without answering: as if its keep-alive timeout fired just as the request went out.
    served: set[int] = set()

    async def one_per_connection(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        if n in served:  # not the first request on this connection
            return False
        served.add(n)
        writer.write(raw_response(200, b"conn %d" % n))
        return True

    up = await raw_upstream(one_per_connection)
    t = transport()
    resp = await t.request(up.address, method, "/x", HOST, None)
    assert await read_all(resp) == b"conn 1"
    resp.release()
    assert t.idle_connections(up.address) == 1
    if method == "GET":
        # Idempotent and bodiless: sent again on a fresh connection, no error surfaces.
        resp = await t.request(up.address, method, "/x", HOST, None)
        assert await read_all(resp) == b"conn 2"
        resp.release()
        assert up.connections == 2
    else:
        # A POST might have been acted on: never sent twice.
        with pytest.raises(UpstreamProtocolError):
            await t.request(up.address, method, "/x", HOST, None)
        assert len(up.requests) == 2


async def test_connection_closed_while_idle_is_not_reused(
    raw_upstream: Start, transport: Any
) -> None:
    async def answer_then_close(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        writer.write(raw_response(200, b"conn %d" % n))
        await writer.drain()
        return False  # keep-alive answer, then the replica closes (its idle timeout)

    up = await raw_upstream(answer_then_close)
    t = transport()
    for i in range(1, 4):
        resp = await t.request(up.address, "POST", "/x", HOST, Body([b"data"], 4))
        assert await read_all(resp) == b"conn %d" % i
        resp.release()
        # The FIN arrives and the pool drops the connection.
        await eventually(lambda: t.idle_connections(up.address) == 0)
    assert len(up.requests) == 3


async def test_refused_connection_is_a_connect_error(transport: Any) -> None:
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await transport().request(f"127.0.0.1:{free_port()}", "GET", "/", HOST, None)


async def test_connect_timeout(transport: Any) -> None:
    # A listening socket that never accepts, with its backlog full: SYNs go unanswered.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(lsock.getsockname())
            fillers.append(s)
        address = f"127.0.0.1:{lsock.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(UpstreamConnectError, match="timed out"):
            await transport(connect_timeout=0.3).request(address, "GET", "/", HOST, None)
        assert time.monotonic() - started < 3
    finally:
        for s in fillers:
            s.close()
        lsock.close()


async def test_read_timeouts(raw_upstream: Start, transport: Any) -> None:
    async def silent(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        if req.target == "/stall":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await reader.read()  # silent until the balancer gives up and hangs up
        return False

    up = await raw_upstream(silent)
    t = transport(read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        await t.request(up.address, "GET", "/silent", HOST, None)
    assert 0.25 < time.monotonic() - started < 2
    resp = await t.request(up.address, "GET", "/stall", HOST, None)
    assert resp.status == 200 and not resp.complete
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        await read_all(resp)
    assert time.monotonic() - started < 2
    resp.release()
    assert t.idle_connections(up.address) == 0


async def test_request_bodies_content_length_and_chunked(
    raw_upstream: Start, transport: Any
) -> None:
    async def describe(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        framing = f"{req.header('Content-Length')}/{req.header('Transfer-Encoding')}"
        writer.write(raw_response(200, framing.encode() + b" " + req.body))
        return True

    up = await raw_upstream(describe)
    t = transport()
    pieces = [b"alpha", b"beta" * 1000, b"gamma"]
    data = b"".join(pieces)
    length_headers = HOST + encode_headers([("Content-Length", str(len(data)))])
    resp = await t.request(up.address, "PUT", "/", length_headers, Body(pieces, len(data)))
    assert await read_all(resp) == f"{len(data)}/None ".encode() + data
    resp.release()
    resp = await t.request(up.address, "POST", "/", HOST, Body(pieces, None))
    assert await read_all(resp) == b"None/chunked " + data
    resp.release()
    assert up.connections == 1


async def test_client_leaving_mid_body_cuts_the_upstream_request(
    raw_upstream: Start, transport: Any
) -> None:
    cut = asyncio.Event()

    async def never_complete(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        writer.write(raw_response(200))
        return True

    up = await raw_upstream(never_complete)
    t = transport()
    headers = HOST + encode_headers([("Content-Length", "1000")])
    with pytest.raises(ClientDisconnectedError):
        await t.request(up.address, "POST", "/", headers, Body([b"x" * 10], 1000, fail=True))
    # The replica's read of the 1000 bytes fails: the connection was reset, not reused.
    await eventually(lambda: up.writers and all(w.is_closing() for w in up.writers))
    assert not up.requests  # it never got a whole request
    assert t.idle_connections(up.address) == 0
    cut.set()


async def test_answer_framings(raw_upstream: Start, transport: Any) -> None:
    answers = {
        "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "/head": b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
        "/204": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
        "/304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        "/early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    }

    async def handler(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        if req.target == "/eof":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            return False
        writer.write(answers[req.target])
        return True

    up = await raw_upstream(handler)
    t = transport()
    cases = [
        ("GET", "/chunked", 200, True, None, b"hello world"),
        ("HEAD", "/head", 200, False, 12345, b""),
        ("GET", "/204", 204, False, None, b""),
        ("GET", "/304", 304, False, 99, b""),
        ("GET", "/early-hints", 200, True, 2, b"ok"),
    ]
    for method, path, status, has_body, length, body in cases:
        resp = await t.request(up.address, method, path, HOST, None)
        assert (resp.status, resp.has_body, resp.length) == (status, has_body, length), path
        assert await read_all(resp) == body, path
        resp.release()
    assert up.connections == 1  # every one of them left the connection reusable
    resp = await t.request(up.address, "GET", "/eof", HOST, None)
    assert await read_all(resp) == b"until the end"
    resp.release()
    assert t.idle_connections(up.address) == 0


async def test_broken_and_malformed_answers(raw_upstream: Start, transport: Any) -> None:
    async def handler(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        if req.target == "/short":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        else:
            writer.write(b"HTTP/1.1 2OO OK\r\n\r\n")
        return False

    up = await raw_upstream(handler)
    t = transport()
    resp = await t.request(up.address, "GET", "/short", HOST, None)
    with pytest.raises(UpstreamProtocolError, match="broke off its answer"):
        await read_all(resp)
    resp.release()
    with pytest.raises(UpstreamProtocolError, match="malformed"):
        await t.request(up.address, "GET", "/garbage", HOST, None)
    assert t.idle_connections(up.address) == 0


async def test_slow_reader_pauses_the_replica(raw_upstream: Start, transport: Any) -> None:
    size = 64 * MiB
    written = 0

    async def big(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        nonlocal written
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"b" * MiB
        for _ in range(size // MiB):
            writer.write(block)
            await writer.drain()  # blocks while the balancer does not read
            written += len(block)
        return True

    up = await raw_upstream(big)
    t = transport()
    resp = await t.request(up.address, "GET", "/big", HOST, None)
    # Nobody reads the answer: the transport stops reading from the replica.
    await eventually(lambda: resp._conn.flow.read_paused)
    stalled_at = written
    assert stalled_at < size // 2, f"the replica wrote {stalled_at} bytes to a stalled reader"
    assert sum(len(c) for c in resp._chunks) <= 2 * MiB  # what the transport holds
    n = len(await read_all(resp))
    assert n == size
    resp.release()
    assert t.idle_connections(up.address) == 1


async def test_replica_answering_before_the_body_is_sent(transport: Any) -> None:
    async def refuse_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head only, not the body
        writer.write(raw_response(413, b"too big"))
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    class SlowBody(Body):
        async def read(self) -> bytes:
            await asyncio.sleep(0.05)  # not a wait: a slow uploader's pace
            return await super().read()

    server = await asyncio.start_server(refuse_early, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    t = transport()
    try:
        body = SlowBody([b"x" * 1000] * 20, None)
        resp = await t.request(address, "POST", "/upload", HOST, body)
        assert resp.status == 413
        assert await read_all(resp) == b"too big"
        resp.release()
        assert body.pieces, "the whole body was sent although the replica had answered"
        assert t.idle_connections(address) == 0  # its framing is unknown now: not reused
    finally:
        server.close()
