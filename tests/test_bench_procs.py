"""The bench's process handling and /proc readings, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import (
    CLK_TCK,
    Processes,
    cpu_snapshot,
    memory_kib,
    parse_machine_busy,
    parse_stat,
    status_kib,
    tree_cpu_ticks,
)
from conftest import pid_alive, pids_of_children


def test_parse_stat_survives_odd_command_names() -> None:
    text = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 900 0 0 0 123 45 6 7 20 0 1 0"
    assert parse_stat(text) == (17, 123, 45, 6, 7)
    with open("/proc/self/stat") as f:
        st = parse_stat(f.read())
    assert st.ppid == os.getppid()
    assert st.utime >= 0 and st.stime >= 0


def test_machine_busy_ticks() -> None:
    text = "cpu  100 5 30 9000 70 2 3 1 0 0\ncpu0 50 2 15 4500 35 1 1 0 0 0\n"
    assert parse_machine_busy(text) == 100 + 5 + 30 + 2 + 3 + 1  # not idle, not iowait


def test_cpu_snapshot_counts_children_already_reaped() -> None:
    machine0, own0 = cpu_snapshot()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass",
        ],
        check=True,
    )
    machine1, own1 = cpu_snapshot()
    assert own1 - own0 >= 0.3 * CLK_TCK - 2  # the child is gone, its CPU time is not
    assert machine1 - machine0 >= own1 - own0 - 2


def test_status_fields_in_kib() -> None:
    assert status_kib("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n", "VmRSS") == 1024
    assert 0 < memory_kib(os.getpid(), "VmRSS") <= memory_kib(os.getpid(), "VmHWM")


BUSY_CHILD = (
    "import subprocess, sys\n"
    "busy = 'import time\\nt = time.process_time()\\n"
    "while time.process_time() - t < 0.6: pass\\ntime.sleep(60)'\n"
    "subprocess.run([sys.executable, '-c', busy])\n"
)


def test_cpu_counts_children_and_close_stops_the_whole_tree(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    proc = procs.start("tree", [sys.executable, "-c", BUSY_CHILD])
    try:
        deadline = time.monotonic() + 20
        # The parent only waits: the CPU burnt is its child's, and must be counted. /proc
        # counts CPU time in sampled ticks, which can fall a little short of the child's own
        # exact clock: it burns 0.6 s and 0.4 s must show.
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
