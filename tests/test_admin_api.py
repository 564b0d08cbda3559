"""/rep, /add and /rm on a real balancer with real replica processes, as SPEC.md words them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import url
from lbproxy import Server

ADD_TOO_MANY = "<Error> Length of hostname list is more than newly added instances"
RM_TOO_MANY = "<Error> Length of hostname list is more than removable instances"


async def call(
    http: Any, server: Server, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with http.request(
        method, url(server, path), data=data, headers={"Content-Type": "application/json"}
    ) as r:
        return r.status, await r.json()


async def rep(http: Any, server: Server) -> dict[str, Any]:
    status, body = await call(http, server, "GET", "/rep")
    assert status == 200 and body["status"] == "successful"
    return body["message"]


async def home_ids(http: Any, server: Server, n: int = 60) -> set[str]:
    seen = set()
    for i in range(n):
        async with http.get(
            url(server, "/home"), headers={"X-Request-Id": str(100000 + i * 7919)}
        ) as r:
            assert r.status == 200
            seen.add((await r.json())["message"].removeprefix("Hello from Server: "))
    return seen


async def test_rep_lists_managed_replicas(balancer, http):
    server = await balancer()
    msg = await rep(http, server)
    assert msg == {"N": 3, "replicas": ["server-1", "server-2", "server-3"]}
    # The names are the replicas that answer.
    assert await home_ids(http, server) == {"server-1", "server-2", "server-3"}


async def test_add_with_partial_hostnames_as_in_spec(balancer, http):
    server = await balancer()
    status, body = await call(
        http, server, "POST", "/add", {"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]}
    )
    assert status == 200, body
    assert body == {
        "message": {
            "N": 7,
            "replicas": ["server-1", "server-2", "server-3", "S5", "S4", "S10", "S11"],
        },
        "status": "successful",
    }
    status, body = await call(http, server, "POST", "/add", {"n": 2, "hostnames": ["S20"]})
    assert status == 200
    names = body["message"]["replicas"]
    assert body["message"]["N"] == 9 and names[7] == "S20"
    generated = names[8]
    assert generated not in names[:8] and generated.startswith("server-")
    # /add answers once the new replicas serve: they are all in the ring now.
    assert len(server.pool.ring.replicas) == 9
    assert await home_ids(http, server, 200) == set(names)


async def test_add_without_hostnames(balancer, http):
    server = await balancer({"replicas": {"count": 1}})
    status, body = await call(http, server, "POST", "/add", {"n": 2})
    assert status == 200
    assert body["message"]["N"] == 3 and len(set(body["message"]["replicas"])) == 3


async def test_rm_named_plus_random(balancer, http):
    server = await balancer()
    await call(http, server, "POST", "/add", {"n": 2, "hostnames": ["S5", "S4"]})
    status, body = await call(http, server, "DELETE", "/rm", {"n": 3, "hostnames": ["S5", "S4"]})
    assert status == 200, body
    left = body["message"]["replicas"]
    assert body["message"]["N"] == 2 and "S5" not in left and "S4" not in left
    assert set(left) < {"server-1", "server-2", "server-3"}
    assert await rep(http, server) == body["message"]
    assert await home_ids(http, server) == set(left)
    assert len(await server.backend.list()) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/add", {"n": 1, "hostnames": ["A1", "A2"]}, ADD_TOO_MANY),
        ("DELETE", "/rm", {"n": 1, "hostnames": ["server-1", "server-2"]}, RM_TOO_MANY),
    ],
)
async def test_spec_errors_exact(balancer, http, method, path, body, expected):
    server = await balancer()
    status, answer = await call(http, server, method, path, body)
    assert status == 400
    assert answer == {"message": expected, "status": "failure"}
    assert await rep(http, server) == {"N": 3, "replicas": ["server-1", "server-2", "server-3"]}


BAD_ADD = [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'"n"', "JSON object"),
    (b'{"hostnames": ["x1"]}', "'n'"),
    (b'{"n": 0}', "positive integer"),
    (b'{"n": -2}', "positive integer"),
    (b'{"n": 1.5}', "positive integer"),
    (b'{"n": "2"}', "positive integer"),
    (b'{"n": true}', "positive integer"),
    (b'{"n": 1, "hostnames": "S5"}', "list"),
    (b'{"n": 2, "hostnames": ["S5", "s5"]}', "twice"),
    (b'{"n": 1, "hostnames": ["bad name"]}', "valid container name"),
    (b'{"n": 1, "hostnames": ["-x"]}', "valid container name"),
    (b'{"n": 1, "hostnames": [5]}', "not a string"),
    (b'{"n": 1, "hostnames": ["' + b"a" * 64 + b'"]}', "longer than"),
    (b'{"n": 1, "hostnames": ["server-2"]}', "already in use"),
    (b'{"n": 1, "hostnamez": ["x1"]}', "Unknown field"),
    (b'{"n": 40}', "cap"),
]


@pytest.mark.parametrize(("raw", "fragment"), BAD_ADD)
async def test_bad_add_is_400_and_changes_nothing(balancer, http, raw, fragment):
    server = await balancer()
    before = await rep(http, server)
    pids = {r.handle.ident for r in server.pool.replicas.values() if r.handle}
    status, body = await call(http, server, "POST", "/add", raw=raw)
    assert status == 400, body
    assert body["status"] == "failure" and body["message"].startswith("<Error> ")
    assert fragment in body["message"], body["message"]
    assert await rep(http, server) == before
    assert {h.ident for h in await server.backend.list()} == pids


BAD_RM = [
    (b"{oops", "not valid JSON"),
    (b"7", "JSON object"),
    (b'{"n": 0}', "positive integer"),
    (b'{"n": 1, "hostnames": ["nobody"]}', "No replica named"),
    (b'{"n": 4}', "only 3 exist"),
    (b'{"n": 2, "hostnames": ["server-1", "SERVER-1"]}', "twice"),
    (b'{"n": 1, "hostnames": null, "x": 1}', "Unknown field"),
]


@pytest.mark.parametrize(("raw", "fragment"), BAD_RM)
async def test_bad_rm_is_400_and_changes_nothing(balancer, http, raw, fragment):
    server = await balancer()
    before = await rep(http, server)
    status, body = await call(http, server, "DELETE", "/rm", raw=raw)
    assert status == 400, body
    assert body["status"] == "failure" and fragment in body["message"], body["message"]
    assert await rep(http, server) == before
    assert len(await server.backend.list()) == 3


async def test_cap_counts_existing_replicas(balancer, http):
    server = await balancer({"replicas": {"count": 2, "max": 4}})
    status, body = await call(http, server, "POST", "/add", {"n": 3})
    assert status == 400 and "cap of 4" in body["message"]
    status, body = await call(http, server, "POST", "/add", {"n": 2})
    assert status == 200 and body["message"]["N"] == 4


async def test_oversized_admin_body_is_refused(balancer, http):
    server = await balancer({"replicas": {"count": 1}})
    raw = b'{"n": 1, "hostnames": [' + b'"x1",' * 20000 + b'"x2"]}'
    status, body = await call(http, server, "POST", "/add", raw=raw)
    assert status == 413 and body["status"] == "failure"
    assert (await rep(http, server))["N"] == 1


async def test_unknown_path_is_spec_400(balancer, http):
    server = await balancer({"replicas": {"count": 2}})
    async with http.get(url(server, "/other")) as r:
        assert r.status == 400
        assert await r.json() == {
            "message": "<Error> '/other' endpoint does not exist in server replicas",
            "status": "failure",
        }


async def test_wrong_method_on_admin_path(balancer, http):
    server = await balancer({"replicas": {"count": 1}})
    async with http.get(url(server, "/add")) as r:
        assert r.status == 405 and r.headers["Allow"] == "POST"
        assert (await r.json())["status"] == "failure"


async def test_static_backend_refuses_scaling(balancer, http, upstream):
    from aiohttp import web

    async def home(request: web.Request) -> web.Response:
        return web.json_response({"message": "Hello from Server: a1", "status": "successful"})

    address = await upstream({"/home": home})
    server = await balancer(
        {"replicas": {"backend": "static", "static": [{"hostname": "a1", "address": address}]}}
    )
    assert await rep(http, server) == {"N": 1, "replicas": ["a1"]}
    status, body = await call(http, server, "POST", "/add", {"n": 1})
    assert status == 400 and "static" in body["message"]
    status, body = await call(http, server, "DELETE", "/rm", {"n": 1})
    assert status == 400 and "static" in body["message"]
