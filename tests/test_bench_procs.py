"""The bench's process handling and /proc readings, on real processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bench.procs import (
    CLK_TCK,
    Processes,
    memory_kib,
    parse_stat,
    status_kib,
    tree_cpu_ticks,
)
from conftest import pid_alive, pids_of_children


def test_parse_stat_survives_odd_command_names() -> None:
    text = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 900 0 0 0 123 45 0 0 20 0 1 0"
    assert parse_stat(text) == (17, 123, 45)
    with open("/proc/self/stat") as f:
        ppid, utime, stime = parse_stat(f.read())
    assert ppid == os.getppid()
    assert utime >= 0 and stime >= 0


def test_status_fields_in_kib() -> None:
    assert status_kib("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n", "VmRSS") == 1024
    assert 0 < memory_kib(os.getpid(), "VmRSS") <= memory_kib(os.getpid(), "VmHWM")


BUSY_CHILD = (
    "import subprocess, sys\n"
    "busy = 'import time\\nt = time.process_time()\\n"
    "while time.process_time() - t < 0.4: pass\\ntime.sleep(60)'\n"
    "subprocess.run([sys.executable, '-c', busy])\n"
)


def test_cpu_counts_children_and_close_stops_the_whole_tree(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    proc = procs.start("tree", [sys.executable, "-c", BUSY_CHILD])
    try:
        deadline = time.monotonic() + 20
        # The parent only waits: the CPU burnt is its child's, and must be counted.
        while tree_cpu_ticks(proc.pid) < 0.4 * CLK_TCK:
            assert time.monotonic() < deadline, "the busy child's CPU time never showed"
            time.sleep(0.05)
        children = pids_of_children(proc.pid)
        assert children
    finally:
        procs.close()
    assert proc.returncode is not None
    assert not any(pid_alive(p) for p in children)
    assert (tmp_path / "tree.log").exists()
