"""Request smuggling, trailers, transfer codings and malformed bodies, as an attacker sends
them: raw client bytes to a real balancer, a raw-logging replica (tests/raw_http.py) behind
it that records exactly what it receives and parses it with h11, a strict parser of its own.

The rule under test (RFC 9112; HAProxy and Envoy are the bar): the framing forwarded is
always the framing the balancer parsed, so the replica receives exactly the requests the
balancer answered, and every exchange that cannot be framed ends at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conftest import eventually
from lbproxy import Server
from raw_http import Connection, RawReplica, Received, StrictClient, default_answer

StartReplica = Callable[..., Awaitable[RawReplica]]


def static(replica: RawReplica, **proxy: Any) -> dict[str, Any]:
    return {
        "replicas": {
            "backend": "static",
            "static": [{"hostname": "r1", "address": replica.address}],
        },
        "proxy": proxy,
    }


async def setup(
    raw_replica: StartReplica, balancer: Any, answer: Any = default_answer, **proxy: Any
) -> tuple[RawReplica, Server]:
    replica = await raw_replica(answer)
    server = await balancer(static(replica, **proxy))
    return replica, server


def message(body: bytes) -> str:
    got = json.loads(body)
    assert got["status"] == "failure"
    return str(got["message"])


async def settle(server: Server) -> None:
    """Give what the balancer has to do in the background a moment (a reset to send)."""
    for _ in range(50):
        if server.pool.replicas[1].in_flight == 0:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)


# -- 1. smuggling and answer poisoning --------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: lb\r\n\r\n"


@pytest.mark.parametrize("named", ["content-length", "Content-Length, close", "host"])
async def test_connection_cannot_remove_framing_or_host(
    named: str, raw_replica: StartReplica, balancer: Any
) -> None:
    """The issue's probe: Connection names Content-Length, the body is a whole request. The
    replica must get the body as a body, and 20 victims after it their own answers."""
    replica, server = await setup(raw_replica, balancer)
    attacker = await StrictClient.open(server.port)
    attacker.send(
        b"POST /x HTTP/1.1\r\nHost: lb\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (named.encode(), len(SMUGGLED), SMUGGLED),
        b"POST",
    )
    reply = await attacker.answer()
    assert reply.status == 200 and reply.seq == 0
    victims = []
    for i in range(20):
        victim = await StrictClient.open(server.port)
        victim.send(b"GET /victim/%d HTTP/1.1\r\nHost: lb\r\n\r\n" % i, b"GET")
        victims.append(victim)
    replies = await asyncio.gather(*(v.answer() for v in victims))
    for i, r in enumerate(replies):
        assert r.body.split(b" ")[3] == b"/victim/%d" % i, r.body  # its own answer
    # Exactly 21 requests: 1 for the attacker's (its body intact), 1 per victim.
    assert len(replica.requests) == 21, [(r.method, r.target) for r in replica.requests]
    post = replica.requests[0]
    assert (post.method, post.target, post.body) == (b"POST", b"/x", SMUGGLED)
    assert post.header(b"content-length") == [b"%d" % len(SMUGGLED)]
    assert post.header(b"host") == [b"lb"]
    assert sorted(r.target for r in replica.requests[1:]) == sorted(
        b"/victim/%d" % i for i in range(20)
    )
    assert replica.errors == []
    for v in (attacker, *victims):
        v.close()


async def test_answer_framing_survives_connection_naming_content_length(
    raw_replica: StartReplica, balancer: Any
) -> None:
    def answer(req: Received, conn: Connection) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nConnection: content-length, x-hop\r\nX-Hop: 1\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )

    _, server = await setup(raw_replica, balancer, answer)
    client = await StrictClient.open(server.port)
    for i in range(3):  # kept alive: each answer must end exactly where it says
        client.send(b"GET /%d HTTP/1.1\r\nHost: lb\r\n\r\n" % i, b"GET")
        reply = await client.answer()
        assert (reply.status, reply.body) == (200, b"hello")
        assert reply.header(b"content-length") == [b"5"]
        assert reply.header(b"x-hop") == []
    client.close()


@pytest.mark.parametrize(
    ("head", "status", "fragment"),
    [
        (b"Host: lb\r\nHost: evil\r\n", 400, "exactly one Host"),
        (b"", 400, "must have a Host"),
        (b"Host: lb\r\nContent-Length: 3\r\nContent-Length: 3\r\n", 400, "Content-Length"),
        (b"Host: lb\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n", 400, "Malformed"),
        (b"Host: lb\r\nContent-Length : 3\r\n", 400, "Malformed"),
        (b"Host: lb\r\nX-Folded: a\r\n b\r\n", 400, "Malformed"),
        (b"Host: lb\r\nBad Name: x\r\n", 400, "Malformed"),
        (b"Host: lb\nX-Bare-LF: x\r\n", 400, "Malformed"),
    ],
    ids=[
        "two-hosts",
        "no-host",
        "two-lengths",
        "cl-and-te",
        "space-colon",
        "obs-fold",
        "bad-name",
        "bare-lf",
    ],
)
async def test_ambiguous_heads_are_refused_before_any_replica(
    head: bytes, status: int, fragment: str, raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(b"POST /x HTTP/1.1\r\n" + head + b"\r\nabc", b"POST")
    reply = await client.answer()
    assert reply.status == status
    assert fragment in message(reply.body)
    assert await client.closed()
    assert replica.requests == []


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"GET / HTTP/2.0", 505), (b"GET / HTTP/0.9", 400)],
)
async def test_other_http_versions_are_refused(
    line: bytes, status: int, raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(line + b"\r\nHost: lb\r\n\r\n", b"GET")
    assert (await client.answer()).status == status
    assert replica.requests == []


async def test_absolute_form_goes_on_in_origin_form_with_its_host(
    raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(
        b"GET http://shop.example:8080/a?b=1 HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n", b"GET"
    )
    assert (await client.answer()).status == 200
    # HTTP/1.0 without a Host: the URL's (HTTP/1.1 must send one: RFC 9112 section 3.2).
    client.send(b"GET http://other.example/p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"GET")
    assert (await client.answer()).status == 200
    client.send(b"GET http://evil.example/p HTTP/1.1\r\nHost: shop.example\r\n\r\n", b"GET")
    reply = await client.answer()
    assert reply.status == 400 and "differs" in message(reply.body)
    assert [(r.target, r.header(b"host")) for r in replica.requests] == [
        (b"/a?b=1", [b"shop.example:8080"]),
        (b"/p", [b"other.example"]),
    ]


# -- 2. trailers ----------------------------------------------------------------------------


async def test_request_trailers_never_become_head_fields(
    raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(
        b"POST /t HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nHost: evil\r\nX-Request-Id: 1\r\nX-Trailer: t\r\n\r\n",
        b"POST",
    )
    assert (await client.answer()).status == 200
    (got,) = replica.requests
    assert got.body == b"abc"
    assert got.header(b"host") == [b"lb"]
    assert got.header(b"x-request-id") != [b"1"]
    assert got.header(b"x-trailer") == []
    raw = replica.raw()
    assert b"evil" not in raw and b"X-Trailer" not in raw
    assert raw.endswith(b"3\r\nabc\r\n0\r\n\r\n")  # ended by the balancer, without trailers
    client.close()


async def test_answer_trailers_never_become_head_fields(
    raw_replica: StartReplica, balancer: Any
) -> None:
    def answer(req: Received, conn: Connection) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nSet-Cookie: stolen=1\r\nX-Trailer: t\r\n\r\n"
        )

    _, server = await setup(raw_replica, balancer, answer)
    client = await StrictClient.open(server.port)
    for _ in range(2):
        client.send(b"GET /t HTTP/1.1\r\nHost: lb\r\n\r\n", b"GET")
        reply = await client.answer()
        assert (reply.status, reply.body) == (200, b"hello")
        assert reply.header(b"set-cookie") == [] and reply.header(b"x-trailer") == []
    client.close()


# -- 3. transfer codings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"POST /c HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: identity\r\n\r\nabc",
        b"POST /c HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST /c HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
        b"POST /c HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /c HTTP/1.0\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ],
    ids=["identity", "gzip-chunked", "gzip", "chunked-gzip", "xchunked", "http10-chunked"],
)
async def test_transfer_codings_not_relayed_exactly_are_refused(
    head: bytes, raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(head, b"POST")
    reply = await client.answer()
    assert reply.status == 400, reply
    assert await client.closed()
    await asyncio.sleep(0.1)
    assert replica.requests == []
    assert replica.raw() == b""  # not even a head


@pytest.mark.parametrize(
    "coding",
    [b"gzip, chunked", b"chunked, gzip", b"identity"],
    ids=["gzip-chunked", "chunked-gzip", "identity"],
)
async def test_answers_in_codings_not_relayed_exactly_are_502(
    coding: bytes, raw_replica: StartReplica, balancer: Any
) -> None:
    def answer(req: Received, conn: Connection) -> bytes:
        if req.target == b"/ok":
            return default_answer(req, conn)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % coding

    replica, server = await setup(raw_replica, balancer, answer)
    client = await StrictClient.open(server.port)
    client.send(b"GET /coded HTTP/1.1\r\nHost: lb\r\n\r\n", b"GET")
    reply = await client.answer()
    assert reply.status == 502
    assert "r1" in message(reply.body)
    await settle(server)
    assert replica.connections[-1].closed  # that connection is not reused
    client.send(b"GET /ok HTTP/1.1\r\nHost: lb\r\n\r\n", b"GET")
    assert (await client.answer()).status == 200


# -- 4. malformed bodies after a valid head ----------------------------------------------------

CHUNKED = b"POST /m HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n"
MALFORMED = {
    "bad-chunk-size": CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "bad-chunk-end": CHUNKED + b"3\r\nabcXX0\r\n\r\n",
    "cl-in-trailer": CHUNKED + b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",
    "chunk-size-overflow": CHUNKED + b"fffffffffffffffffff\r\n",
    "chunk-then-garbage": CHUNKED + b"3\r\nabc\r\n\x00\x01\r\n",
    "upgrade-with-body": b"POST /m HTTP/1.1\r\nHost: lb\r\nConnection: upgrade\r\n"
    b"Upgrade: h2c\r\nContent-Length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_body_ends_the_exchange_at_once(
    data: bytes, raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(data, b"POST")
    reply = await client.answer(timeout=3)  # today's client_timeout is 60 s
    assert reply.status == 400, reply
    assert await client.closed(timeout=3)
    client.close()
    await settle(server)
    assert replica.requests == []  # nothing complete reached the replica
    assert all(c.closed for c in replica.connections if c.received)  # reset, never reused
    assert server.pool.replicas[1].in_flight == 0
    await eventually(lambda: not server._fronts[0].connections, timeout=3)  # type: ignore[union-attr]
    # The balancer goes on serving.
    client = await StrictClient.open(server.port)
    client.send(b"GET /after HTTP/1.1\r\nHost: lb\r\n\r\n", b"GET")
    assert (await client.answer()).status == 200


async def test_malformed_body_while_streaming_resets_the_replica_connection(
    raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(CHUNKED + b"3\r\nabc\r\n", b"POST")
    for _ in range(100):  # the head and the first chunk reach the replica
        if replica.raw().endswith(b"abc\r\n"):
            break
        await asyncio.sleep(0.02)
    client.send(b"zz\r\n")
    reply = await client.answer(timeout=3)
    assert reply.status == 400
    assert await client.closed(timeout=3)
    await settle(server)
    upstream = next(c for c in replica.connections if c.received)
    assert upstream.closed and replica.requests == []


async def test_malformed_pipelined_body_is_answered_after_the_requests_before_it(
    raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    client = await StrictClient.open(server.port)
    client.send(
        b"GET /first HTTP/1.1\r\nHost: lb\r\n\r\n" + MALFORMED["bad-chunk-size"], b"GET", b"POST"
    )
    assert (await client.answer()).seq == 0
    assert (await client.answer()).status == 400
    assert await client.closed()
    assert [r.target for r in replica.requests] == [b"/first"]


async def test_client_leaving_after_a_malformed_body_leaves_nothing_open(
    raw_replica: StartReplica, balancer: Any
) -> None:
    replica, server = await setup(raw_replica, balancer)
    for _ in range(20):
        client = await StrictClient.open(server.port)
        client.send(MALFORMED["cl-in-trailer"], b"POST")
        client.writer.write_eof()
        client.close()
    for _ in range(100):
        if not server._fronts[0].connections:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    assert not server._fronts[0].connections  # type: ignore[union-attr]
    assert replica.requests == []
