"""GET /metrics on the admin listener: exact counts from a real balancer, parsed with
prometheus_client's own parser (independent of how we render)."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from conftest import admin_url, eventually, url
from lbproxy import Config, Server
from lbproxy.backends import ReplicaHandle
from lbproxy.backends._process import ProcessBackend

TOKEN = "t" * 32

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: Any, server: Server) -> Samples:
    async with http.get(admin_url(server, "/metrics")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = await r.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def matching(samples: Samples, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), v) for (n, labels), v in samples.items() if n == name]


async def send_keyed(http: Any, server: Server, keys: list[str], path: str = "/home") -> list[str]:
    """The hostname of the replica that answered each key's request."""
    names = []
    for key in keys:
        async with http.get(url(server, path), headers={"X-Request-Id": key}) as r:
            body = await r.json()
            if path == "/home":
                assert r.status == 200
                names.append(body["message"].removeprefix("Hello from Server: "))
            else:
                names.append(str(r.status))
    return names


async def test_requests_total_moves_by_exactly_the_answers_of_each_replica(balancer, http):
    server = await balancer({"replicas": {"count": 3}})
    before = await scrape(http, server)
    keys = [f"key-{i * 7919}" for i in range(90)]
    answered = collections.Counter(await send_keyed(http, server, keys))
    # The keys spread as the ring says (so the test knows which replica each went to).
    predicted = collections.Counter(
        server.pool.replicas[server.pool.ring.lookup(k)].hostname  # type: ignore[index]
        for k in keys
    )
    assert answered == predicted and len(answered) == 3
    # A path the replicas do not serve: the contract's 400, about the replica that said 404.
    missing = "key-missing"
    owner = server.pool.replicas[server.pool.ring.lookup(missing)].hostname  # type: ignore[index]
    assert await send_keyed(http, server, [missing], "/nope") == ["400"]

    after = await scrape(http, server)
    for name, n in answered.items():
        was = value(before, "lbproxy_requests_total", replica=name, code="200") or 0
        assert value(after, "lbproxy_requests_total", replica=name, code="200") == was + n
        count = value(after, "lbproxy_request_duration_seconds_count", replica=name)
        assert count == (n + (1 if name == owner else 0))
        inf = value(after, "lbproxy_request_duration_seconds_bucket", replica=name, le="+Inf")
        assert inf == count
        assert value(after, "lbproxy_replica_in_flight", replica=name) == 0
        assert value(after, "lbproxy_retries_total", replica=name) == 0
        assert value(after, "lbproxy_upstream_connect_errors_total", replica=name) == 0
    assert value(after, "lbproxy_requests_total", replica=owner, code="400") == 1
    # Buckets are cumulative and go from 0.5 ms to 10 s.
    buckets = sorted(
        (float(labels["le"]), v)
        for labels, v in matching(after, "lbproxy_request_duration_seconds_bucket")
        if labels["replica"] == owner
    )
    assert buckets[0][0] == 0.0005 and buckets[-2][0] == 10.0
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    # The ring's shares are the key space's: they add up to 1.
    shares = matching(after, "lbproxy_ring_share")
    assert {labels["replica"] for labels, _ in shares} == set(answered)
    assert abs(sum(v for _, v in shares) - 1) < 1e-9
    # The process metrics come along.
    assert (value(after, "process_cpu_seconds_total") or 0) > 0
    assert (value(after, "process_open_fds") or 0) > 0


async def test_balancers_own_answers_are_counted_with_an_empty_replica(balancer, http):
    server = await balancer({"replicas": {"count": 1}})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /home HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    head = await reader.read(1024)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400")
    samples = await scrape(http, server)
    assert value(samples, "lbproxy_requests_total", replica="", code="400") == 1
    # Counted, with no duration and none of a replica's series (retries, connect errors).
    for family in ("lbproxy_retries_total", "lbproxy_upstream_connect_errors_total"):
        assert value(samples, family, replica="") is None
    assert value(samples, "lbproxy_request_duration_seconds_count", replica="") is None


async def test_client_connections_and_config_reloads(balancer, http):
    server = await balancer({"replicas": {"count": 1}})
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        samples = await eventually(
            lambda: _with(http, server, "lbproxy_client_connections", 1.0), timeout=5
        )
    finally:
        writer.close()
    assert value(samples, "lbproxy_config_reloads_total", result="success") == 0
    await server.apply(server.config.model_copy(update={"log_level": "warning"}))
    samples = await scrape(http, server)
    assert value(samples, "lbproxy_config_reloads_total", result="success") == 1
    assert value(samples, "lbproxy_config_reloads_total", result="failure") == 0
    assert (value(samples, "lbproxy_heartbeat_duration_seconds_count") or 0) >= 1
    await eventually(lambda: _with(http, server, "lbproxy_client_connections", 0.0), timeout=5)


async def _with(http: Any, server: Server, name: str, want: float) -> Samples | None:
    samples = await scrape(http, server)
    return samples if value(samples, name) == want else None


class HeldReplacements(ProcessBackend):
    """The real process backend, whose replacements wait for the test's word to start: the
    time a killed replica's slot is down lasts until the test has looked."""

    def __init__(self, config: Config) -> None:
        super().__init__(config.replicas.process, config.replicas.stop_timeout)
        self.go = asyncio.Event()

    async def start(self, hostname: str, slot: int, restarts: int = 0) -> ReplicaHandle:
        if restarts:
            await self.go.wait()
        return await super().start(hostname, slot, restarts)


async def test_killed_replica_shows_in_replica_up_and_restarts(balancer, http):
    backends: list[HeldReplacements] = []

    def make(config: Config) -> HeldReplacements:
        backends.append(HeldReplacements(config))
        return backends[0]

    server = await balancer({"replicas": {"count": 2}, "admin": {"token": TOKEN}}, backend=make)
    samples = await scrape(http, server)
    assert value(samples, "lbproxy_replica_up", replica="server-1", slot="1") == 1
    assert value(samples, "lbproxy_replica_restarts_total", slot="1") == 0

    body = json.dumps({"n": 1, "hostnames": ["server-1"]})
    async with http.post(admin_url(server, "/kill"), data=body) as r:
        assert r.status == 401  # the token guards /kill as it does /add and /rm
    async with http.post(
        admin_url(server, "/kill"), data=body, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["message"]["killed"] == ["server-1"]

    async def slot_down() -> Samples | None:
        s = await scrape(http, server)
        ups = [(lab, v) for lab, v in matching(s, "lbproxy_replica_up") if lab["slot"] == "1"]
        restarted = value(s, "lbproxy_replica_restarts_total", slot="1") == 1
        return s if restarted and ups and ups[0][1] == 0 else None

    samples = await eventually(slot_down, timeout=10)
    [(labels, _)] = [x for x in matching(samples, "lbproxy_replica_up") if x[0]["slot"] == "1"]
    new_name = labels["replica"]
    assert new_name != "server-1"  # the replacement's name, not up yet
    backends[0].go.set()

    async def back_up() -> bool:
        s = await scrape(http, server)
        return value(s, "lbproxy_replica_up", replica=new_name, slot="1") == 1

    await eventually(back_up, timeout=15)
    kinds = server.events.kinds()
    assert kinds.index("killed") < kinds.index("died") < kinds.index("replaced")


async def test_retries_are_counted_on_the_replica_that_failed(balancer, http, upstream):
    async def reset(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()  # the answer never comes: the balancer retries elsewhere
        raise web.HTTPInternalServerError()

    async def home(request: web.Request) -> web.Response:
        return web.json_response({"message": "Hello from Server: b1", "status": "successful"})

    a = await upstream({"/home": reset})
    b = await upstream({"/home": home})
    server = await balancer(
        {
            "replicas": {
                "backend": "static",
                "static": [{"hostname": "a1", "address": a}, {"hostname": "b1", "address": b}],
            },
            "proxy": {"outlier_failures": 0},
        }
    )
    await eventually(lambda: len(server.pool.up_slots()) == 2)
    keys = [f"k{i}" for i in range(40)]
    to_a = [k for k in keys if server.pool.ring.lookup(k) == 1]
    assert to_a
    assert set(await send_keyed(http, server, keys)) == {"b1"}
    samples = await scrape(http, server)
    assert value(samples, "lbproxy_retries_total", replica="a1") == len(to_a)
    assert value(samples, "lbproxy_retries_total", replica="b1") == 0
    assert value(samples, "lbproxy_requests_total", replica="b1", code="200") == len(keys)
    assert value(samples, "lbproxy_requests_total", replica="a1", code="200") is None


async def test_metrics_off(balancer, http):
    server = await balancer({"replicas": {"count": 1}, "metrics": {"enabled": False}})
    async with http.get(admin_url(server, "/metrics")) as r:
        assert r.status == 404
        assert "metrics.enabled" in (await r.json())["message"]
    assert server.stats is None
    # /status (and so the dashboard) still has the totals, and null for what needs metrics.
    async with http.get(admin_url(server, "/status")) as r:
        report = (await r.json())["message"]
    assert report["metrics"] is False
    [replica] = report["replicas"]
    assert replica["errors"] is None and replica["p50"] is None and replica["requests"] == 0
