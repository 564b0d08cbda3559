"""The swarm backend's pure parts: which slots Swarm runs, which task serves a slot, the service
it creates, and when an engine cannot run it. The backend against a real swarm:
test_swarm_stack.py."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiohttp import web

from conftest import free_port
from lbproxy._config import parse_config
from lbproxy._errors import BackendError, ConfigError
from lbproxy.backends import make_backend
from lbproxy.backends._orchestrator import Orchestrator
from lbproxy.backends._swarm import (
    SLOT_NAME,
    SwarmBackend,
    created_key,
    desired_slots,
    health_script,
    pinned_image,
    replicated,
    service_spec,
    serving_by_slot,
    swarm_problem,
    task_of,
)

NET = "lbproxy-overlay"


def raw_task(
    task_id: str,
    slot: int,
    state: str = "running",
    desired: str = "running",
    created: str = "2026-12-01T07:00:00.5Z",
    ip: str | None = "10.0.1.5",
) -> dict[str, Any]:
    attachments = [
        {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.9/24"]},
    ]
    if ip:
        attachments.append({"Network": {"Spec": {"Name": NET}}, "Addresses": [f"{ip}/24"]})
    return {
        "ID": task_id,
        "Slot": slot,
        "DesiredState": desired,
        "CreatedAt": created,
        "Status": {"State": state, "Err": "task: non-zero exit (137)" if state == "failed" else ""},
        "NetworksAttachments": attachments,
    }


def tasks(*raws: dict[str, Any]) -> list[Any]:
    return [t for r in raws if (t := task_of(r, NET, 5000)) is not None]


def test_desired_slots_fill_the_lowest_free_slots_as_swarmkit_does() -> None:
    assert desired_slots(3, []) == {1, 2, 3}
    # Slot 2 was removed by a scale-down: a scale-up puts the new task back in slot 2.
    assert desired_slots(3, [1, 3]) == {1, 2, 3}
    assert desired_slots(4, [1, 3]) == {1, 2, 3, 4}
    # A scale-down under way: the extra slots serve until Swarm has removed them.
    assert desired_slots(2, [1, 2, 3]) == {1, 2, 3}
    assert desired_slots(0, []) == frozenset()


def test_task_address_is_the_one_on_the_replicas_network() -> None:
    task = task_of(raw_task("a", 2, ip="10.0.1.7"), NET, 5000)
    assert task is not None and task.address == "10.0.1.7:5000" and task.serving
    assert task_of(raw_task("b", 2, ip=None), NET, 5000).address is None  # type: ignore[union-attr]
    # A global service's task has no slot: not a replica.
    assert task_of({**raw_task("c", 1), "Slot": None}, NET, 5000) is None


def test_created_at_compares_despite_cut_trailing_zeros() -> None:
    # Docker writes 0-9 fraction digits: ".5" is later than ".12345", though "5" < "12345"
    # would not sort so as text with "Z" after it.
    assert created_key("2026-12-01T07:00:00.5Z") > created_key("2026-12-01T07:00:00.12345Z")
    assert created_key("2026-12-01T07:00:01Z") > created_key("2026-12-01T07:00:00.999999999Z")


def test_a_dead_task_serves_no_slot() -> None:
    serving = serving_by_slot(
        tasks(raw_task("a", 1), raw_task("b", 2, state="failed", desired="shutdown"))
    )
    assert set(serving) == {1}
    # Known dead from its container's event before the listing says so.
    assert serving_by_slot(tasks(raw_task("a", 1)), dead={"a"}) == {}
    # Running but on its way out (a scale-down chose it): no longer serving.
    assert serving_by_slot(tasks(raw_task("a", 1, desired="shutdown"))) == {}


def test_rolling_update_picks_the_newest_task_in_a_slot_whatever_the_order() -> None:
    old = raw_task("zzz", 1, created="2026-12-01T07:00:00.9Z", ip="10.0.1.5")
    new = raw_task("aaa", 1, created="2026-12-01T07:00:01.1Z", ip="10.0.1.6")
    for order in ((old, new), (new, old)):
        assert serving_by_slot(tasks(*order))[1].id == "aaa"
    # The same CreatedAt: the greater id, so every balancer still picks the same one.
    twin = raw_task("bbb", 1, created="2026-12-01T07:00:01.1Z", ip="10.0.1.8")
    for order in ((new, twin), (twin, new)):
        assert serving_by_slot(tasks(*order))[1].id == "bbb"


def test_service_spec_names_each_task_for_its_slot_and_never_pulls() -> None:
    config = parse_config({"replicas": {"backend": "swarm", "swarm": {"restart_delay": 2}}})
    spec = service_spec(config.replicas.swarm, "sha256:abc", 3, stop_timeout=5)
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == "sha256:abc"
    assert container["Hostname"] == SLOT_NAME
    assert f"SERVER_ID={SLOT_NAME}" in container["Env"]
    assert spec["TaskTemplate"]["RestartPolicy"]["Delay"] == 2_000_000_000
    assert spec["EndpointSpec"] == {"Mode": "dnsrr"}
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec["TaskTemplate"]["Networks"] == [{"Target": "lbproxy-overlay"}]


def test_swarm_problem_names_docker_swarm_init() -> None:
    problem = swarm_problem({"Swarm": {"LocalNodeState": "inactive"}})
    assert problem is not None and "docker swarm init" in problem
    assert "worker" in (swarm_problem({"Swarm": {"LocalNodeState": "active"}}) or "")
    assert swarm_problem({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}) is None


def test_make_backend_gives_an_orchestrator_for_swarm() -> None:
    config = parse_config(
        {"replicas": {"backend": "swarm", "count": 2, "swarm": {"service": "web"}}}
    )
    backend = make_backend(config)
    assert isinstance(backend, SwarmBackend) and isinstance(backend, Orchestrator)
    assert backend.name_of(4) == "web-4"


@pytest.mark.parametrize(
    ("swarm", "field"),
    [
        ({"service": "bad_name"}, "replicas.swarm.service"),
        ({"restart_delay": -1}, "replicas.swarm.restart_delay"),
        ({"poll_interval": 0}, "replicas.swarm.poll_interval"),
        ({"environment": {"SERVER_ID": "x"}}, "replicas.swarm.environment"),
        ({"replicas": 3}, "replicas.swarm.replicas"),
    ],
)
def test_bad_swarm_settings_name_their_field(swarm: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_config({"replicas": {"backend": "swarm", "swarm": swarm}})


async def test_the_tasks_health_check_passes_only_on_a_200() -> None:
    # The check Swarm runs in each task (bash in the replica image), against a real server.
    statuses = {"/heartbeat": 200, "/broken": 500}

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=statuses[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for path, passes in (("/heartbeat", True), ("/broken", False)):
            check = await asyncio.create_subprocess_exec(
                "bash", "-c", health_script(path), env={**os.environ, "PORT": str(port)}
            )
            assert (await check.wait() == 0) is passes, path
    finally:
        await runner.cleanup()
    # Nothing listening: fails too.
    check = await asyncio.create_subprocess_exec(
        "bash", "-c", health_script("/heartbeat"), env={**os.environ, "PORT": str(port)},
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await check.wait() != 0


def test_only_a_replicated_service_can_hold_the_replicas() -> None:
    service = {"ID": "x", "Spec": {"Name": "lb", "Mode": {"Global": {}}}}
    with pytest.raises(BackendError, match="not a replicated service"):
        replicated(service)
    ok = {"ID": "y", "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 0}}}}
    assert replicated(ok) is ok


def test_the_image_is_pinned_by_digest_or_else_by_id() -> None:
    local = {"Id": "sha256:abc", "RepoDigests": []}
    assert pinned_image(local) == "sha256:abc"
    pushed = {"Id": "sha256:abc", "RepoDigests": ["lbproxy/server@sha256:def"]}
    assert pinned_image(pushed) == "lbproxy/server@sha256:def"
