"""Live reload of config.yaml: a real in-process balancer watching a real file it was given."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from conftest import TEST_CONFIG, deep_merge, eventually, pid_alive, pids_of_children, url
from lbproxy import Server, parse_config
from lbproxy._config import with_overrides
from lbproxy._pool import State
from lbproxy._reload import SETTLE
from lbproxy.backends import ProcessBackend

RELOAD = {"reload": {"enabled": True, "interval": 0.2}}
REJECTED = "config reload rejected"
RESTART_ONLY = "take effect after a restart"


def _write(path: Path, data: Any) -> None:
    """Replace the file at once, as editors and ConfigMap updates do."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    os.replace(tmp, path)


async def _start(
    balancer: Any, tmp_path: Path, overrides: dict[str, Any]
) -> tuple[Server, Path, dict[str, Any]]:
    """A balancer whose running config is exactly what its config file says."""
    overrides = deep_merge(RELOAD, overrides)
    data = deep_merge(TEST_CONFIG, overrides)
    path = tmp_path / "config.yaml"
    _write(path, data)
    server = await balancer(overrides, config_path=path)
    assert server.config_path == path
    return server, path, data


async def _rep(http: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with http.get(url(server, "/rep")) as resp:
        assert resp.status == 200
        return (await resp.json())["message"]


def _all_up(server: Server, n: int) -> bool:
    replicas = list(server.pool.replicas.values())
    return len(replicas) == n and all(r.state is State.UP and r.up.is_set() for r in replicas)


async def _len_list(backend: ProcessBackend, n: int) -> bool:
    return len(await backend.list()) == n


def _count(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


async def test_reload_scales_replica_count_up_and_down(
    balancer: Any, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    server, path, data = await _start(balancer, tmp_path, {"replicas": {"count": 2}})
    backend = server.backend
    assert isinstance(backend, ProcessBackend)
    await eventually(lambda: _all_up(server, 2), timeout=20)
    assert (await _rep(http, server)) == {"N": 2, "replicas": ["server-1", "server-2"]}

    _write(path, deep_merge(data, {"replicas": {"count": 4}}))
    await eventually(lambda: _all_up(server, 4), timeout=20)
    assert server.config.replicas.count == 4
    rep = await _rep(http, server)
    assert rep["N"] == 4
    assert rep["replicas"][:2] == ["server-1", "server-2"]
    assert len(set(rep["replicas"])) == 4
    assert len(await backend.list()) == 4
    assert len(pids_of_children(os.getpid())) == 4
    assert server.pool.ring.replicas == frozenset({1, 2, 3, 4})
    pids = {slot: backend.pid(r.handle) for slot, r in server.pool.replicas.items() if r.handle}
    # Only the count changed, so nothing is reported as needing a restart.
    assert _count(caplog, RESTART_ONLY) == 0

    _write(path, deep_merge(data, {"replicas": {"count": 1}}))
    await eventually(lambda: len(server.pool) == 1, timeout=20)
    assert server.config.replicas.count == 1
    # The longest-standing replica stays; the three newer ones are stopped.
    assert list(server.pool.replicas) == [1]
    assert (await _rep(http, server)) == {"N": 1, "replicas": ["server-1"]}
    await eventually(lambda: not any(pid_alive(pids[s]) for s in (2, 3, 4)), timeout=10)
    assert pid_alive(pids[1])
    await eventually(lambda: _len_list(backend, 1), timeout=10)
    await eventually(lambda: server.pool.ring.replicas == frozenset({1}), timeout=5)
    async with http.get(url(server, "/home")) as resp:
        assert resp.status == 200
        assert (await resp.json())["message"] == "Hello from Server: server-1"
    assert pids_of_children(os.getpid()) == {pids[1]}


async def test_reload_changes_hashing_and_health(
    balancer: Any, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    server, path, data = await _start(balancer, tmp_path, {"replicas": {"count": 1}})
    await eventually(lambda: _all_up(server, 1), timeout=20)
    assert server.pool.ring.scheme.name == "default"

    data = deep_merge(data, {"hashing": {"function": "assignment"}})
    _write(path, data)
    await eventually(lambda: server.pool.ring.scheme.name == "assignment", timeout=10)
    assert server.config.hashing.function == "assignment"
    assert server.pool.ring.scheme.slots == 512
    assert server.pool.ring.scheme.virtual_nodes == 9
    assert server.pool.ring.replicas == frozenset({1})
    async with http.get(url(server, "/home"), headers={"X-Request-Id": "132574"}) as resp:
        assert resp.status == 200

    assert server.config.health.interval == 0.5
    data = deep_merge(data, {"health": {"interval": 0.7, "unhealthy_threshold": 5}})
    _write(path, data)
    await eventually(lambda: server.config.health.interval == 0.7, timeout=10)
    assert server.config.health.unhealthy_threshold == 5
    assert server.config.hashing.function == "assignment"  # earlier edit kept

    data = deep_merge(data, {"proxy": {"retries": 0}})
    _write(path, data)
    await eventually(lambda: server.config.proxy.retries == 0, timeout=10)
    assert _count(caplog, RESTART_ONLY) == 0
    assert _count(caplog, REJECTED) == 0


async def test_reload_rejects_invalid_edits_and_keeps_running_config(
    balancer: Any, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    server, path, data = await _start(balancer, tmp_path, {"replicas": {"count": 1}})
    await eventually(lambda: _all_up(server, 1), timeout=20)
    running = server.config

    bad_edits: list[tuple[Any, str]] = [
        (deep_merge(data, {"replicas": {"count": 3, "bogus_key": 1}}), "replicas.bogus_key"),
        (deep_merge(data, {"replicas": {"count": -1}}), "replicas.count"),
        ("replicas: [count: 3\n  health: {", "not valid YAML"),
        ([1, 2, 3], "top level must be a mapping"),
        (deep_merge(data, {"health": {"backoff_initial": 5, "backoff_max": 1}}), "backoff_max"),
    ]
    for i, (bad, named) in enumerate(bad_edits, start=1):
        _write(path, bad)
        await eventually(lambda i=i: _count(caplog, REJECTED) >= i, timeout=10)
        message = [r for r in caplog.records if REJECTED in r.getMessage()][-1]
        assert message.levelno == logging.ERROR
        assert named in message.getMessage()
        assert str(path) in message.getMessage()
        assert server.config is running
        assert len(server.pool) == 1
    assert (await _rep(http, server)) == {"N": 1, "replicas": ["server-1"]}

    # A file that disappears for a while is not an edit.
    path.unlink()
    await eventually(lambda: True, timeout=1)
    assert server.config is running

    # A later valid edit is still applied.
    _write(path, deep_merge(data, {"replicas": {"count": 2}}))
    await eventually(lambda: _all_up(server, 2), timeout=20)
    assert server.config.replicas.count == 2
    assert (await _rep(http, server))["N"] == 2
    assert _count(caplog, REJECTED) == len(bad_edits)


async def test_reload_restart_only_change_warns_and_keeps_old_value(
    balancer: Any, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    server, path, data = await _start(balancer, tmp_path, {"replicas": {"count": 1}})
    await eventually(lambda: _all_up(server, 1), timeout=20)
    port = server.port
    assert server.config.listen.port == 0

    # listen.port needs a restart; health.interval in the same edit applies at once.
    _write(path, deep_merge(data, {"listen": {"port": 5999}, "health": {"interval": 0.3}}))
    await eventually(lambda: _count(caplog, RESTART_ONLY) >= 1, timeout=10)
    warning = next(r for r in caplog.records if RESTART_ONLY in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert "listen.port" in warning.getMessage()
    await eventually(lambda: server.config.health.interval == 0.3, timeout=10)
    assert server.config.listen.port == 0
    assert server.port == port
    assert (await _rep(http, server))["N"] == 1
    assert _count(caplog, REJECTED) == 0


async def test_edit_made_while_balancer_starts_is_applied(balancer: Any, tmp_path: Path) -> None:
    overrides = deep_merge(RELOAD, {"replicas": {"count": 1}})
    data = deep_merge(TEST_CONFIG, overrides)
    path = tmp_path / "config.yaml"
    _write(path, data)
    starting = asyncio.ensure_future(balancer(overrides, config_path=path))
    # Startup waits for the first replica; edit the file meanwhile.
    await asyncio.sleep(0.1)
    assert not starting.done()
    _write(path, deep_merge(data, {"health": {"interval": 0.9}}))
    server = await asyncio.wait_for(starting, 30)
    await eventually(lambda: server.config.health.interval == 0.9, timeout=10)


async def test_command_line_overrides_survive_a_reload(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # Started as `lbproxy run --replicas 2` from a file that says 1.
    data = deep_merge(TEST_CONFIG, deep_merge(RELOAD, {"replicas": {"count": 1}}))
    path = tmp_path / "config.yaml"
    _write(path, data)
    overrides = {"replicas.count": 2}
    server = Server(with_overrides(parse_config(data), **overrides), path, overrides)
    await server.startup()
    try:
        await eventually(lambda: _all_up(server, 2), timeout=20)
        # An edit of another field is applied; the count stays the command line's, not 1.
        _write(path, deep_merge(data, {"health": {"interval": 0.3}}))
        await eventually(lambda: server.config.health.interval == 0.3, timeout=10)
        await asyncio.sleep(0.5)
        assert server.config.replicas.count == 2
        assert (await _rep(http, server))["N"] == 2
        assert _all_up(server, 2)
    finally:
        await server.shutdown()


# -- files caught mid-save -----------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n\n", "# all commented out\n"], ids=repr)
async def test_empty_file_is_an_invalid_edit(
    balancer: Any,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy")
    server, path, data = await _start(balancer, tmp_path, {"replicas": {"count": 1}})
    await eventually(lambda: _all_up(server, 1), timeout=20)
    running = server.config

    path.write_text(content)  # in place, as an editor truncating the file first does
    await eventually(lambda: _count(caplog, REJECTED) >= 1, timeout=10)
    message = next(r for r in caplog.records if REJECTED in r.getMessage())
    assert message.levelno == logging.ERROR
    assert "the file is empty" in message.getMessage()
    assert str(path) in message.getMessage()
    assert server.config is running
    assert (await _rep(http, server)) == {"N": 1, "replicas": ["server-1"]}
    assert len(server.supervisor.start_attempts) == 1  # nothing scaled, nothing started

    # Once written whole again, an edit applies as usual.
    _write(path, deep_merge(data, {"replicas": {"count": 2}}))
    await eventually(lambda: _all_up(server, 2), timeout=20)


async def test_a_file_being_written_is_applied_only_once_whole(
    balancer: Any, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An editor saving in place: the file is emptied, then holds only its first section
    (valid YAML, which alone would mean 3 replicas), then all of it. Each state lasts longer
    than the watcher's poll, so a watcher that applies what it reads would apply them."""
    caplog.set_level(logging.INFO, logger="lbproxy")
    server, path, data = await _start(
        balancer, tmp_path, {"replicas": {"count": 1}, "reload": {"interval": 0.1}}
    )
    await eventually(lambda: _all_up(server, 1), timeout=20)
    final = deep_merge(data, {"health": {"interval": 0.7}})
    text = yaml.safe_dump(final, sort_keys=False)
    head = text[: text.index("replicas:")]  # listen: and admin: only, without the count
    assert yaml.safe_load(head) and "count" not in head
    hold = SETTLE * 0.6  # longer than the poll interval, shorter than the settling wait

    with path.open("r+") as f:
        f.truncate(0)
        f.flush()
        await asyncio.sleep(hold)
        f.write(head)
        f.flush()
        await asyncio.sleep(hold)
        f.write(text[len(head) :])
    await eventually(lambda: server.config.health.interval == 0.7, timeout=10)
    # Only the whole file was applied: the count never moved, no replica was started.
    assert server.config.replicas.count == 1
    assert len(server.supervisor.start_attempts) == 1
    assert _count(caplog, REJECTED) == 0
    assert _count(caplog, "changed; applying") == 1
    assert (await _rep(http, server)) == {"N": 1, "replicas": ["server-1"]}


async def test_reload_changes_weights_and_balance_factor(
    balancer: Any,
    upstream: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    static = [
        {"hostname": name, "address": await upstream({"/{tail:.*}": ok})}
        for name in ("w1", "w2", "w3")
    ]
    server, path, data = await _start(
        balancer, tmp_path, {"replicas": {"backend": "static", "static": static}}
    )
    await eventually(lambda: server.pool.ring.replicas == frozenset({1, 2, 3}), timeout=20)
    assert server.pool.ring.weights == {1: 1000, 2: 1000, 3: 1000} and server.pool.bound is None
    caplog.set_level(logging.INFO, logger="lbproxy")

    # A static entry's weight, the by-name map and the factor: all applied without a restart.
    static[0] = {**static[0], "weight": 2}
    data = deep_merge(
        data,
        {
            "replicas": {"static": static, "weights": {"w3": 0.5}},
            "hashing": {"balance_factor": 1.5},
        },
    )
    _write(path, data)
    await eventually(lambda: server.pool.ring.weights == {1: 2000, 2: 1000, 3: 500}, timeout=10)
    assert [r.weight for r in server.pool.replicas.values()] == [2.0, 1.0, 0.5]
    shares = server.pool.ring.shares()
    assert shares[1] == pytest.approx(2 / 3.5, abs=1e-3)
    assert server.pool.bound is not None and server.pool.bound.cap(1, 34) == 30  # 1.5 x 35 x 4/7
    assert _count(caplog, RESTART_ONLY) == 0

    # An address change is not a weight change: it waits for a restart.
    static[1] = {**static[1], "address": "127.0.0.1:1"}
    _write(path, deep_merge(data, {"replicas": {"static": static}}))
    await eventually(lambda: _count(caplog, RESTART_ONLY) == 1, timeout=10)
    assert server.config.replicas.static[1].address != "127.0.0.1:1"
