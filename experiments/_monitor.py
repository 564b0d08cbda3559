"""Watches a balancer from outside: ``/rep`` and the running replicas, sampled on an interval.

Run as its own process (``python -m experiments._monitor``) by experiment 3, so that the load
generator keeping the experiment's own process busy cannot delay the samples. It prints one
JSON line per sample, ``{"t": <CLOCK_MONOTONIC seconds>, "listed": [...], "running": [...]}``
(the monotonic clock is the same for every process of the machine), until it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

import aiohttp

from ._balancer import BACKENDS, DockerReplicas, ProcessReplicas, Replicas


async def sample(url: str, replicas: Replicas, interval: float) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.get(url + "/rep") as r:
                    listed = (await r.json())["message"]["replicas"]
            except (aiohttp.ClientError, TimeoutError) as e:
                # A missed sample is a gap in the record, not the end of it.
                print(f"monitor: /rep failed: {e!r}", file=sys.stderr)
                await asyncio.sleep(interval)
                continue
            running = sorted(await replicas.running())
            line = {"t": time.monotonic(), "listed": listed, "running": running}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            await asyncio.sleep(interval)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the balancer, http://127.0.0.1:<port>")
    p.add_argument("--backend", choices=BACKENDS, default="process")
    p.add_argument("--pid", type=int, help="the balancer's pid (process backend)")
    p.add_argument("--instance", help="its replicas' instance label (docker backend)")
    p.add_argument("--interval", type=float, default=0.02)
    args = p.parse_args()
    if args.backend == "process" and args.pid is None:
        p.error("--pid is needed with the process backend")
    if args.backend == "docker" and args.instance is None:
        p.error("--instance is needed with the docker backend")
    replicas: Replicas = (
        ProcessReplicas(args.pid) if args.backend == "process" else DockerReplicas(args.instance)
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(sample(args.url, replicas, args.interval))


if __name__ == "__main__":
    main()
