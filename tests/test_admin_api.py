"""/rep, /add and /rm on a real balancer with real replica processes, as docs/api.md has them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import eventually, url
from lbproxy import Server, parse_config

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


async def _running(server: Server, n: int) -> bool:
    return len(await server.backend.list()) == n


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
    # /rm answers once they are out of the ring; with nothing in flight they stop at once.
    await eventually(lambda: _running(server, 2), timeout=10)


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


# -- malformed JSON over HTTP ----------------------------------------------------------------

ODD_BODIES = [
    b'{"n": 1, "hostnames": ' + b"[" * 1200 + b"]" * 1200 + b"}",
    b'{"n": 1, "n": 1}',
    b'\xef\xbb\xbf{"n": 1}',
    '{"n": 1}'.encode("utf-16"),
    b'{"n": NaN}',
    b'{"n": ' + b"1" * 4000 + b"}",
    b'{"n": 1, "hostnames": ["S\xff"]}',
]


@pytest.mark.parametrize("raw", ODD_BODIES, ids=lambda raw: repr(raw[:16]))
async def test_odd_json_is_400_and_changes_nothing(balancer, http, raw):
    server = await balancer({"replicas": {"count": 1}})
    before = await rep(http, server)
    for method, path in (("POST", "/add"), ("DELETE", "/rm")):
        status, body = await call(http, server, method, path, raw=raw)
        assert status == 400, body
        assert body["status"] == "failure" and body["message"].startswith("<Error> ")
        assert "request body" in body["message"].lower()
    assert await rep(http, server) == before
    assert len(await server.backend.list()) == 1


# -- the admin listener --------------------------------------------------------------------

TOKEN = "s3cret-token-0123456789abcdef"


async def admin_call(
    http: Any,
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    port: int | None = None,
) -> tuple[int, dict[str, Any], Any]:
    """A request to the admin listener (or ``port``): (status, JSON body, headers)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = None if body is None else json.dumps(body).encode()
    where = f"http://127.0.0.1:{port or server.admin_port}{path}"
    async with http.request(method, where, data=data, headers=headers) as r:
        return r.status, await r.json(), r.headers


async def test_admin_listener_serves_rep_add_rm_and_status(balancer, http):
    server = await balancer({"replicas": {"count": 2}})
    assert server.admin_port not in (None, 0, server.port)
    status, body, _ = await admin_call(http, server, "GET", "/rep")
    assert (status, body) == (200, {"message": await rep(http, server), "status": "successful"})

    status, body, _ = await admin_call(http, server, "POST", "/add", {"n": 1, "hostnames": ["A1"]})
    assert status == 200 and body["message"]["N"] == 3 and "A1" in body["message"]["replicas"]

    status, body, _ = await admin_call(http, server, "GET", "/status")
    assert status == 200 and body["status"] == "successful"
    report = body["message"]
    assert report["N"] == 3
    assert report["uptime_s"] >= 0
    assert report["backend"] == "process" and report["hashing"] == "default"
    assert report["version"] and report["config_reloads"] == 0 and report["draining"] == 0
    assert [r["hostname"] for r in report["replicas"]] == ["server-1", "server-2", "A1"]
    for r, slot in zip(report["replicas"], (1, 2, 3), strict=True):
        assert set(r) == {
            "hostname",
            "slot",
            "state",
            "address",
            "in_flight",
            "requests",
            "restarts",
            "weight",
            "ejected",
            # The dashboard's figures (docs/observability.md).
            "rate",
            "errors",
            "error_rate",
            "p50",
            "p99",
        }
        assert r["slot"] == slot and r["state"] == "up" and r["restarts"] == 0
        assert r["weight"] == 1.0 and r["ejected"] is False
        assert r["address"] == server.pool.replicas[slot].address and r["in_flight"] == 0
    # Requests are counted per replica.
    await home_ids(http, server, 30)
    _, body, _ = await admin_call(http, server, "GET", "/status")
    assert sum(r["requests"] for r in body["message"]["replicas"]) == 30

    status, body, _ = await admin_call(http, server, "DELETE", "/rm", {"n": 1, "hostnames": ["A1"]})
    assert status == 200 and body["message"] == {"N": 2, "replicas": ["server-1", "server-2"]}
    _, body, _ = await admin_call(http, server, "GET", "/status")
    assert [(r["hostname"], r["state"]) for r in body["message"]["replicas"]][:2] == [
        ("server-1", "up"),
        ("server-2", "up"),
    ]
    # /status is the admin listener's: on the balancer's port it is a path like any other.
    async with http.get(url(server, "/status")) as r:
        assert (
            r.status == 400 and "does not exist in server replicas" in (await r.json())["message"]
        )


@pytest.mark.parametrize("path", ["/home", "/heartbeat", "/other", "/index.html", "/rep/x"])
async def test_admin_listener_proxies_nothing(balancer, http, path):
    server = await balancer({"replicas": {"count": 1}})
    for method in ("GET", "POST"):
        status, body, _ = await admin_call(http, server, method, path)
        assert status == 404, body
        assert body["status"] == "failure"
        assert f"'{path}' is not an endpoint of the admin API" in body["message"]
    assert server.pool.replicas[1].requests == 0


@pytest.mark.parametrize("on_admin_port", [False, True], ids=["main-port", "admin-port"])
async def test_token_guards_add_and_rm_on_both_ports(balancer, http, on_admin_port):
    server = await balancer({"replicas": {"count": 2}, "admin": {"token": TOKEN}})
    port = server.admin_port if on_admin_port else server.port
    before = await rep(http, server)
    pids = {h.ident for h in await server.backend.list()}
    for token, error in ((None, None), ("wrong-token-0123456789", "invalid_token"), ("", None)):
        for method, path, body in (("POST", "/add", {"n": 1}), ("DELETE", "/rm", {"n": 1})):
            status, answer, headers = await admin_call(
                http, server, method, path, body, token=token, port=port
            )
            assert status == 401, answer
            assert answer["status"] == "failure" and answer["message"].startswith("<Error> ")
            challenge = headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer realm=")
            assert (error or "error=") in challenge if error else "error=" not in challenge
    # Nothing changed.
    assert await rep(http, server) == before
    assert {h.ident for h in await server.backend.list()} == pids
    # The token, in any case of "Bearer", lets them through.
    status, answer, _ = await admin_call(http, server, "POST", "/add", {"n": 1}, TOKEN, port)
    assert status == 200 and answer["message"]["N"] == 3
    async with http.delete(
        f"http://127.0.0.1:{port}/rm",
        data=json.dumps({"n": 1}),
        headers={"Authorization": f"bearer {TOKEN}"},
    ) as r:
        assert r.status == 200 and (await r.json())["message"]["N"] == 2
    # Reading needs no token.
    assert (await admin_call(http, server, "GET", "/rep", port=port))[0] == 200
    assert (await admin_call(http, server, "GET", "/status"))[0] == 200
    # The method is checked first; a wrong one tells the method, not the token.
    status, _, headers = await admin_call(http, server, "GET", "/add", port=port)
    assert status == 405 and headers["Allow"] == "POST"


async def test_add_and_rm_can_be_taken_off_the_main_port(balancer, http):
    server = await balancer({"replicas": {"count": 1}, "admin": {"on_main_port": False}})
    for method, path in (("POST", "/add"), ("DELETE", "/rm"), ("GET", "/add")):
        status, body = await call(http, server, method, path, {"n": 1})
        assert status == 403, body
        assert body["status"] == "failure"
        assert "admin listener" in body["message"] and "admin.on_main_port" in body["message"]
    assert (await rep(http, server))["N"] == 1  # /rep stays, and nothing changed
    status, body, _ = await admin_call(http, server, "POST", "/add", {"n": 1})
    assert status == 200 and body["message"]["N"] == 2


async def test_token_and_main_port_switch_reload(balancer, http):
    server = await balancer({"replicas": {"count": 1}})
    assert (await call(http, server, "POST", "/add", {"n": 1}))[0] == 200
    data = server.config.model_dump()
    data["admin"] = {**data["admin"], "token": TOKEN, "on_main_port": False}
    await server.apply(parse_config(data))
    assert server.config.admin.token is not None
    assert (await call(http, server, "DELETE", "/rm", {"n": 1}))[0] == 403
    assert (await admin_call(http, server, "DELETE", "/rm", {"n": 1}))[0] == 401
    status, body, _ = await admin_call(http, server, "DELETE", "/rm", {"n": 1}, TOKEN)
    assert status == 200 and body["message"]["N"] == 1
    _, body, _ = await admin_call(http, server, "GET", "/status")
    assert body["message"]["config_reloads"] == 1
