"""Upgraded connections through the balancer (``_tunnel.py``), end to end on real sockets:
WebSocket echo against real aiohttp WebSocket servers, sticky by key, the upgrade headers
both ways, a refused upgrade answered as a plain request, and the tunnel's idle timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from conftest import UpstreamFactory, eventually, url
from lbproxy import Server

KEY = "X-Request-Id"


def ws_echo(name: str, seen: list[dict[str, str]]) -> Any:
    """A WebSocket endpoint that answers every text message with ``<name>: <message>``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{name}: {msg.data}")
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    return handler


async def two_replicas(
    upstream: UpstreamFactory, balancer: Any, **proxy: Any
) -> tuple[Server, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    a = await upstream({"/ws": ws_echo("a1", seen)})
    b = await upstream({"/ws": ws_echo("a2", seen)})
    server = await balancer(
        {
            "replicas": {
                "backend": "static",
                "static": [{"hostname": "a1", "address": a}, {"hostname": "a2", "address": b}],
            },
            "proxy": proxy,
        }
    )
    return server, seen


async def test_websocket_echo_through_the_balancer_is_sticky_by_key(
    upstream: UpstreamFactory, balancer: Any, http: aiohttp.ClientSession
) -> None:
    server, seen = await two_replicas(upstream, balancer)
    names: dict[str, set[str]] = {}
    for key in ("100001", "100002", "100003", "100004", "100001", "100002"):
        async with http.ws_connect(url(server, "/ws"), headers={KEY: key}) as ws:
            for i in range(3):
                await ws.send_str(f"hello {i}")
                reply = await asyncio.wait_for(ws.receive_str(), 5)
                name, _, text = reply.partition(": ")
                assert text == f"hello {i}"
                names.setdefault(key, set()).add(name)
            # Binary frames larger than a socket buffer, both ways.
            blob = bytes(range(256)) * 4096
            await ws.send_bytes(blob)
            assert await asyncio.wait_for(ws.receive_bytes(), 5) == blob
    assert all(len(n) == 1 for n in names.values()), names  # same key, same replica
    assert len(set().union(*names.values())) == 2  # and the keys spread over both
    headers = {k.lower(): v for k, v in seen[0].items()}
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert "sec-websocket-key" in headers
    assert headers["x-forwarded-proto"] == "http"
    # Nothing is left open once the clients closed.
    await eventually(lambda: not any(r.in_flight for r in server.pool.replicas.values()))
    await eventually(lambda: not server._fronts[0].connections)


async def test_the_101_reaches_the_client_with_its_upgrade_headers(
    upstream: UpstreamFactory, balancer: Any
) -> None:
    server, _ = await two_replicas(upstream, balancer)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
    lines = head.split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101 ")
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:]) if k}
    assert fields["upgrade"].lower() == "websocket"
    assert fields["connection"].lower() == "upgrade"
    # RFC 6455 section 1.3's example key and its accept value.
    assert fields["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    writer.close()


async def test_an_upgrade_the_replica_refuses_is_a_plain_answer(
    upstream: UpstreamFactory, balancer: Any, http: aiohttp.ClientSession
) -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"upgrade": request.headers.get("Upgrade")})

    server = await balancer(
        {
            "replicas": {
                "backend": "static",
                "static": [{"hostname": "a1", "address": await upstream({"/p": plain})}],
            }
        }
    )
    async with http.get(
        url(server, "/p"), headers={"Connection": "Upgrade", "Upgrade": "h2c"}
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == {"upgrade": "h2c"}
        assert resp.headers.get("Connection", "").lower() == "close"


async def test_an_idle_tunnel_is_closed_after_tunnel_idle_timeout(
    upstream: UpstreamFactory, balancer: Any, http: aiohttp.ClientSession
) -> None:
    # Request timeouts far shorter than the tunnel's: they do not cut a tunnel.
    server, _ = await two_replicas(
        upstream,
        balancer,
        tunnel_idle_timeout=1.5,
        client_timeout=0.3,
        client_keepalive_timeout=0.3,
        read_timeout=0.3,
    )
    loop = asyncio.get_running_loop()
    async with http.ws_connect(url(server, "/ws"), autoping=False, heartbeat=None) as ws:
        # Active for longer than every request timeout: kept.
        for i in range(6):
            if i:
                await asyncio.sleep(0.2)  # not a wait: activity spread over time is the point
            await ws.send_str(f"ping {i}")
            assert (await asyncio.wait_for(ws.receive_str(), 5)).endswith(f"ping {i}")
        quiet_from = loop.time()
        msg = await asyncio.wait_for(ws.receive(), 10)  # then quiet: closed by the balancer
        closed_after = loop.time() - quiet_from
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    assert 1.4 <= closed_after < 5, closed_after
    await eventually(lambda: not any(r.in_flight for r in server.pool.replicas.values()))
