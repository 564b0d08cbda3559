"""``lbproxy status``: the dashboard's table in the terminal, from a real admin listener."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from conftest import admin_url, url
from lbproxy._status_table import COLUMNS, render

TOKEN = "s" * 32


async def run_status(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lbproxy",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_status_prints_every_replica_from_the_admin_port(balancer, http):
    server = await balancer({"replicas": {"count": 3}, "admin": {"token": TOKEN}})
    for i in range(30):
        async with http.get(url(server, "/home"), headers={"X-Request-Id": f"k{i}"}) as r:
            assert r.status == 200
    code, out, err = await run_status(
        "--url", admin_url(server, ""), env={"LBPROXY_ADMIN_TOKEN": TOKEN}
    )
    assert code == 0, err
    head, columns, *rows = out.splitlines()
    assert head.startswith("lbproxy ") and "3 replicas (process backend" in head
    assert columns.split() == list(COLUMNS)
    assert len(rows) == 3
    total = 0
    for row, (slot, replica) in zip(rows, sorted(server.pool.replicas.items()), strict=True):
        cells = row.split()
        assert cells[:4] == [replica.hostname, str(slot), "up", replica.address]
        assert cells[5] == "0"  # in flight
        total += int(cells[6])
        assert cells[-2] == "0"  # restarts
        assert cells[-1].endswith("%")  # its share of the ring
    assert total == 30

    code, out, _ = await run_status("--url", admin_url(server, ""), "--json")
    assert code == 0 and json.loads(out)["message"]["N"] == 3


async def test_status_says_why_it_cannot_read():
    code, out, err = await run_status("--url", "http://127.0.0.1:9", "--timeout", "2")
    assert code == 1 and out == ""
    assert "cannot read http://127.0.0.1:9/status" in err


def test_render_shows_figures_and_dashes():
    report = {
        "N": 2,
        "version": "0.1.0",
        "backend": "docker",
        "hashing": "default",
        "uptime_s": 3725,
        "config_reloads": 1,
        "draining": 0,
        "ring": {"shares": {"1": 0.5, "2": 0.5}},
        "replicas": [
            {
                "hostname": "server-1", "slot": 1, "state": "up", "address": "10.0.0.2:5000",
                "in_flight": 2, "requests": 1000, "restarts": 1, "ejected": False,
                "rate": 12.34, "error_rate": 0.015, "p50": 0.0021, "p99": 1.5,
            },
            {
                "hostname": "server-x", "slot": 2, "state": "starting", "address": None,
                "in_flight": 0, "requests": 0, "restarts": 3, "ejected": False,
                "rate": None, "error_rate": None, "p50": None, "p99": None,
            },
        ],
    }  # fmt: skip
    lines = render(report).splitlines()
    assert lines[0] == (
        "lbproxy 0.1.0: 2 replicas (docker backend, default hashing), up 1h02m, "
        "1 config reload, 0 draining"
    )
    assert lines[2].split() == [
        "server-1", "1", "up", "10.0.0.2:5000", "12.3", "2", "1000", "1.5", "2.1ms", "1.50s",
        "1", "50.0%",
    ]  # fmt: skip
    assert lines[3].split() == [
        "server-x", "2", "starting", "-", "-", "0", "0", "-", "-", "-", "3", "-",
    ]  # fmt: skip


def test_render_counts_the_workers_when_there_are_any():
    report = {
        "N": 0,
        "uptime_s": 5,
        "replicas": [],
        "workers": [
            {"worker": 1, "pid": 10, "serving": True, "restarts": 2, "view": 7},
            {"worker": 2, "pid": 11, "serving": False, "restarts": 1, "view": 6},
        ],
    }
    assert (
        render(report)
        .splitlines()[0]
        .endswith("0 draining; 1/2 workers serving, 3 worker restarts")
    )
    assert "workers" not in render({**report, "workers": []}).splitlines()[0]
