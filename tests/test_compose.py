"""`make up` / `make down` for real: the compose stack, its balancer container and the replica
containers it creates, side by side with anything else on the engine (own names, port, network).

Skipped (with the reason printed) where no Docker engine is reachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, docker_cleanup, docker_names, docker_ps, free_port, load_tool

pytestmark = pytest.mark.usefixtures("docker_images")


def get(port: int, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, json.load(resp)


def wait_until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout}s")


def make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", target], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def compose_containers(project: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def published(project: str, port: str) -> list[tuple[str, str]]:
    """(host address, host port) pairs that the project's balancer publishes ``port`` on."""
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            "{{json .NetworkSettings.Ports}}",
            *compose_containers(project),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(b["HostIp"], b["HostPort"]) for b in json.loads(out)[port] or []]


def network_exists(name: str) -> bool:
    return (
        subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode == 0
    )


def test_make_up_serves_from_containers_and_make_down_leaves_nothing(tmp_path: Path) -> None:
    prefix = docker_names()
    port, admin_port = free_port(), free_port()
    network = f"{prefix}-net"
    config = {
        "replicas": {"count": 2, "name_prefix": prefix},
        "health": {"interval": 0.5},
        "reload": {"interval": 0.2},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": prefix,
        "LBPROXY_PORT": str(port),
        "LBPROXY_ADMIN_PORT": str(admin_port),
        "LBPROXY_NETWORK": network,
        "LBPROXY_INSTANCE": prefix,
        "LBPROXY_CONFIG_DIR": str(tmp_path),
    }
    try:
        started = time.monotonic()
        up = make("up", env)
        print(f"\nmake up (images built already): {time.monotonic() - started:.1f}s")
        assert up.returncode == 0, up.stdout + up.stderr
        # `make up` returned: the port answers with N replicas, all real running containers.
        status, rep = get(port, "/rep")
        assert status == 200
        assert rep["message"]["N"] == 2
        assert sorted(rep["message"]["replicas"]) == sorted(docker_ps(prefix))
        status, home = get(port, "/home")
        assert status == 200
        assert home["message"].removeprefix("Hello from Server: ") in docker_ps(prefix)
        assert len(compose_containers(prefix)) == 1  # only the balancer is a compose service
        # The admin listener is published on the host's loopback only.
        status, report = get(admin_port, "/status")
        assert status == 200 and report["message"]["N"] == 2
        assert report["message"]["backend"] == "docker"
        assert published(prefix, "5001/tcp") == [("127.0.0.1", str(admin_port))]
        # The dashboard ships in the image, and /metrics renders there.
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/", timeout=5) as resp:
            assert b'src="/dashboard.js"' in resp.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
            assert b"lbproxy_replica_up{" in resp.read()
        # /kill kills a container as a crash would; its slot gets a new one.
        victim = rep["message"]["replicas"][0]
        kill = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/kill",
            data=json.dumps({"n": 1, "hostnames": [victim]}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(kill, timeout=10) as resp:
            assert json.load(resp)["message"]["killed"] == [victim]
        wait_until(
            lambda: (
                victim not in docker_ps(prefix)
                and len(docker_ps(prefix)) == 2
                and victim not in get(port, "/rep")[1]["message"]["replicas"]
            ),
            timeout=60,
        )

        # Editing the mounted config.yaml reconfigures the balancer in its container.
        config["replicas"]["count"] = 3
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        wait_until(lambda: get(port, "/rep")[1]["message"]["N"] == 3, timeout=60)
        wait_until(lambda: len(docker_ps(prefix)) == 3, timeout=60)
    finally:
        down = make("down", env)
        leftovers = docker_ps(prefix, running=False), compose_containers(prefix)
        docker_cleanup(prefix, network)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers == ({}, [])
    assert not network_exists(network)


restart_gap = load_tool("restart_gap")


def started_at(container: str) -> tuple[str, str]:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], out[1]


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=120)


class Stack:
    """A compose stack of the test's own (project, port, network, instance, config folder)."""

    def __init__(self, tmp_path: Path, count: int) -> None:
        self.prefix = docker_names()
        self.port = free_port()
        self.network = f"{self.prefix}-net"
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"replicas": {"count": count, "name_prefix": self.prefix}}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.prefix,
            "LBPROXY_PORT": str(self.port),
            "LBPROXY_NETWORK": self.network,
            "LBPROXY_INSTANCE": self.prefix,
            "LBPROXY_CONFIG_DIR": str(tmp_path),
            # Waiting for something the stack will never show fails in a minute, not three.
            "UP_TIMEOUT": "60",
        }

    def make(self, target: str) -> subprocess.CompletedProcess[str]:
        return make(target, self.env)

    def balancer(self) -> str:
        return restart_gap.compose_container(self.prefix, "lb")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack to `make up`; `make down` at the end must leave nothing behind."""
    s = Stack(tmp_path, count=2)
    try:
        yield s
    finally:
        down = s.make("down")
        leftovers = docker_ps(s.prefix, running=False), compose_containers(s.prefix)
        docker_cleanup(s.prefix, s.network)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers == ({}, [])
    assert not network_exists(s.network)


@pytest.mark.timeout(600)
def test_make_up_on_a_running_stack_returns_at_once_whatever_n_is(stack: Stack) -> None:
    up = stack.make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    # N now differs from config.yaml's count.
    request = urllib.request.Request(f"{stack.url}/add", data=b'{"n": 1}', method="POST")
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert json.load(resp)["message"]["N"] == 3
    lb = stack.balancer()
    balancer = started_at(lb)
    replicas = docker_ps(stack.prefix)
    assert len(replicas) == 3

    # `make up` again: it returns as soon as it sees the stack serving, whatever N is, and
    # leaves the balancer container as it is.
    began = time.monotonic()
    again = stack.make("up")
    print(f"\nsecond make up: {time.monotonic() - began:.1f}s")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "with 3 replicas" in again.stdout
    assert started_at(lb) == balancer
    assert docker_ps(stack.prefix) == replicas


@pytest.mark.timeout(600)
def test_a_balancer_restart_keeps_its_replicas_serving(stack: Stack) -> None:
    up = stack.make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    lb = stack.balancer()
    replicas = docker_ps(stack.prefix)
    assert len(replicas) == 2

    # Restarting the balancer keeps its replicas: the very same containers serve on.
    for action in ("restart", "kill-start"):
        report = restart_gap.measure(stack.url, lb, action, rate=100.0, before=1.0, after=1.0)
        print(f"\ndocker {action} of the balancer: {report.text()}")
        assert report.served_again
        assert docker_ps(stack.prefix) == replicas
        assert get(stack.port, "/rep")[1]["message"]["N"] == 2

    # A replica that dies while no balancer runs is replaced in its slot on adoption.
    docker("stop", lb)
    victim = sorted(replicas)[0]
    docker("kill", victim)
    docker("start", lb)
    wait_until(lambda: set(docker_ps(stack.prefix)) == set(replicas), timeout=60)
    assert docker_ps(stack.prefix)[victim] != replicas[victim]  # a new container, same name
    wait_until(lambda: get(stack.port, "/rep")[1]["message"]["N"] == 2, timeout=60)
    status, home = get(stack.port, "/home")
    assert status == 200
    assert home["message"].removeprefix("Hello from Server: ") in replicas
