"""Memory of what ties a process replica's life to the balancer's (its watcher), next to the
replica's own: starts real replicas with the process backend and reads /proc (Linux).

    .venv/bin/python tools/guard_memory.py [--replicas 3]

RSS counts shared pages in full; PSS shares them out among the processes using them; USS is
what the process alone holds (freed when it exits). The last row, for comparison, is the
smallest Python process that could watch a pipe instead (``python -I -S`` blocked on a read).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from lbproxy._config import ProcessBackendConfig
from lbproxy.backends import ProcessBackend
from lbproxy.backends._process import group_members


def memory_kb(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS) of ``pid`` in kB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields["Rss"], fields["Pss"], uss


async def measure(count: int) -> list[tuple[str, int, tuple[int, int, int]]]:
    backend = ProcessBackend(ProcessBackendConfig(output="discard"))
    # For comparison: the smallest Python that could watch a pipe instead.
    python = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", "import os; os.read(0, 1)", stdin=subprocess.PIPE
    )
    rows = []
    try:
        handles = [await backend.start(f"m{i}", i) for i in range(1, count + 1)]
        await asyncio.sleep(2.0)  # imports done, servers listening
        for handle in handles:
            leader = int(handle.ident)
            for pid in group_members(leader):
                kind = "replica" if pid == leader else "watcher"
                rows.append((kind, pid, memory_kb(pid)))
        rows.append(("python", python.pid, memory_kb(python.pid)))
    finally:
        await backend.close()
        python.kill()
        await python.wait()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.replicas))
    print(f"{'process':8} {'pid':>8} {'RSS kB':>8} {'PSS kB':>8} {'USS kB':>8}")
    for kind, pid, (rss, pss, uss) in rows:
        print(f"{kind:8} {pid:>8} {rss:>8} {pss:>8} {uss:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
