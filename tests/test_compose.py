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
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, docker_cleanup, docker_names, docker_ps, free_port

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
