"""The balancer's own HTTP/1.1 server, end to end with raw client sockets: pipelining,
malformed and oversized requests, HTTP/1.0, idle and stale connections, backpressure,
graceful shutdown. Upstreams are raw servers (conftest's ``raw_upstream``) or aiohttp ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from conftest import RawHandler, RawRequest, RawUpstream, body_sink, eventually, raw_response
from lbproxy import Server

Start = Callable[[RawHandler], Awaitable[RawUpstream]]
MiB = 1 << 20


def static(address: str, **proxy: Any) -> dict[str, Any]:
    return {
        "replicas": {"backend": "static", "static": [{"hostname": "a1", "address": address}]},
        "proxy": proxy,
    }


async def echo(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
    writer.write(raw_response(200, f"{req.method} {req.target} ".encode() + req.body))
    return True


def reset(writer: asyncio.StreamWriter) -> None:
    """Leave with a TCP reset (a FIN alone is a half-close: the answer is still wanted)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def echo_balancer(raw_upstream: Start, balancer: Any) -> tuple[RawUpstream, Server, Client]:
    """A balancer in front of one raw upstream that echoes, and a client connected to it."""
    up = await raw_upstream(echo)
    server = await balancer(static(up.address))
    return up, server, await Client.open(server)


class Client:
    """A raw connection to the balancer that reads answers one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Server) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:]) if k}
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += await self.reader.readexactly(size + 2)
                body = body[:-2]
            await self.reader.readuntil(b"\r\n")
        else:
            body = await asyncio.wait_for(self.reader.read(), 10)
        return status, headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


async def test_pipelined_requests_are_answered_in_order(raw_upstream: Start, balancer: Any) -> None:
    up, _server, client = await echo_balancer(raw_upstream, balancer)
    client.send(
        b"GET /one HTTP/1.1\r\nHost: lb\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /three HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /four HTTP/1.1\r\nHost: lb\r\n\r\n"
    )
    bodies = [(await client.answer())[2] for _ in range(4)]
    assert bodies == [b"GET /one ", b"POST /two hello", b"PUT /three abcde", b"GET /four "]
    # The chunked body went upstream chunked; the connection is still open for more.
    assert up.requests[2].header("Transfer-Encoding") == "chunked"
    client.send(b"GET /five HTTP/1.1\r\nHost: lb\r\n\r\n")
    assert (await client.answer())[2] == b"GET /five "
    client.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "fragment"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "Malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "Malformed HTTP request"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "Malformed HTTP request",
        ),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "target is longer"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, "too large"),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n",
            431,
            "too large",
        ),
    ],
    ids=["garbage", "bad-length", "length-and-chunked", "long-target", "long-header", "many"],
)
async def test_bad_requests_get_a_clear_answer_and_change_nothing(
    request_bytes: bytes, status: int, fragment: str, raw_upstream: Start, balancer: Any
) -> None:
    up, server, client = await echo_balancer(raw_upstream, balancer)
    client.send(request_bytes)
    code, headers, body = await client.answer()
    assert code == status
    assert headers["connection"] == "close"
    answer = json.loads(body)
    assert answer["status"] == "failure" and fragment in answer["message"], answer
    assert await client.closed()
    assert up.requests == []  # nothing reached the replica
    client = await Client.open(server)
    client.send(b"GET /after HTTP/1.1\r\nHost: lb\r\n\r\n")
    assert (await client.answer())[2] == b"GET /after "
    client.close()


async def test_garbage_after_a_good_request_is_answered_after_it(
    raw_upstream: Start, balancer: Any
) -> None:
    _up, _server, client = await echo_balancer(raw_upstream, balancer)
    client.send(b"GET /good HTTP/1.1\r\nHost: lb\r\n\r\n\x00\x01garbage\r\n\r\n")
    assert (await client.answer())[:1] == (200,)
    assert (await client.answer())[0] == 400
    assert await client.closed()


async def test_http10_clients(raw_upstream: Start, balancer: Any) -> None:
    up, server, client = await echo_balancer(raw_upstream, balancer)
    client.send(b"GET /plain HTTP/1.0\r\nHost: lb\r\n\r\n")
    status, headers, body = await client.answer()
    assert (status, headers["connection"], body) == (200, "close", b"GET /plain ")
    assert await client.closed()
    client = await Client.open(server)
    for i in range(2):
        client.send(b"GET /ka%d HTTP/1.0\r\nHost: lb\r\nConnection: keep-alive\r\n\r\n" % i)
        status, headers, body = await client.answer()
        assert (headers["connection"], body) == ("keep-alive", b"GET /ka%d " % i)
    # Without a Host at all: the replica still gets the one HTTP/1.1 requires.
    client.send(b"GET /nohost HTTP/1.0\r\n\r\n")
    assert (await client.answer())[2] == b"GET /nohost "
    assert up.requests[-1].header("Host") == up.address
    client.close()


async def test_connect_is_refused(raw_upstream: Start, balancer: Any) -> None:
    up, _server, client = await echo_balancer(raw_upstream, balancer)
    client.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    status, headers, body = await client.answer()
    assert status == 405 and "GET" in headers["allow"]
    assert "CONNECT" in json.loads(body)["message"]
    assert up.requests == []


async def test_stale_pooled_connections_are_retried_not_surfaced(
    raw_upstream: Start, balancer: Any
) -> None:
    # Every connection answers one request and then hangs up on the next without answering,
    # so each request after the first finds its pooled connection dead.
    served: set[int] = set()

    async def once(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        if n in served:
            return False
        served.add(n)
        writer.write(raw_response(200, b"conn %d" % n))
        return True

    up = await raw_upstream(once)
    server = await balancer(static(up.address))
    client = await Client.open(server)
    for i in range(6):
        method = "GET" if i % 2 else "DELETE"
        client.send(f"{method} /x HTTP/1.1\r\nHost: lb\r\n\r\n".encode())
        status, _, body = await client.answer()
        assert status == 200, body
    assert len(served) == 6
    client.close()


async def test_client_leaving_while_the_replica_thinks_drops_its_connection(
    raw_upstream: Start, balancer: Any
) -> None:
    outcome: asyncio.Queue[str] = asyncio.Queue()
    arrived = asyncio.Event()

    async def slow(req: RawRequest, reader: Any, writer: Any, n: int) -> bool:
        if req.target == "/warm":
            writer.write(raw_response(200))
            return True
        arrived.set()
        # The balancer must hang up on this connection once the client is gone.
        try:
            data = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            await outcome.put("reset")
        else:
            await outcome.put(f"eof after {len(data)} bytes")
        return False

    up = await raw_upstream(slow)
    server = await balancer(static(up.address))
    client = await Client.open(server)
    client.send(b"GET /warm HTTP/1.1\r\nHost: lb\r\n\r\n")
    await client.answer()
    client.send(b"GET /slow HTTP/1.1\r\nHost: lb\r\n\r\n")  # the hot path: a pooled connection
    await asyncio.wait_for(arrived.wait(), 5)
    reset(client.writer)
    assert await asyncio.wait_for(outcome.get(), 5) in ("reset", "eof after 0 bytes")


async def test_idle_client_connections_are_closed(raw_upstream: Start, balancer: Any) -> None:
    up = await raw_upstream(echo)
    server = await balancer(static(up.address, client_keepalive_timeout=0.3))
    client = await Client.open(server)
    client.send(b"GET /x HTTP/1.1\r\nHost: lb\r\n\r\n")
    await client.answer()
    started = time.monotonic()
    assert await client.closed()
    assert 0.25 < time.monotonic() - started < 3
    # A client that never finishes its request head is dropped the same way.
    client = await Client.open(server)
    client.send(b"GET /slowloris HTTP/1.1\r\nHost: lb\r\n")
    assert await client.closed()


async def test_slow_client_holds_back_the_replica(upstream: Any, balancer: Any) -> None:
    size = 256 * MiB
    written = 0

    async def big(request: web.Request) -> web.StreamResponse:
        nonlocal written
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        block = b"s" * MiB
        for _ in range(size // MiB):
            await resp.write(block)  # waits while the balancer does not read on
            written += len(block)
        return resp

    address = await upstream({"/big": big})
    server = await balancer(static(address))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=MiB)
    writer.write(b"GET /big HTTP/1.1\r\nHost: lb\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    # The client reads nothing: the balancer stops writing to it, then reading from the
    # replica, which then waits in its writes.
    front = server._fronts[0]
    pools = server.transport._pools.values()  # type: ignore[union-attr]
    await eventually(
        lambda: (
            any(c.write_paused for c in front.connections)
            and any(c.flow.read_paused for p in pools for c in p.connections)
        )
    )
    stalled_at = written
    # Socket buffers on both sides (a few MiB each on loopback) plus the balancer's own
    # bounded buffers, not the whole answer.
    assert stalled_at < 64 * MiB, f"the replica wrote {stalled_at >> 20} MiB to a stalled client"
    got = 0
    while chunk := await reader.read(MiB):
        got += len(chunk)
        if got >= size:
            break
    assert got == size
    writer.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_client_stalled_mid_upload_gets_408_and_frees_the_replica(
    framing: str, upstream: Any, balancer: Any
) -> None:
    outcomes: asyncio.Queue[str] = asyncio.Queue()
    address = await upstream({"/sink": body_sink(outcomes)})
    server = await balancer(static(address, client_timeout=0.4))
    client = await Client.open(server)
    if framing == "content-length":
        client.send(b"POST /sink HTTP/1.1\r\nHost: lb\r\nContent-Length: 10000\r\n\r\n")
        client.send(b"u" * 100)
    else:
        client.send(b"POST /sink HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(b"64\r\n" + b"u" * 100 + b"\r\n")
    started = time.monotonic()
    status, headers, body = await client.answer()
    waited = time.monotonic() - started
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body) == {
        "message": "<Error> The request was not received in time (nothing for 0.4s)",
        "status": "failure",
    }
    assert 0.35 < waited < 5, waited
    assert await client.closed()
    # The replica must not take the cut body for a complete one.
    outcome = await asyncio.wait_for(outcomes.get(), 10)
    assert outcome.startswith("error"), outcome


async def test_slow_uploads_that_keep_coming_are_not_cut(upstream: Any, balancer: Any) -> None:
    async def count(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request.read())})

    address = await upstream({"/count": count})
    server = await balancer(static(address, client_timeout=0.4))
    client = await Client.open(server)
    client.send(b"POST /count HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(10):  # 2 s in all, never 0.4 s without a byte
        await asyncio.sleep(0.2)  # not a wait: the upload's pace is what is tested
        client.send(b"u" * 100)
    status, _, body = await client.answer()
    assert status == 200
    assert json.loads(body) == {"bytes": 1000}


async def test_client_that_stops_reading_is_cut(upstream: Any, balancer: Any) -> None:
    size = 256 * MiB
    outcomes: asyncio.Queue[str] = asyncio.Queue()

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        block = b"s" * MiB
        try:
            for _ in range(size // MiB):
                await resp.write(block)
        except Exception as e:
            await outcomes.put(f"error {type(e).__name__}")
            raise
        await outcomes.put("complete")
        return resp

    address = await upstream({"/big": big})
    server = await balancer(static(address, client_timeout=0.4))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=MiB)
    writer.write(b"GET /big HTTP/1.1\r\nHost: lb\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    # The client reads nothing: the balancer gives up on it and on the replica's answer.
    assert (await asyncio.wait_for(outcomes.get(), 10)).startswith("error")
    got = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(MiB), 10):
            got += len(chunk)
    assert got < size
    writer.close()


async def test_graceful_shutdown(upstream: Any, balancer: Any) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.wait_for(release.wait(), 10)
        return web.Response(text="finished")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    address = await upstream({"/slow": slow, "/fast": fast})
    server = await balancer(static(address))
    idle = await Client.open(server)
    idle.send(b"GET /fast HTTP/1.1\r\nHost: lb\r\n\r\n")
    await idle.answer()
    busy = await Client.open(server)
    busy.send(b"GET /slow HTTP/1.1\r\nHost: lb\r\n\r\n")
    await asyncio.wait_for(arrived.wait(), 5)
    stopping = asyncio.create_task(server.shutdown())
    assert await idle.closed()  # idle keep-alive connections are closed at once
    release.set()
    status, headers, body = await busy.answer()  # the request under way finishes
    assert (status, body, headers["connection"]) == (200, b"finished", "close")
    await asyncio.wait_for(stopping, 10)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_shutdown_cuts_what_outlasts_shutdown_timeout(upstream: Any, balancer: Any) -> None:
    release = asyncio.Event()  # set at the end, so the replica's teardown need not wait
    arrived = asyncio.Event()

    async def endless(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(text="never")

    address = await upstream({"/endless": endless})
    server = await balancer({**static(address), "shutdown_timeout": 0.5})
    client = await Client.open(server)
    client.send(b"GET /endless HTTP/1.1\r\nHost: lb\r\n\r\n")
    await asyncio.wait_for(arrived.wait(), 5)
    started = time.monotonic()
    await asyncio.wait_for(server.shutdown(), 10)
    assert time.monotonic() - started < 3
    with contextlib.suppress(ConnectionError):
        assert await client.reader.read() == b""  # cut, with no answer passing as complete
    release.set()


async def test_half_closed_client_still_gets_its_answers(
    raw_upstream: Start, balancer: Any
) -> None:
    _up, _server, client = await echo_balancer(raw_upstream, balancer)
    client.send(b"GET /a HTTP/1.1\r\nHost: lb\r\n\r\nGET /b HTTP/1.1\r\nHost: lb\r\n\r\n")
    client.writer.write_eof()  # as `printf ... | nc` does once its input ends
    assert [(await client.answer())[2] for _ in range(2)] == [b"GET /a ", b"GET /b "]
    assert await client.closed()
