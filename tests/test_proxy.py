"""The data path end to end: real clients, a real balancer, real upstream servers on loopback.

Upstreams are aiohttp servers with handlers written here, put behind the static backend so the
test decides exactly what every replica does. Nothing of lbproxy's own is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import signal
import struct
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import body_sink, eventually, free_port, upstream_app, url
from lbproxy import HashRing, build_ring, make_scheme
from lbproxy._pool import State
from lbproxy._routing import Ring

MiB = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- helpers ---------------------------------------------------------------------------------


def static(*replicas: tuple[str, str]) -> dict[str, Any]:
    """Config overrides for a static backend over (hostname, address) pairs (slot = position)."""
    return {
        "replicas": {
            "backend": "static",
            "static": [{"hostname": h, "address": a} for h, a in replicas],
        }
    }


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def whoami(name: str, seen: list[dict[str, Any]] | None = None) -> Handler:
    """A handler that answers with its upstream's name and what it received."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        info = {
            "name": name,
            "method": request.method,
            "path": request.path_qs,
            "raw_path": request.raw_path,
            "headers": list(request.headers.items()),
            "body": body.decode("latin-1"),
        }
        if seen is not None:
            seen.append(info)
        return web.json_response(info)

    return handler


def header_values(headers: list[Any], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def assert_failure(body: dict[str, Any]) -> str:
    assert set(body) == {"message", "status"}
    assert body["status"] == "failure"
    assert body["message"].startswith("<Error> ")
    return body["message"]


class Upstream:
    """An upstream server this module starts and can stop mid-test."""

    def __init__(self, runner: web.AppRunner, address: str) -> None:
        self.runner = runner
        self.address = address
        self.stopped = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


@pytest.fixture
async def stoppable() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    """Like conftest's ``upstream``, but returns a handle with ``stop()``."""
    started: list[Upstream] = []

    async def start(routes: dict[str, Handler], **runner_kwargs: Any) -> Upstream:
        runner = web.AppRunner(upstream_app(routes), access_log=None, **runner_kwargs)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        up = Upstream(runner, f"127.0.0.1:{port}")
        started.append(up)
        return up

    yield start
    for up in started:
        await up.stop()


async def raw_request(
    port: int,
    head: str,
    body: bytes = b"",
    local_addr: tuple[str, int] | None = None,
    timeout: float = 10.0,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send exactly these bytes (the head must say ``Connection: close``); read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local_addr)
    try:
        writer.write(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    if "chunked" in ",".join(header_values(headers, "Transfer-Encoding")).lower():
        rest = dechunk(rest)
    return status, headers, rest


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


def slot_names(names: list[str]) -> dict[int, str]:
    """Static replicas take ring slots 1..N in list order."""
    return {i: name for i, name in enumerate(names, start=1)}


async def start_named(
    upstream: Callable[..., Awaitable[str]], names: list[str]
) -> list[tuple[str, str]]:
    """One upstream per name, each answering every path with ``whoami``."""
    out = []
    for name in names:
        address = await upstream({"/{tail:.*}": whoami(name)}, name=name)
        out.append((name, address))
    return out


# -- 1. streaming, in a separate balancer process -------------------------------------------


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


class Stream:
    """A deterministic byte stream generated chunk by chunk, never held whole."""

    def __init__(self, total: int, chunk: int = MiB) -> None:
        assert total % chunk == 0
        self.total = total
        self.chunk = chunk
        self._block = os.urandom(chunk)

    def chunks(self) -> Any:
        for i in range(self.total // self.chunk):
            yield struct.pack(">Q", i) + self._block[8:]

    async def agen(self, digest: Any = None) -> AsyncIterator[bytes]:
        for c in self.chunks():
            if digest is not None:
                digest.update(c)
            yield c


async def test_streams_large_bodies_both_ways_without_buffering(
    upstream: Callable[..., Awaitable[str]], balancer_process: Any, http: aiohttp.ClientSession
) -> None:
    size = 512 * MiB
    stream = Stream(size)

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
            digest.update(chunk)
        return web.json_response(
            {
                "bytes": n,
                "sha256": digest.hexdigest(),
                "content_length": request.headers.get("Content-Length"),
                "transfer_encoding": request.headers.get("Transfer-Encoding"),
            }
        )

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if request.query.get("length"):
            resp.content_length = size
        await resp.prepare(request)
        for c in stream.chunks():
            await resp.write(c)
        await resp.write_eof()
        return resp

    address = await upstream({"/upload": upload, "/download": download}, name="big")
    # The fixture blocks while it waits for the port; the balancer only opens it once this
    # loop has answered its heartbeat, so start it from a thread.
    # The replica shares this loop with the client hashing 2 GiB: on a loaded machine its
    # heartbeats can be late, which is not what this test is about.
    tolerant = {"health": {"timeout": 10, "unhealthy_threshold": 10}}
    bp = await asyncio.to_thread(
        balancer_process, merge(static(("big", address)), tolerant, {"log_level": "warning"})
    )
    pid = bp.proc.pid

    # Warm up (connection pools, lazily imported code) before the baseline is taken.
    async with http.post(f"{bp.url}/upload", data=b"x" * 100_000) as r:
        assert r.status == 200
        assert (await r.json())["bytes"] == 100_000
    async with http.get(f"{bp.url}/download?length=1") as r:
        assert r.status == 200
        await r.read()
    before = vm_hwm_kib(pid)

    expected = hashlib.sha256()
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}

    # Content-Length upload: the length is known up front, the body still streams.
    t = time.monotonic()
    async with asyncio.timeout(60):
        async with http.post(
            f"{bp.url}/upload",
            data=stream.agen(expected),
            headers={"Content-Length": str(size)},
        ) as r:
            assert r.status == 200
            results["length"] = await r.json()
    timings["upload content-length"] = time.monotonic() - t
    expected_hex = expected.hexdigest()

    # Chunked upload: no length at all.
    t = time.monotonic()
    async with asyncio.timeout(60):
        async with http.post(f"{bp.url}/upload", data=stream.agen()) as r:
            assert r.status == 200
            results["chunked"] = await r.json()
    timings["upload chunked"] = time.monotonic() - t

    for kind, res in results.items():
        assert res["bytes"] == size, kind
        assert res["sha256"] == expected_hex, kind
    assert results["length"]["content_length"] == str(size)
    assert results["length"]["transfer_encoding"] is None
    assert results["chunked"]["content_length"] is None
    assert results["chunked"]["transfer_encoding"] == "chunked"

    # Downloads: chunked (no length from the upstream) and with a Content-Length.
    for query in ("", "?length=1"):
        t = time.monotonic()
        got = hashlib.sha256()
        n = 0
        async with asyncio.timeout(60):
            async with http.get(f"{bp.url}/download{query}") as r:
                assert r.status == 200
                if query:
                    assert r.headers["Content-Length"] == str(size)
                else:
                    assert "Content-Length" not in r.headers
                    assert r.headers["Transfer-Encoding"] == "chunked"
                async for chunk in r.content.iter_any():
                    n += len(chunk)
                    got.update(chunk)
        timings[f"download{query or ' chunked'}"] = time.monotonic() - t
        assert n == size
        assert got.hexdigest() == expected_hex

    after = vm_hwm_kib(pid)
    growth_mib = (after - before) / 1024
    print(
        f"\nbalancer VmHWM {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB "
        f"(growth {growth_mib:.1f} MiB) over 4 x {size // MiB} MiB; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    )
    assert growth_mib < 64, f"the balancer's peak RSS grew by {growth_mib:.1f} MiB"
    assert bp.proc.poll() is None


# -- 2. headers ------------------------------------------------------------------------------


HOP_BY_HOP = ["connection", "keep-alive", "te", "upgrade", "proxy-authorization", "trailer"]


async def test_hop_by_hop_request_headers_are_not_forwarded_end_to_end_ones_are(
    upstream: Callable[..., Awaitable[str]], balancer: Any
) -> None:
    seen: list[dict[str, Any]] = []
    address = await upstream({"/{tail:.*}": whoami("a1", seen)})
    server = await balancer(static(("a1", address)))
    status, _, body = await raw_request(
        server.port,
        "GET /echo/a%20b/%2Fc?x=1&y=%41 HTTP/1.1\n"
        "Host: shop.example:8443\n"
        "Connection: close, X-Custom-Hop\n"
        "X-Custom-Hop: secret\n"
        "Keep-Alive: timeout=5\n"
        "TE: trailers\n"
        "Upgrade: h2c\n"
        "Proxy-Authorization: Basic cHJveHk6cHc=\n"
        "Trailer: X-Checksum\n"
        "X-Forwarded-For: 203.0.113.7, 198.51.100.2\n"
        "X-Forwarded-Proto: https\n"
        "X-Forwarded-Host: spoofed.example\n"
        "X-End-To-End: kept\n"
        "X-Multi: one\n"
        "X-Multi: two\n"
        "Authorization: Bearer abc\n"
        "Cookie: a=1; b=2\n"
        "X-Request-Id: 424242\n",
    )
    assert status == 200, body
    got = json.loads(body)
    headers = got["headers"]
    names = {k.lower() for k, _ in headers}
    for hop in [*HOP_BY_HOP, "x-custom-hop"]:
        # aiohttp's own client may add a Connection of its own; never the client's.
        if hop == "connection":
            assert all("x-custom-hop" not in v.lower() for v in header_values(headers, hop))
            assert all("close" not in v.lower() for v in header_values(headers, hop))
        else:
            assert hop not in names, f"{hop} was forwarded upstream: {headers}"
    assert got["raw_path"] == "/echo/a%20b/%2Fc?x=1&y=%41"  # not re-encoded or decoded
    assert header_values(headers, "X-Multi") == ["one", "two"]
    assert header_values(headers, "Host") == ["shop.example:8443"]
    assert header_values(headers, "X-End-To-End") == ["kept"]
    assert header_values(headers, "Authorization") == ["Bearer abc"]
    assert header_values(headers, "Cookie") == ["a=1; b=2"]
    assert header_values(headers, "X-Request-Id") == ["424242"]
    assert header_values(headers, "X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    assert header_values(headers, "X-Forwarded-Proto") == ["http"]
    assert header_values(headers, "X-Forwarded-Host") == ["shop.example:8443"]


async def test_forwarded_headers_without_a_prior_chain(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    address = await upstream({"/{tail:.*}": whoami("a1")})
    server = await balancer(static(("a1", address)))
    async with http.get(url(server, "/x"), headers={"User-Agent": "probe/1.0"}) as r:
        headers = (await r.json())["headers"]
    assert header_values(headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(headers, "X-Forwarded-Proto") == ["http"]
    assert header_values(headers, "X-Forwarded-Host") == [f"127.0.0.1:{server.port}"]
    assert header_values(headers, "Host") == [f"127.0.0.1:{server.port}"]
    # The client's own User-Agent reaches the upstream unchanged.
    assert header_values(headers, "User-Agent") == ["probe/1.0"]


async def test_aiohttp_auto_headers_are_not_invented(
    upstream: Callable[..., Awaitable[str]], balancer: Any
) -> None:
    address = await upstream({"/{tail:.*}": whoami("a1")})
    server = await balancer(static(("a1", address)))
    for head, body in [
        ("GET /bare HTTP/1.1\nHost: lb\nConnection: close\n", b""),
        ("POST /bare HTTP/1.1\nHost: lb\nConnection: close\nContent-Length: 5\n", b"hello"),
    ]:
        status, _, raw = await raw_request(server.port, head, body)
        assert status == 200
        got = json.loads(raw)
        names = {k.lower() for k, _ in got["headers"]}
        for auto in ("user-agent", "accept-encoding", "accept", "content-type"):
            assert auto not in names, f"{auto} was invented: {got['headers']}"
        assert got["body"] == body.decode()


async def test_response_headers_hop_by_hop_dropped_end_to_end_kept(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        resp = web.Response(text="ok")
        resp.headers["Connection"] = "X-Custom-Hop"
        resp.headers["X-Custom-Hop"] = "secret"
        resp.headers["Keep-Alive"] = "timeout=5"
        resp.headers["Proxy-Authenticate"] = 'Basic realm="x"'
        resp.headers["Trailer"] = "X-Checksum"
        resp.headers["Upgrade"] = "h2c"
        resp.headers.add("Set-Cookie", "a=1; Path=/")
        resp.headers.add("Set-Cookie", "b=2; HttpOnly")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Upstream"] = "a1"
        return resp

    address = await upstream({"/h": handler})
    server = await balancer(static(("a1", address)))
    for client in ("aiohttp", "raw"):
        if client == "aiohttp":
            async with http.get(url(server, "/h")) as r:
                status, headers, body = r.status, list(r.headers.items()), await r.read()
        else:
            status, headers, body = await raw_request(
                server.port, "GET /h HTTP/1.1\nHost: lb\nConnection: close\n"
            )
        assert status == 200
        assert body == b"ok"
        names = {k.lower() for k, _ in headers}
        for hop in ("x-custom-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
            assert hop not in names, f"{hop} reached the client ({client}): {headers}"
        assert all("x-custom-hop" not in v.lower() for v in header_values(headers, "Connection"))
        assert header_values(headers, "Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
        assert header_values(headers, "Cache-Control") == ["no-store"]
        assert header_values(headers, "X-Upstream") == ["a1"]
        assert header_values(headers, "Content-Length") == ["2"]


async def test_gzip_body_is_relayed_byte_identical_not_decompressed(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    plain = b"".join(b"line %d of a compressible text\n" % i for i in range(5000))
    compressed = gzip.compress(plain)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=compressed,
            headers={
                "Content-Encoding": "gzip",
                "Content-Type": "text/plain",
                "Vary": "Accept-Encoding",
            },
        )

    address = await upstream({"/gz": handler})
    server = await balancer(static(("a1", address)))
    async with http.get(url(server, "/gz"), headers={"Accept-Encoding": "gzip"}) as r:
        assert r.status == 200
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Content-Length"] == str(len(compressed))
        body = await r.read()
    assert body == compressed
    assert gzip.decompress(body) == plain


# -- 3. routing ------------------------------------------------------------------------------


NAMES = ["a1", "a2", "a3"]


async def test_same_request_id_same_upstream_and_generated_ids(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    replicas = await start_named(upstream, NAMES)
    server = await balancer(static(*replicas))

    async def name_for(rid: str | None) -> tuple[str, list[Any]]:
        headers = {"X-Request-Id": rid} if rid is not None else {}
        async with http.get(url(server, "/home"), headers=headers) as r:
            assert r.status == 200
            got = await r.json()
            return got["name"], got["headers"]

    chosen: dict[str, str] = {}
    for i in range(40):
        rid = str(100_000 + i * 7919)
        names = {(await name_for(rid))[0] for _ in range(3)}
        assert len(names) == 1, f"request id {rid} went to {names}"
        chosen[rid] = names.pop()
    assert len(set(chosen.values())) > 1

    generated = []
    for _ in range(20):
        _, headers = await name_for(None)
        ids = header_values(headers, "X-Request-Id")
        assert len(ids) == 1
        assert re.fullmatch(r"[1-9]\d{5}", ids[0]), ids
        generated.append(ids[0])
    assert len(set(generated)) > 1


@pytest.mark.parametrize("mode", ["header:X-User", "cookie:sid", "query:user", "path", "client_ip"])
async def test_key_modes_route_by_their_key(
    mode: str, upstream: Callable[..., Awaitable[str]], balancer: Any
) -> None:
    replicas = await start_named(upstream, NAMES)
    server = await balancer(merge(static(*replicas), {"hashing": {"key": mode}}))
    ring = build_ring(server.config.hashing.scheme(), [1, 2, 3], server.config.hashing.probing)
    by_slot = slot_names(NAMES)

    async def send(i: int, rep: int) -> tuple[str, str]:
        """(key the request carries, upstream that answered); only the key stays the same."""
        path, local = f"/home?r={rep}", None
        extra = f"X-Request-Id: {100_000 + 1000 * rep + i}\n"
        if mode == "header:X-User":
            key = f"user-{i}"
            extra += f"X-User: {key}\n"
        elif mode == "cookie:sid":
            key = f"s{i:04d}"
            extra += f"Cookie: theme=t{rep}; sid={key}\n"
        elif mode == "query:user":
            key = f"u{i}"
            path = f"/home/{rep}?x={rep}&user={key}"
        elif mode == "path":
            key = f"/items/{i}"
            path = f"{key}?r={rep}"
        else:
            key = f"127.0.0.{i + 2}"
            local = (key, 0)
        status, _, body = await raw_request(
            server.port,
            f"GET {path} HTTP/1.1\nHost: lb\nConnection: close\n{extra}",
            local_addr=local,
        )
        assert status == 200, body
        return key, json.loads(body)["name"]

    used = set()
    for i in range(24):
        answers = {await send(i, rep) for rep in range(3)}
        assert len(answers) == 1, f"{mode}: one key went to {answers}"
        key, name = answers.pop()
        assert name == by_slot[ring.lookup(key)], f"{mode}: {key!r} went to {name}"
        used.add(name)
    assert len(used) > 1, f"{mode}: every key went to {used}"


async def test_assignment_hashing_routes_as_the_ring_predicts(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    replicas = await start_named(upstream, NAMES)
    server = await balancer(merge(static(*replicas), {"hashing": {"function": "assignment"}}))
    ring = HashRing(make_scheme("assignment"), [1, 2, 3])
    by_slot = slot_names(NAMES)
    # Ids spread over the ring so that every replica's arc is hit at least once.
    ids = [str(100_000 + i) for i in range(0, 512 * 3, 7)]
    expected = {rid: by_slot[ring.lookup(rid)] for rid in ids}
    assert set(expected.values()) == set(NAMES)

    async def one(rid: str) -> None:
        async with http.get(url(server, "/home"), headers={"X-Request-Id": rid}) as r:
            assert (await r.json())["name"] == expected[rid], rid

    await asyncio.gather(*(one(rid) for rid in ids))


# -- 4. failures -----------------------------------------------------------------------------


def key_routed_first_to(ring: Ring, slot: int) -> tuple[str, list[int]]:
    for i in range(100_000):
        key = f"key-{i}"
        walk = list(ring.walk(key))
        if walk[0] == slot:
            return key, walk
    raise AssertionError(f"no key routes to slot {slot}")


async def test_refused_connection_is_retried_on_the_next_replica_clockwise(
    stoppable: Any, balancer: Any, http: aiohttp.ClientSession
) -> None:
    ups = [await stoppable({"/{tail:.*}": whoami(name)}) for name in NAMES]
    server = await balancer(
        merge(
            static(*zip(NAMES, (u.address for u in ups), strict=True)),
            {"health": {"interval": 30, "unhealthy_threshold": 100}},
        )
    )
    ring = build_ring(server.config.hashing.scheme(), [1, 2, 3], server.config.hashing.probing)
    by_slot = slot_names(NAMES)
    key, walk = key_routed_first_to(ring, 2)
    await ups[1].stop()  # a2: now refuses connections, but the balancer still thinks it is up
    assert server.pool.replicas[2].state is State.UP
    async with http.get(url(server, "/home"), headers={"X-Request-Id": key}) as r:
        assert r.status == 200
        assert (await r.json())["name"] == by_slot[walk[1]]

    # A request body is not used up by the refused attempt: it reaches the next replica whole.
    payload = os.urandom(300_000)

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    for data in (payload, gen()):
        async with http.post(url(server, "/up"), data=data, headers={"X-Request-Id": key}) as r:
            assert r.status == 200
            got = await r.json()
        assert got["name"] == by_slot[walk[1]]
        assert got["body"].encode("latin-1") == payload
    # Still in the ring (the threshold of missed heartbeats is not reached), so every one of
    # these requests really was retried past it.
    assert server.pool.replicas[2].state is State.UP
    # Keys that route to healthy replicas are untouched.
    other, _ = key_routed_first_to(ring, 1)
    async with http.get(url(server, "/home"), headers={"X-Request-Id": other}) as r:
        assert (await r.json())["name"] == "a1"


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_retries_bound_the_replicas_tried_and_all_refusing_is_502(
    retries: int, stoppable: Any, balancer: Any, http: aiohttp.ClientSession
) -> None:
    names = ["b1", "b2", "b3", "b4"]
    ups = [await stoppable({"/{tail:.*}": whoami(name)}) for name in names]
    server = await balancer(
        merge(
            static(*zip(names, (u.address for u in ups), strict=True)),
            {"health": {"interval": 30}, "proxy": {"retries": retries}},
        )
    )
    for u in ups:
        await u.stop()
    ring = build_ring(server.config.hashing.scheme(), [1, 2, 3, 4], server.config.hashing.probing)
    by_slot = slot_names(names)
    key, walk = key_routed_first_to(ring, 1)
    async with http.get(url(server, "/home"), headers={"X-Request-Id": key}) as r:
        assert r.status == 502
        assert r.content_type == "application/json"
        message = assert_failure(await r.json())
    tried = [by_slot[s] for s in walk[: retries + 1]]
    assert message == f"<Error> Could not connect to any replica (tried {', '.join(tried)})"


async def test_no_healthy_replica_is_503(balancer: Any, http: aiohttp.ClientSession) -> None:
    dead = f"127.0.0.1:{free_port()}"
    server = await balancer(
        merge(static(("d1", dead)), {"health": {"startup_timeout": 0.3, "interval": 30}})
    )
    async with http.get(url(server, "/home")) as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
        assert assert_failure(await r.json()) == "<Error> No healthy replica is available"


async def test_slow_upstream_is_504(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 5)
        return web.Response(text="late")

    async def stalls_mid_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b"x" * 100)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 5)
        return resp

    address = await upstream({"/slow": slow, "/stall": stalls_mid_body})
    server = await balancer(merge(static(("a1", address)), {"proxy": {"read_timeout": 0.5}}))
    try:
        t = time.monotonic()
        async with http.get(url(server, "/slow")) as r:
            assert r.status == 504
            message = assert_failure(await r.json())
        assert time.monotonic() - t < 3
        assert message == "<Error> Replica a1 did not answer within 0.5s"
        # Headers came in time but the body stalls: the client must not get a clean answer.
        async with http.get(url(server, "/stall")) as r:
            assert r.status == 200
            async with asyncio.timeout(10):
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()
    finally:
        release.set()
    async with http.get(url(server, "/heartbeat")) as r:
        assert r.status == 200


async def test_upstream_404_is_the_specs_400(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    address = await upstream({"/home": whoami("a1")})
    server = await balancer(static(("a1", address)))
    async with http.get(url(server, "/other")) as r:
        assert r.status == 400
        assert r.content_type == "application/json"
        assert await r.json() == {
            "message": "<Error> '/other' endpoint does not exist in server replicas",
            "status": "failure",
        }
    async with http.get(url(server, "/home")) as r:
        assert r.status == 200


# -- 5. methods and framing ------------------------------------------------------------------


async def test_methods_and_bodies(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    page = b"<html>" + b"p" * 5000 + b"</html>"

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=body,
            headers={
                "X-Method": request.method,
                "X-Got-Length": request.headers.get("Content-Length", "-"),
                "X-Got-Type": request.headers.get("Content-Type", "-"),
            },
        )

    async def page_handler(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html")

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"X-Why": "nothing"})

    async def not_modified(request: web.Request) -> web.Response:
        return web.Response(status=304, headers={"ETag": '"v1"'})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(50):
            await resp.write(b"chunk %03d;" % i)
        await resp.write_eof()
        return resp

    address = await upstream(
        {
            "/echo": echo,
            "/page": page_handler,
            "/204": no_content,
            "/304": not_modified,
            "/chunked": chunked,
        }
    )
    server = await balancer(static(("a1", address)))

    for method in ("POST", "PUT", "PATCH", "DELETE"):
        data = f"{method} body ".encode() * 1000
        async with http.request(
            method, url(server, "/echo"), data=data, headers={"Content-Type": "application/x-test"}
        ) as r:
            assert r.status == 200
            assert r.headers["X-Method"] == method
            assert r.headers["X-Got-Length"] == str(len(data))
            assert r.headers["X-Got-Type"] == "application/x-test"
            assert await r.read() == data

    async with http.get(url(server, "/page")) as r:
        assert r.headers["Content-Length"] == str(len(page))
        get_type = r.headers["Content-Type"]
        assert await r.read() == page
    for client in ("aiohttp", "raw"):
        if client == "aiohttp":
            async with http.head(url(server, "/page")) as r:
                status, headers, body = r.status, list(r.headers.items()), await r.read()
        else:
            status, headers, body = await raw_request(
                server.port, "HEAD /page HTTP/1.1\nHost: lb\nConnection: close\n"
            )
        assert status == 200
        assert header_values(headers, "Content-Length") == [str(len(page))]
        assert header_values(headers, "Content-Type") == [get_type]
        assert body == b""

    for path, status in (("/204", 204), ("/304", 304)):
        code, headers, body = await raw_request(
            server.port, f"GET {path} HTTP/1.1\nHost: lb\nConnection: close\n"
        )
        assert code == status
        assert body == b""
        assert not header_values(headers, "Transfer-Encoding")
    async with http.get(url(server, "/204")) as r:
        assert r.status == 204
        assert r.headers["X-Why"] == "nothing"
        assert await r.read() == b""
    async with http.get(url(server, "/304")) as r:
        assert r.status == 304
        assert r.headers["ETag"] == '"v1"'
        assert await r.read() == b""

    expected = b"".join(b"chunk %03d;" % i for i in range(50))
    async with http.get(url(server, "/chunked")) as r:
        assert r.status == 200
        assert "Content-Length" not in r.headers
        assert await r.read() == expected
    # The connection is still good for more requests after all of these.
    async with http.post(url(server, "/echo"), data=b"last") as r:
        assert await r.read() == b"last"


async def test_expect_100_continue_is_answered_by_the_balancer(
    upstream: Callable[..., Awaitable[str]], balancer: Any
) -> None:
    address = await upstream({"/{tail:.*}": whoami("a1")})
    server = await balancer(static(("a1", address)))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        writer.write(b"hello")
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    got = json.loads(body)
    assert got["body"] == "hello"
    # The upstream must not wait for a 100 Continue of its own.
    assert not header_values(got["headers"], "Expect")


async def test_upstream_error_statuses_pass_through(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, reason="Custom Reason", text=f"upstream says {code}")

    address = await upstream({"/status/{code}": handler})
    server = await balancer(static(("a1", address)))
    for code in (201, 302, 401, 418, 500, 503):
        async with http.get(url(server, f"/status/{code}"), allow_redirects=False) as r:
            assert r.status == code
            assert r.reason == "Custom Reason"
            assert await r.text() == f"upstream says {code}"


async def test_upstream_closing_idle_or_marked_close_connections_is_harmless(
    stoppable: Any, balancer: Any, http: aiohttp.ClientSession
) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def closing(request: web.Request) -> web.Response:
        resp = web.Response(body=await request.read())
        resp.force_close()  # Connection: close, then the upstream hangs up
        return resp

    # The upstream drops idle keep-alive connections long before the balancer's pool would.
    up = await stoppable({"/echo": echo, "/closing": closing}, keepalive_timeout=0.2)
    server = await balancer(static(("a1", up.address)))
    for i in range(3):
        for path in ("/echo", "/closing", "/echo"):
            data = f"round {i} {path}".encode()
            async with http.post(url(server, path), data=data) as r:
                assert r.status == 200, await r.text()
                assert await r.read() == data
        await asyncio.sleep(0.4)


# -- 6. disconnects --------------------------------------------------------------------------


def balancer_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """ERROR records raised from lbproxy's code (the upstreams here share the process)."""
    out = []
    for rec in caplog.records:
        if rec.levelno < logging.ERROR:
            continue
        frames = traceback.extract_tb(rec.exc_info[2]) if rec.exc_info else []
        if rec.name.startswith("lbproxy") or any("/lbproxy/" in f.filename for f in frames):
            out.append(rec)
    return out


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_client_disconnects_mid_download(
    framing: str,
    upstream: Callable[..., Awaitable[str]],
    balancer: Any,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended: asyncio.Queue[str] = asyncio.Queue()
    peers: list[Any] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        resp = web.StreamResponse()
        if framing == "content-length":
            resp.content_length = 1 << 40
        await resp.prepare(request)
        try:
            for _ in range(100_000):
                await resp.write(b"z" * 65536)
                await asyncio.sleep(0)
        except ConnectionError as e:
            await ended.put(type(e).__name__)
            return resp
        await ended.put("finished")
        return resp

    async def small(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return web.Response(text="fine")

    address = await upstream({"/endless": endless, "/small": small})
    server = await balancer(static(("a1", address)))

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /endless HTTP/1.1\r\nHost: lb\r\n\r\n")
    got = 0
    while got < 2 * MiB:
        got += len(await reader.read(65536))
    writer.transport.abort()  # RST, mid-body
    # The balancer gives up its side: the upstream's write fails soon.
    reason = await asyncio.wait_for(ended.get(), 10)
    assert reason != "finished"

    for _ in range(5):
        async with http.get(url(server, "/small")) as r:
            assert r.status == 200
            assert await r.read() == b"fine"
    # The broken upstream connection was not handed back out.
    assert peers[0] not in peers[1:]
    # A client going away is routine: no error (with traceback) in the balancer's log.
    assert not balancer_errors(caplog), [r.getMessage() for r in balancer_errors(caplog)]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_client_disconnects_mid_upload(
    framing: str,
    upstream: Callable[..., Awaitable[str]],
    balancer: Any,
    http: aiohttp.ClientSession,
) -> None:
    outcomes: asyncio.Queue[str] = asyncio.Queue()
    peers: list[Any] = []
    counted = body_sink(outcomes)

    async def sink(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return await counted(request)

    address = await upstream({"/sink": sink})
    server = await balancer(static(("a1", address)))

    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if framing == "content-length":
        writer.write(b"POST /sink HTTP/1.1\r\nHost: lb\r\nContent-Length: 10000000\r\n\r\n")
        for _ in range(16):
            writer.write(b"u" * 65536)
    else:
        writer.write(b"POST /sink HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(16):
            writer.write(b"10000\r\n" + b"u" * 65536 + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()

    outcome = await asyncio.wait_for(outcomes.get(), 10)
    # The upstream must not take the cut body for a complete one.
    assert outcome.startswith("error"), outcome

    data = os.urandom(3 * MiB)
    for _ in range(3):
        async with http.post(url(server, "/sink"), data=data) as r:
            assert r.status == 200
            assert (await r.json())["bytes"] == len(data)
        assert (await outcomes.get()) == f"complete {len(data)}"
    assert peers[0] not in peers[1:]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_upstream_closes_mid_body(
    framing: str,
    upstream: Callable[..., Awaitable[str]],
    balancer: Any,
    http: aiohttp.ClientSession,
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if framing == "content-length":
            resp.content_length = 10 * MiB
        await resp.prepare(request)
        await resp.write(b"b" * 300_000)
        await asyncio.sleep(0.1)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    address = await upstream({"/broken": broken, "/fine": fine})
    server = await balancer(static(("a1", address)))

    for _ in range(2):
        async with http.get(url(server, "/broken")) as r:
            assert r.status == 200
            async with asyncio.timeout(10):
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()
    # Raw client: the connection must end without a chunked terminator / full length.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /broken HTTP/1.1\r\nHost: lb\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if framing == "content-length":
        assert b"Content-Length: 10485760" in head
        assert len(body) < 10 * MiB
    else:
        assert b"Transfer-Encoding: chunked" in head
        assert not body.endswith(b"0\r\n\r\n")

    for _ in range(3):
        async with http.get(url(server, "/fine")) as r:
            assert r.status == 200
            assert await r.read() == b"fine"


# -- 7. admin paths --------------------------------------------------------------------------


async def test_admin_paths_are_not_proxied(
    upstream: Callable[..., Awaitable[str]], balancer: Any, http: aiohttp.ClientSession
) -> None:
    seen: list[dict[str, Any]] = []
    address = await upstream({"/{tail:.*}": whoami("a1", seen)})
    server = await balancer(static(("a1", address)))
    wrong = [
        ("POST", "/rep", "GET"),
        ("PUT", "/rep", "GET"),
        ("GET", "/add", "POST"),
        ("DELETE", "/add", "POST"),
        ("GET", "/rm", "DELETE"),
        ("POST", "/rm", "DELETE"),
    ]
    for method, path, allow in wrong:
        async with http.request(method, url(server, path), json={"n": 1}) as r:
            assert r.status == 405, (method, path)
            assert r.headers["Allow"] == allow
            assert r.content_type == "application/json"
            message = assert_failure(await r.json())
            assert method in message and path in message
    async with http.get(url(server, "/rep")) as r:
        assert r.status == 200
        assert await r.json() == {
            "message": {"N": 1, "replicas": ["a1"]},
            "status": "successful",
        }
    async with http.get(url(server, "/rep/sub")) as r:
        assert (await r.json())["path"] == "/rep/sub"  # only the exact paths are the balancer's
    assert [s["path"] for s in seen] == ["/rep/sub"]


# -- in-flight accounting (drain and bounded loads read it) ----------------------------------


async def test_in_flight_counts_every_exchange_until_it_ends(
    balancer: Any, upstream: Any, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.Response(text="late")

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        await release.wait()
        await resp.write_eof()
        return resp

    async def quick(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    address = await upstream({"/slow": slow, "/stream": stream, "/quick": quick})
    server = await balancer(static(("only", address)))
    replica = server.pool.replicas[1]
    for _ in range(20):  # the hot path (idle kept-alive connections) and the general one
        async with http.get(url(server, "/quick")) as r:
            assert r.status == 200
    async with http.post(url(server, "/quick"), data=b"body") as r:
        assert r.status == 200
    assert (replica.in_flight, replica.requests) == (0, 21)

    # A slow answer, a streaming one and one whose client leaves mid-answer.
    slow_get = asyncio.ensure_future(http.get(url(server, "/slow")))
    slow_post = asyncio.ensure_future(http.post(url(server, "/slow"), data=b"x" * 100_000))
    streamed = await http.get(url(server, "/stream"))
    await streamed.content.readexactly(1000)
    async with aiohttp.ClientSession() as other:
        left = await other.get(url(server, "/stream"))
        await left.content.readexactly(1000)
        for _ in range(100):
            if replica.in_flight == 4:
                break
            await asyncio.sleep(0.02)
        assert replica.in_flight == 4
        left.close()  # gone mid-answer: that exchange ends once the balancer notices
    release.set()
    for fut in (slow_get, slow_post):
        async with await fut as r:
            assert await r.text() == "late"
    assert len(await streamed.read()) == 0  # the rest of the body: nothing after the wait
    streamed.release()
    assert await replica.drained(5)
    assert replica.in_flight == 0
    assert replica.requests == 25


# -- a replica that breaks off: replayed once, named right, ejected when it keeps failing ----


def raw_static(*replicas: Any, **proxy: Any) -> dict[str, Any]:
    """A static backend over raw replicas (tests/raw_http.py), named r1, r2, ... by slot."""
    return merge(
        static(*((f"r{i}", r.address) for i, r in enumerate(replicas, start=1))),
        {"proxy": proxy},
    )


def breaks_off(kind: str) -> Callable[..., bytes | None]:
    """A raw replica's answer: reset, or close, or hang on every request but /ok."""

    def answer(req: Any, conn: Any) -> bytes | None:
        from raw_http import default_answer

        if req.target == b"/ok":
            return default_answer(req, conn)
        if kind == "reset":
            conn.abort()
        elif kind == "close":
            conn.transport.close()
        return None  # "hang": never answers

    return answer


async def routed_to(server: Any, slot: int) -> str:
    ring = build_ring(server.config.hashing.scheme(), sorted(server.pool.replicas), "linear")
    return key_routed_first_to(ring, slot)[0]


@pytest.mark.parametrize("kind", ["reset", "close", "hang"])
@pytest.mark.parametrize("pooled", [False, True], ids=["new-connection", "hot-path"])
async def test_bodiless_idempotent_request_is_replayed_once_on_the_next_replica(
    kind: str, pooled: bool, raw_replica: Any, balancer: Any
) -> None:
    from raw_http import StrictClient

    bad = await raw_replica(breaks_off(kind))
    good = await raw_replica()
    server = await balancer(
        merge(raw_static(bad, good, read_timeout=0.5), {"health": {"interval": 30}})
    )
    key = await routed_to(server, 1)
    client = await StrictClient.open(server.port)
    if pooled:  # a kept-alive connection to r1 first: the request then takes the hot path
        client.send(b"GET /ok HTTP/1.1\r\nHost: lb\r\nX-Request-Id: %s\r\n\r\n" % key.encode())
        assert (await client.answer()).status == 200
    client.send(b"GET /x HTTP/1.1\r\nHost: lb\r\nX-Request-Id: %s\r\n\r\n" % key.encode())
    reply = await client.answer(timeout=5)
    assert reply.status == 200, reply.body
    assert [r.target for r in good.requests] == [b"/x"]  # replayed there, once
    # Not so a POST: it may have been acted on. The error names the replica that failed.
    client.send(
        b"POST /x HTTP/1.1\r\nHost: lb\r\nX-Request-Id: %s\r\nContent-Length: 1\r\n\r\nb"
        % key.encode(),
        b"POST",
    )
    reply = await client.answer(timeout=5)
    assert reply.status == (504 if kind == "hang" else 502)
    assert json.loads(reply.body)["message"].startswith("<Error> Replica r1 ")
    assert [r.target for r in good.requests] == [b"/x"]
    assert all(r.in_flight == 0 for r in server.pool.replicas.values())


async def test_requests_waiting_on_a_replica_taken_out_go_elsewhere_at_once(
    raw_replica: Any, balancer: Any
) -> None:
    from raw_http import StrictClient

    bad = await raw_replica(breaks_off("hang"))
    good = await raw_replica()
    server = await balancer(
        merge(
            raw_static(bad, good, read_timeout=60),
            {"health": {"interval": 0.2, "timeout": 0.2, "unhealthy_threshold": 2}},
        )
    )
    key = await routed_to(server, 1)
    clients = []
    for i in range(5):
        client = await StrictClient.open(server.port)
        client.send(
            b"GET /w%d HTTP/1.1\r\nHost: lb\r\nX-Request-Id: %s\r\n\r\n" % (i, key.encode())
        )
        clients.append(client)
    await eventually(lambda: len(bad.requests) == 5)
    started = time.monotonic()
    bad.hung = True  # heartbeats stop too: the supervisor takes r1 out
    replies = await asyncio.gather(*(c.answer(timeout=10) for c in clients))
    assert [r.status for r in replies] == [200] * 5
    assert time.monotonic() - started < 5  # not read_timeout (60 s) later
    assert sorted(r.target for r in good.requests) == [b"/w%d" % i for i in range(5)]
    assert server.pool.replicas[1].state is not State.UP


async def test_failure_names_the_replica_that_failed_not_its_replacement(
    balancer: Any, http: aiohttp.ClientSession
) -> None:
    from conftest import pids_of_children
    from experiments._balancer import environ

    server = await balancer(
        {
            "replicas": {"count": 1, "stop_timeout": 0.5},
            "health": {"interval": 0.2, "timeout": 0.3, "unhealthy_threshold": 2},
        }
    )
    (first,) = server.pool.hostnames()
    pid = next(p for p in pids_of_children(os.getpid()) if environ(p).get("SERVER_ID") == first)
    os.kill(pid, signal.SIGSTOP)  # hung: connections still accepted, nothing answered
    try:
        async with http.post(url(server, "/home"), data=b"body") as r:
            status, body = r.status, await r.json()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert server.pool.hostnames() != [first]  # replaced meanwhile
    assert status == 502
    assert body["message"] == f"<Error> Replica {first} failed to answer"


async def test_a_replica_failing_in_a_row_is_taken_out_of_routing_for_a_while(
    raw_replica: Any, balancer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from raw_http import StrictClient

    bad = await raw_replica(breaks_off("reset"))
    good = await raw_replica()
    server = await balancer(
        merge(
            raw_static(bad, good, outlier_failures=3, outlier_ejection_time=1.0),
            {"health": {"interval": 30}},
        )
    )
    key = await routed_to(server, 1)
    post = b"POST /p HTTP/1.1\r\nHost: lb\r\nX-Request-Id: %s\r\nContent-Length: 0\r\n\r\n" % (
        key.encode()
    )

    async def status() -> int:
        client = await StrictClient.open(server.port)
        client.send(post, b"POST")
        try:
            return (await client.answer()).status
        finally:
            client.close()

    assert [await status() for _ in range(3)] == [502, 502, 502]
    assert server.pool.replicas[1].ejected
    assert [await status() for _ in range(3)] == [200, 200, 200]  # r1's keys: next replica
    assert any("out of routing" in r.getMessage() for r in caplog.records)
    await eventually(lambda: not server.pool.replicas[1].ejected, timeout=3)
    assert await status() == 502  # back in routing (and still broken)
    assert len(good.requests) == 3


async def test_the_one_replica_left_is_never_ejected(raw_replica: Any, balancer: Any) -> None:
    from raw_http import StrictClient

    bad = await raw_replica(breaks_off("reset"))
    server = await balancer(
        merge(raw_static(bad, outlier_failures=1), {"health": {"interval": 30}})
    )
    for _ in range(3):
        client = await StrictClient.open(server.port)
        client.send(b"POST /p HTTP/1.1\r\nHost: lb\r\nContent-Length: 0\r\n\r\n", b"POST")
        assert (await client.answer()).status == 502
        client.close()
    assert not server.pool.replicas[1].ejected


# -- keyless requests: one random id each, whichever path serves them ------------------------


async def test_keyless_requests_spread_by_the_ring_shares_whatever_path_serves_them(
    raw_replica: Any, balancer: Any
) -> None:
    """A replica with no idle kept-alive connection (as one just added has) gets its keys
    through the general path: the id drawn on the hot path must be the one routed there."""
    import random

    from raw_http import StrictClient, default_answer

    def closing(req: Any, conn: Any) -> bytes:  # never leaves an idle connection behind
        return default_answer(req, conn).replace(b"\r\n", b"\r\nConnection: close\r\n", 1)

    kept = await raw_replica()
    fresh = await raw_replica(closing)
    server = await balancer(merge(raw_static(kept, fresh), {"health": {"interval": 30}}))
    ring = build_ring(server.config.hashing.scheme(), [1, 2], "linear")
    rng = random.Random(7)
    share = (
        sum(ring.lookup(str(rng.randint(100_000, 999_999))) == 2 for _ in range(20_000)) / 20_000
    )
    n = 400
    client = await StrictClient.open(server.port)
    for _ in range(n):
        client.send(b"GET /k HTTP/1.1\r\nHost: lb\r\n\r\n")
        assert (await client.answer()).status == 200
    got = len(fresh.requests)
    sd = (n * share * (1 - share)) ** 0.5
    # Drawn twice, the fresh replica keeps only share^2 of them (about 100 of 400 here).
    assert abs(got - n * share) < 5 * sd, (got, n * share)
    assert len(kept.requests) + got == n


# -- log floods ------------------------------------------------------------------------------


async def test_a_replica_refusing_connections_is_logged_once_with_a_count(
    raw_replica: Any, balancer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from raw_http import StrictClient

    gone = await raw_replica()
    good = await raw_replica()
    server = await balancer(
        merge(
            raw_static(gone, good, outlier_failures=0),
            {"health": {"interval": 30, "unhealthy_threshold": 100}},
        )
    )
    await gone.close()  # now refuses connections; still up for the balancer
    key = await routed_to(server, 1)
    for _ in range(40):
        client = await StrictClient.open(server.port)
        client.send(b"GET / HTTP/1.1\r\nHost: lb\r\nX-Request-Id: %s\r\n\r\n" % key.encode())
        assert (await client.answer()).status == 200
        client.close()

    def refusals() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("lbproxy") and "cannot connect" in r.getMessage()
        ]

    assert len(refusals()) == 1
    summary = await eventually(lambda: [m for m in refusals() if "39 more" in m], timeout=5)
    assert summary[0].startswith('r1: 39 more like "cannot connect"')
