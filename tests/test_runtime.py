"""The balancer raises its own open-files limit: each client and upstream connection is a file."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import TEST_CONFIG, deep_merge, free_port, wait_for_port


def _lower_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def _limits(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    raise AssertionError("no open-files line")


def test_balancer_raises_its_soft_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            deep_merge(TEST_CONFIG, {"listen": {"port": port}, "replicas": {"count": 1}})
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbproxy", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_lower_soft_limit,
    )
    try:
        wait_for_port(port, proc=proc)
        soft, hard = _limits(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)
    _, expected = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == ("unlimited" if expected == resource.RLIM_INFINITY else str(expected))
    assert soft != "256"
    assert soft == hard or hard == "unlimited"
