"""``python -m bench.hung_replica``: failed requests while a replica hangs (issue 10, item 10).

Starts a real balancer (``python -m lbproxy run``, 3 process replicas, default health and
proxy settings) and keeps a bounded load of keyless ``GET /home`` requests on it
(``--workers`` clients for ``--duration`` seconds). After ``--stop-after`` seconds one replica
is SIGSTOPped: it still accepts connections (the kernel does) but answers nothing, as a hung
process does, until the balancer's heartbeats find it and replace it. Every answer is
counted; anything but a 200 is a failed request, printed with its message.

    python -m bench.hung_replica --duration 25 --workers 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from experiments._balancer import running_balancer


@dataclass
class Result:
    requests: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    stopped: str = ""


async def measure(duration: float, workers: int, stop_after: float, workdir: Path) -> Result:
    result = Result()
    async with running_balancer(workdir, replicas=3) as lb:
        deadline = time.monotonic() + duration
        timeout = aiohttp.ClientTimeout(total=90)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def client() -> None:
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    try:
                        async with session.get(f"{lb.url}/home") as r:
                            body = await r.text()
                            if r.status != 200:
                                result.failed[f"{r.status} {body.strip()}"] += 1
                    except (aiohttp.ClientError, TimeoutError) as e:
                        result.failed[f"no answer: {type(e).__name__}"] += 1
                    result.requests += 1
                    result.slowest = max(result.slowest, time.monotonic() - started)

            async def hang_one() -> None:
                await asyncio.sleep(stop_after)
                name, pid = sorted((await lb.replicas.running()).items())[0]
                result.stopped = name
                os.kill(int(pid), signal.SIGSTOP)

            try:
                await asyncio.gather(hang_one(), *(client() for _ in range(workers)))
            finally:
                for pid in (await lb.replicas.running()).values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGCONT)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hung_replica", description=__doc__)
    p.add_argument("--duration", type=float, default=25.0, help="seconds of load (25)")
    p.add_argument("--workers", type=int, default=16, help="concurrent clients (16)")
    p.add_argument("--stop-after", type=float, default=5.0, help="seconds before SIGSTOP (5)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lbproxy-hung-") as tmp:
        r = asyncio.run(measure(args.duration, args.workers, args.stop_after, Path(tmp)))
    failed = sum(r.failed.values())
    print(
        f"{r.requests} requests in {args.duration:g}s ({args.workers} clients), "
        f"replica {r.stopped} SIGSTOPped after {args.stop_after:g}s"
    )
    print(f"failed: {failed} ({100 * failed / max(r.requests, 1):.2f}%); slowest {r.slowest:.1f}s")
    for what, n in r.failed.most_common():
        print(f"  {n:6d}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
