"""Starting, observing and stopping a real balancer process, as the experiments do."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from conftest import pid_alive
from experiments._balancer import (
    ExperimentError,
    balancer_config,
    descendants,
    environ,
    running_balancer,
)
from lbproxy import parse_config


def test_generated_config_is_valid_and_ephemeral():
    data = balancer_config("modulo", 4, "process", {"health": {"interval": 0.5}})
    config = parse_config(data)
    assert config.listen.port == 0 and config.listen.host == "127.0.0.1"
    assert config.replicas.count == 4 and config.hashing.function == "modulo"
    assert config.health.interval == 0.5 and not config.reload.enabled


def test_docker_backend_is_asked_for_in_the_config():
    # The Docker backend is not in this branch yet: only the generated config is checked.
    data = balancer_config("default", 3, "docker")
    assert data["replicas"] == {"count": 3, "backend": "docker"}
    assert yaml.safe_load(yaml.safe_dump(data)) == data


async def test_replicas_are_found_killed_and_everything_stops(tmp_path: Path):
    async with running_balancer(tmp_path, "default", 2) as b:
        assert await b.rep() == ["server-1", "server-2"]
        running = await b.replicas.running()
        assert set(running) == {"server-1", "server-2"}
        pids = [int(p) for p in running.values()]
        assert all(p in descendants(b.proc.pid) for p in pids)
        assert environ(pids[0])["SERVER_ID"] in running
        await b.replicas.kill("server-1")
        for _ in range(400):
            names = await b.rep()
            if "server-1" not in names:
                break
            await asyncio.sleep(0.025)
        assert "server-1" not in names and len(names) == 2
        balancer_pid = b.proc.pid
        pids = [int(p) for p in (await b.replicas.running()).values()]
    assert not pid_alive(balancer_pid)
    assert not any(pid_alive(p) for p in pids)
    assert not pid_alive(int(running["server-1"]))
    assert os.listdir(tmp_path)  # its config and log are kept for inspection


async def test_a_balancer_that_cannot_start_is_reported(tmp_path: Path):
    with pytest.raises(ExperimentError, match="invalid configuration"):
        async with running_balancer(tmp_path, "default", 1, overrides={"proxy": {"retries": -1}}):
            pass
