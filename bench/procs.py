"""The processes the bench starts, and what /proc says about them (CPU time, memory).

Every process is started in its own session (Ctrl-C reaches only the harness, which then stops
them) and is told by the kernel to exit if the harness dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """Something the bench needs did not work; the message says what."""


def _die_with_harness() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def listening_socket() -> socket.socket:
    """A loopback socket on an ephemeral port, to hand to a child (``pass_fds``)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    s.set_inheritable(True)
    return s


def free_port() -> int:
    """An ephemeral port for programs that only take a port number (a small race, tolerated)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Starts processes and stops every one of them (with their children) on ``close``."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in close())
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_harness,
                **kwargs,
            )
        except OSError as e:
            log.close()
            raise BenchError(f"cannot start {name} ({argv[0]}): {e}") from e
        self._procs.append((name, proc, log))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGTERM to the process's own session (it and its workers), SIGKILL if it lingers."""
        if proc.returncode is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # its own group: we made it a session leader
            if _exited(proc.pid, timeout):
                break
        # The leader is a zombie until reaped, so its group id cannot have been reused yet:
        # what is left in the group (e.g. workers of a killed master) is ours to kill.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_named(self, name: str) -> None:
        for n, proc, _ in self._procs:
            if n == name:
                self.stop(proc)

    def close(self) -> None:
        for _, proc, log in reversed(self._procs):
            self.stop(proc)
            log.close()
        self._procs.clear()


def _exited(pid: int, timeout: float) -> bool:
    """Whether ``pid`` (our child) exits within ``timeout``, without reaping it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0, path: str | None = None
) -> None:
    """Until ``port`` accepts connections (and, with ``path``, answers it with 200)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            if path is None or _answers_200(s, path):
                return
        time.sleep(0.05)
    raise BenchError(f"nothing answers on port {port} after {timeout:.0f}s")


def _answers_200(s: socket.socket, path: str) -> bool:
    s.settimeout(2.0)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    return s.recv(64).startswith(b"HTTP/1.1 200")


# -- /proc -----------------------------------------------------------------------------------


class Stat(NamedTuple):
    """The fields of /proc/<pid>/stat the bench uses; times in clock ticks."""

    ppid: int
    utime: int
    stime: int
    cutime: int  # of children it has waited for
    cstime: int


def parse_stat(text: str) -> Stat:
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    return Stat(*(int(fields[i]) for i in (1, 11, 12, 13, 14)))


def parse_machine_busy(text: str) -> int:
    """Clock ticks all CPUs spent busy (not idle, not waiting for I/O), from /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return user + nice + system + irq + softirq + steal
    raise BenchError("no cpu line in /proc/stat")


def cpu_snapshot() -> tuple[int, int]:
    """(ticks the whole machine was busy, ticks the bench itself and all it started used)."""
    stat = _read("/proc/stat") or ""
    me = parse_stat(_read(f"/proc/{os.getpid()}/stat") or "")
    # Live processes count directly; those already reaped (wrk runs) in our cutime/cstime.
    return parse_machine_busy(stat), tree_cpu_ticks(os.getpid()) + me.cutime + me.cstime


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _all_stats() -> dict[int, Stat]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (text := _read(f"/proc/{entry}/stat")) is not None:
            stats[int(entry)] = parse_stat(text)
    return stats


def busiest(seconds: float = 1.0, top: int = 5) -> list[tuple[float, str]]:
    """The processes that used the most CPU over the next ``seconds``: (% of one CPU, command)."""
    before = _all_stats()
    time.sleep(seconds)
    after = _all_stats()
    used = []
    for pid, st in after.items():
        if pid in before and pid != os.getpid():
            delta = st.utime + st.stime - before[pid].utime - before[pid].stime
            if delta > 0:
                cmd = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
                used.append((100.0 * delta / CLK_TCK / seconds, cmd[:100]))
    return sorted(used, reverse=True)[:top]


def tree_cpu_ticks(root: int) -> int:
    """utime + stime of ``root`` and its live descendants (all threads), in clock ticks."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st.ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid].utime + stats[pid].stime
            todo.extend(children.get(pid, []))
    return total


def status_kib(text: str, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM, ...) of /proc/<pid>/status text, in KiB."""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc status")


def memory_kib(pid: int, field: str) -> int:
    text = _read(f"/proc/{pid}/status")
    if text is None:
        raise BenchError(f"process {pid} is gone")
    return status_kib(text, field)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, needs ptrace rights: root or our child)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1
