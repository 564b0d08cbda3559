"""The bench harness end to end, briefly: lbproxy alone (and direct) under wrk for a second,
and the memory part with small sizes. ``make bench`` runs the real thing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--no-install", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    workdir = result["workdir"]
    assert not Path(workdir).exists()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            assert workdir.encode() not in cmdline, f"left running: {cmdline!r}"
    return result


def test_memory_part_streams_and_holds_connections(tmp_path: Path) -> None:
    result = bench(tmp_path, "--skip-load", "--transfer-mib", "16", "--idle", "100")
    memory = {m["scenario"]: m for m in result["memory"]}
    assert set(memory) == {"upload 16 MiB", "download 16 MiB", "idle 100 connections"}
    assert memory["upload 16 MiB"]["detail"].startswith(f"{16 << 20} bytes received upstream")
    assert memory["download 16 MiB"]["detail"].startswith(f"{16 << 20} bytes received")
    assert memory["idle 100 connections"]["detail"].startswith("100 connections held open")
    for m in memory.values():
        assert m["baseline_kib"] > 10_000  # a Python process with aiohttp loaded
        assert m["peak_kib"] >= m["baseline_kib"]
    assert len(result["targets"]) == 6


@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk is not installed (make bench installs Debian's package 'wrk')",
)
def test_load_part_against_lbproxy_and_direct(tmp_path: Path) -> None:
    result = bench(
        tmp_path,
        "--skip-memory",
        "--targets",
        "direct,lbproxy,lbproxy-2w",
        "--duration",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "0",
    )
    rows = {r["target"]: r for r in result["summary"]}
    assert set(rows) == {"direct", "lbproxy", "lbproxy-2w"}
    # The workers' CPU is counted with their supervisor's (they are its children).
    assert rows["lbproxy-2w"]["errors"] == 0 and rows["lbproxy-2w"]["cpu_us_per_request"] > 0
    lb = rows["lbproxy"]
    assert lb["rps"] > 0
    assert lb["errors"] == 0
    assert lb["cpu_us_per_request"] > 0
    assert lb["vs_direct"] > 0
    assert lb["added_p99_ms"] is not None
    assert rows["direct"]["cpu_us_per_request"] is None
    assert {v["verdict"] for v in result["targets"]} <= {"PASS", "FAIL", "n/a"}
