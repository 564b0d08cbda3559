"""lbproxy on a real (single-node) Docker swarm, deployed as `make swarm-up` deploys it.

The engine is made a swarm for the session if it is in none, and leaves it afterwards; a swarm
the engine already belongs to is used as it is and never left. Every name (services, network)
is this session's own and the port a free one, so a `make swarm-up` stack is not touched.
Skipped, with the reason, where the engine cannot run swarm mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from conftest import REPO, docker_cli, docker_names, eventually, free_port

PY = sys.executable
SOCKET = "/var/run/docker.sock"
#: Swarm's label on every task container.
SERVICE_LABEL = "com.docker.swarm.service.name"
#: The stack's admin token (`make swarm-up` hands it to the balancers as a Swarm secret).
TOKEN = "swarm-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def swarm_state() -> tuple[str, bool]:
    out = subprocess.run(
        ["docker", "info", "--format", "{{json .Swarm}}"], capture_output=True, text=True
    ).stdout
    swarm = json.loads(out or "{}")
    return swarm.get("LocalNodeState") or "inactive", bool(swarm.get("ControlAvailable"))


@pytest.fixture(scope="session")
def swarm(docker_engine: str, docker_images: None) -> Iterator[None]:
    state, manager = swarm_state()
    created = False
    # `docker swarm init` makes this network and `leave` keeps it: ours to remove too.
    had_gwbridge = network_exists("docker_gwbridge")
    if state == "inactive":
        done = subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"swarm tests skipped: the engine cannot run swarm mode ({done.stderr})")
        created = True
    elif state != "active":
        pytest.skip(f"swarm tests skipped: the engine's swarm state is {state!r}")
    elif not manager:
        pytest.skip("swarm tests skipped: the engine is a swarm worker, not a manager")
    yield
    if created:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
        if not had_gwbridge:
            subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True)


def network_exists(name: str) -> bool:
    return (
        subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode == 0
    )


@dataclass
class Stack:
    balancer: str
    service: str
    network: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment `make swarm-up`/`swarm-down` take this stack's names from."""
        return {
            **os.environ,
            "LBPROXY_SWARM_BALANCER": self.balancer,
            "LBPROXY_SWARM_SERVICE": self.service,
            "LBPROXY_SWARM_NETWORK": self.network,
            "LBPROXY_PORT": str(self.port),
            "LBPROXY_ADMIN_TOKEN": TOKEN,
        }

    def tool(self, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["--balancer", self.balancer, "--service", self.service]
        args += ["--network", self.network, "--port", str(self.port), *extra]
        return subprocess.run(
            [PY, str(REPO / "tools" / "swarm.py"), command, *args],
            capture_output=True,
            text=True,
            timeout=240,
            env=self.env(),
        )


@pytest.fixture(scope="module")
def stack(swarm: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A deployed stack of 3 replicas (tools/swarm.py up, what `make swarm-up` runs)."""
    name = docker_names()
    stack = Stack(f"{name}-lb", f"{name}-rep", f"{name}-ov", free_port())
    config_dir = tmp_path_factory.mktemp("swarm")
    (config_dir / "config.yaml").write_text("replicas:\n  count: 3\n")
    try:
        up = stack.tool("up", "--config-dir", str(config_dir), "--timeout", "90")
        assert up.returncode == 0, up.stdout + up.stderr
        yield stack
    finally:
        stack.tool("down")


async def owners(url: str, keys: list[str]) -> dict[str, str]:
    """key -> the replica that answers ``GET /home`` for it through the balancer at ``url``."""
    out: dict[str, str] = {}
    limit = asyncio.Semaphore(16)

    async def one(session: aiohttp.ClientSession, key: str) -> None:
        async with limit, session.get(f"{url}/home", headers={"X-Request-Id": key}) as r:
            assert r.status == 200, await r.text()
            out[key] = (await r.json())["message"].removeprefix("Hello from Server: ")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, k) for k in keys))
    return out


async def admin(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=AUTH) as r,
    ):
        return r.status, (await r.json())["message"]


async def rep(url: str) -> list[str]:
    status, message = await admin("GET", f"{url}/rep")
    assert status == 200
    return sorted(message["replicas"])


async def service_replicas(service: str) -> int:
    out = await docker_cli(
        "service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", service
    )
    return int(out)


async def task_container(service: str, slot: int | None = None) -> str:
    """The running container of the service's task in ``slot`` (a global service: its one)."""
    out = await docker_cli(
        "ps", "--no-trunc", "--filter", f"label={SERVICE_LABEL}={service}",
        "--format", '{{.ID}} {{.Label "com.docker.swarm.task.name"}}',
    )  # fmt: skip
    for line in out.splitlines():
        cid, task = line.split()
        if slot is None or task.startswith(f"{service}.{slot}."):
            return cid
    raise AssertionError(f"no running task container of {service} (slot {slot})")


def keys(n: int) -> list[str]:
    return [str(100_000 + 7919 * i % 900_000) for i in range(n)]


def test_swarm_up_refuses_outside_a_swarm_naming_docker_swarm_init(docker_engine: str) -> None:
    # First in this module: the session's swarm (below) does not exist yet.
    if swarm_state()[0] != "inactive":
        pytest.skip("the engine belongs to a swarm, which is not ours to leave to show this")
    done = subprocess.run(
        ["make", "--no-print-directory", "swarm-up"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "docker swarm init" in done.stderr, done.stderr
    assert swarm_state()[0] == "inactive"


async def test_add_and_rm_scale_the_replica_service(stack: Stack) -> None:
    names = [f"{stack.service}-{s}" for s in (1, 2, 3)]
    assert await rep(stack.url) == names

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.url}/add", json={"n": 1}) as r,
    ):
        assert r.status == 401, "the token reached the balancer (as a secret)"
    status, message = await admin("POST", f"{stack.url}/add", {"n": 2})
    assert status == 200, message
    assert sorted(message["replicas"]) == [*names, f"{stack.service}-4", f"{stack.service}-5"]
    assert await service_replicas(stack.service) == 5
    served = set((await owners(stack.url, keys(200))).values())
    assert served == set(message["replicas"]), "every replica /add answered with serves"

    # Names other than the slots' are refused, changing nothing.
    status, message = await admin("POST", f"{stack.url}/add", {"n": 1, "hostnames": ["web-1"]})
    assert status == 400 and f"{stack.service}-6" in message, message
    status, message = await admin(
        "POST", f"{stack.url}/add", {"n": 1, "hostnames": [f"{stack.service}-6"]}
    )
    assert status == 200 and f"{stack.service}-6" in message["replicas"], message
    # Swarm, not the balancer, picks which tasks a scale-down removes: named /rm is refused.
    status, message = await admin(
        "DELETE", f"{stack.url}/rm", {"n": 1, "hostnames": [f"{stack.service}-1"]}
    )
    assert status == 400 and "Swarm chooses" in message, message
    status, message = await admin("DELETE", f"{stack.url}/rm", {"n": 4, "hostnames": ["x1"] * 5})
    assert status == 400 and "more than removable" in message, message
    assert await service_replicas(stack.service) == 6

    status, message = await admin("DELETE", f"{stack.url}/rm", {"n": 3})
    assert status == 200 and message["N"] == 3, message
    assert await service_replicas(stack.service) == 3
    left = set(message["replicas"])
    # /rm answers once Swarm has removed them: only those left serve.
    assert set((await owners(stack.url, keys(200))).values()) == left
    # Back to slots 1-3 for the next tests (the scale-up fills the lowest free slots).
    await admin("DELETE", f"{stack.url}/rm", {"n": 3})
    status, message = await admin("POST", f"{stack.url}/add", {"n": 3})
    assert status == 200 and sorted(message["replicas"]) == names, message


async def test_a_killed_task_is_healed_in_its_slot_and_the_ring_follows(stack: Stack) -> None:
    ids = keys(300)
    before = await owners(stack.url, ids)
    victim = f"{stack.service}-2"
    its = [k for k, name in before.items() if name == victim]
    assert its, "slot 2 owns some of the keys"
    container = await task_container(stack.service, 2)
    await docker_cli("kill", container)

    async def moved() -> bool:
        now = await owners(stack.url, its)
        return victim not in now.values()

    # Its keys go to the others at once (every request still answered: owners asserts 200),
    await eventually(moved, timeout=10)
    others = [k for k in ids if k not in its]
    assert await owners(stack.url, others) == {k: before[k] for k in others}

    # and come back to slot 2 once Swarm has restarted its task there.
    async def healed() -> bool:
        return await owners(stack.url, ids) == before

    await eventually(healed, timeout=30, interval=0.2)
    assert await task_container(stack.service, 2) != container


async def test_a_rolling_update_fails_no_request_and_keeps_every_key_on_its_slot(
    stack: Stack,
) -> None:
    ids = keys(300)
    before = await owners(stack.url, ids)
    old = {await task_container(stack.service, s) for s in (1, 2, 3)}
    outcomes: list[int | str] = []
    done = asyncio.Event()

    async def load() -> None:
        async with aiohttp.ClientSession() as session:
            for i in range(1_000_000):
                if done.is_set():
                    return
                headers = {"X-Request-Id": ids[i % len(ids)]}
                try:
                    async with session.get(f"{stack.url}/home", headers=headers) as r:
                        await r.read()
                        outcomes.append(r.status)
                except aiohttp.ClientError as e:
                    outcomes.append(type(e).__name__)

    clients = [asyncio.create_task(load()) for _ in range(4)]
    try:
        # Every task replaced, one slot at a time, the new one started before the old stops.
        await docker_cli("service", "update", "--force", "--detach=false", "-q", stack.service)
    finally:
        done.set()
        await asyncio.gather(*clients)
    assert outcomes and all(o == 200 for o in outcomes), sorted(set(map(str, outcomes)))
    assert await owners(stack.url, ids) == before
    assert not old & {await task_container(stack.service, s) for s in (1, 2, 3)}


async def test_a_second_balancer_on_the_overlay_agrees_with_the_deployed_one(
    stack: Stack,
) -> None:
    port = free_port()
    name = f"{stack.balancer}-2"
    await docker_cli(
        "run", "-d", "--name", name, "--network", stack.network,
        "-p", f"127.0.0.1:{port}:5000", "-v", f"{SOCKET}:{SOCKET}",
        "-e", f"LBPROXY_ADMIN_TOKEN={TOKEN}",
        "lbproxy/lb:latest", "run", "--backend", "swarm",
        f"--set=replicas.swarm.service={stack.service}",
        f"--set=replicas.swarm.network={stack.network}",
    )  # fmt: skip
    second = f"http://127.0.0.1:{port}"
    try:

        async def answers() -> bool:
            try:
                return len(await rep(second)) == 3
            except (aiohttp.ClientError, AssertionError, ValueError):
                return False

        await eventually(answers, timeout=60, interval=0.2)
        ids = keys(1000)
        first_view = await owners(stack.url, ids)
        assert await owners(second, ids) == first_view
        assert len(set(first_view.values())) == 3

        # A change through either is followed by the other.
        status, message = await admin("POST", f"{second}/add", {"n": 1})
        assert status == 200 and message["N"] == 4, message

        async def agree(n: int) -> bool:
            both = await rep(stack.url), await rep(second)
            return both[0] == both[1] and len(both[0]) == n

        await eventually(lambda: agree(4), timeout=15, interval=0.1)
        assert await owners(second, ids) == await owners(stack.url, ids)
        status, message = await admin("DELETE", f"{stack.url}/rm", {"n": 1})
        assert status == 200 and message["N"] == 3, message
        await eventually(lambda: agree(3), timeout=15, interval=0.1)
        assert await owners(second, ids) == await owners(stack.url, ids)

        # Both at once: the loser of the race re-reads the spec and adds on top (3 + 1 + 1),
        # neither undoes the other's change.
        answers = await asyncio.gather(
            admin("POST", f"{stack.url}/add", {"n": 1}), admin("POST", f"{second}/add", {"n": 1})
        )
        assert [status for status, _ in answers] == [200, 200], answers
        await eventually(lambda: agree(5), timeout=15, interval=0.1)
        assert await service_replicas(stack.service) == 5
        answers = await asyncio.gather(
            admin("DELETE", f"{stack.url}/rm", {"n": 1}), admin("DELETE", f"{second}/rm", {"n": 1})
        )
        assert [status for status, _ in answers] == [200, 200], answers
        await eventually(lambda: agree(3), timeout=15, interval=0.1)
        assert await service_replicas(stack.service) == 3
        assert await owners(second, ids) == await owners(stack.url, ids)
    finally:
        await docker_cli("rm", "-f", name)


async def test_a_killed_balancer_task_is_restored_and_routes_as_before(stack: Stack) -> None:
    ids = keys(1000)
    before = await owners(stack.url, ids)
    container = await task_container(stack.balancer)
    await docker_cli("kill", container)

    async def restored() -> bool:
        try:
            return len(await rep(stack.url)) == 3 and len(await owners(stack.url, ids[:3])) == 3
        except (aiohttp.ClientError, AssertionError, ValueError):
            return False

    await eventually(restored, timeout=60, interval=0.2)
    assert await task_container(stack.balancer) != container
    assert await owners(stack.url, ids) == before


def test_make_swarm_down_leaves_nothing(stack: Stack) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "swarm-down"],
        cwd=REPO,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for kind, name in (
        ("service", stack.balancer),
        ("service", stack.service),
        ("network", stack.network),
    ):
        found = subprocess.run(["docker", kind, "inspect", name], capture_output=True)
        assert found.returncode != 0, f"{kind} {name} is still there"
    found = subprocess.run(
        ["docker", "secret", "inspect", f"{stack.balancer}-admin-token"], capture_output=True
    )
    assert found.returncode != 0, "the token's secret is still there"
    for service in (stack.balancer, stack.service):
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={SERVICE_LABEL}={service}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert not left, f"containers of {service} are still there"
