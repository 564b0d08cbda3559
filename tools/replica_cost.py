"""Measure what one replica process costs: its import time, start-up wall time and memory.

    python tools/replica_cost.py                     # this checkout
    python tools/replica_cost.py --against 6f4ad46   # and another commit, runs interleaved

For each source tree (this checkout's ``src``; with ``--against``, that commit's ``src`` too,
extracted with ``git archive`` into a temporary folder and run first on ``PYTHONPATH``):

- ``import lbproxy.replica``: its cumulative time under ``python -X importtime`` (median and
  best of ``--runs``), and the wall time of ``python -c 'import lbproxy.replica'``;
- the resident memory (``VmRSS``, Linux) of a ``python -m lbproxy.replica`` serving on a free
  loopback port, after it answered ``--requests`` requests to ``/home`` (median of 3);
- how many modules the import loads, and which of the heavy libraries among them.

Runs of the trees alternate, so a busy machine weighs on each alike. Standard library only;
run it with the Python that has lbproxy's dependencies (``.venv/bin/python``).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("aiodocker", "pydantic", "yaml", "aiohttp")
_IMPORTTIME = re.compile(r"import time:\s*\d+\s*\|\s*(\d+)\s*\|\s*lbproxy\.replica\s*$")


@dataclass
class Figures:
    label: str
    src: Path
    import_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    modules: str = ""

    def line(self) -> str:
        med, best = statistics.median, min
        return (
            f"{self.label}: import lbproxy.replica {med(self.import_ms):.0f} ms median, "
            f"{best(self.import_ms):.0f} ms best (-X importtime, cumulative); "
            f"python -c 'import lbproxy.replica' {med(self.wall_ms):.0f} ms median, "
            f"{best(self.wall_ms):.0f} ms best; serving VmRSS {med(self.rss_mib):.1f} MiB; "
            f"{self.modules}"
        )


def replica_import_ms(stderr: str) -> float:
    """The cumulative import time of lbproxy.replica in ``-X importtime`` output, in ms."""
    for line in reversed(stderr.splitlines()):
        m = _IMPORTTIME.match(line.strip())
        if m:
            return int(m.group(1)) / 1000
    raise ValueError("no 'lbproxy.replica' line in the -X importtime output")


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def _python(src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=_env(src), capture_output=True, text=True, timeout=120
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving_rss_mib(src: Path, requests: int) -> float:
    port = _free_port()
    args = ["-m", "lbproxy.replica", "--id", "cost", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([sys.executable, *args], env=_env(src))
    try:
        deadline = time.monotonic() + 30
        served = 0
        while served < requests:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/home", timeout=2) as r:
                    r.read()
                served += 1
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the replica did not serve") from None
                time.sleep(0.05)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1)) / 1024
    finally:
        proc.terminate()
        proc.wait(10)


def measure(trees: list[Figures], runs: int, requests: int) -> None:
    for _ in range(runs):
        for t in trees:
            traced = _python(t.src, "-X", "importtime", "-c", "import lbproxy.replica")
            t.import_ms.append(replica_import_ms(traced.stderr))
            started = time.perf_counter()
            _python(t.src, "-c", "import lbproxy.replica").check_returncode()
            t.wall_ms.append((time.perf_counter() - started) * 1000)
    for _ in range(3):
        for t in trees:
            t.rss_mib.append(serving_rss_mib(t.src, requests))
    count = (
        "import sys, lbproxy.replica; m = set(sys.modules); "
        f"print(len(m), 'modules, of them:', [n for n in {HEAVY!r} if n in m])"
    )
    for t in trees:
        t.modules = _python(t.src, "-c", count).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", metavar="REF", help="also measure this commit's tree")
    parser.add_argument("--runs", type=int, default=15, help="import runs per tree (15)")
    parser.add_argument("--requests", type=int, default=21, help="before reading RSS (21)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="replica-cost-") as tmp:
        trees = []
        if args.against:
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.against, "src"],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees.append(Figures(args.against, Path(tmp) / "src"))
        trees.append(Figures("this checkout", REPO / "src"))
        measure(trees, max(1, args.runs), max(1, args.requests))
    for t in trees:
        print(t.line())


if __name__ == "__main__":
    main()
