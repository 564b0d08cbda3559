"""``python -m bench.malformed``: a balancer's descriptors before and after many malformed
requests (issue 10, item 4).

Starts a real balancer (``python -m lbproxy run``, process replicas) and sends it requests
whose head is valid and whose body is not (a bad chunk size, a bad chunk terminator, a
Content-Length in the trailers, an Upgrade with a body, a chunk size overflow), each on a
connection of its own, a bounded number at a time. Each client waits up to ``--wait``
seconds for an answer, then leaves. The balancer's open descriptors (/proc/<pid>/fd) are
counted before, and after the last client left and the balancer's linger on closed
connections (2 s) has passed. A balancer that ends every malformed exchange at once answers
all of them with a 400 and is back to its starting count; one that hangs keeps a descriptor
per request (CLOSE_WAIT) until it runs out.

    python -m bench.malformed --requests 20000 --concurrency 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments._balancer import running_balancer

_CHUNKED = b"POST /home HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n"

#: Valid heads, bodies that are not: what the issue found hanging.
MALFORMED: dict[str, bytes] = {
    "bad chunk size": _CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "bad chunk terminator": _CHUNKED + b"3\r\nabcXX0\r\n\r\n",
    "Content-Length in a trailer": _CHUNKED + b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",
    "chunk size overflow": _CHUNKED + b"fffffffffffffffffff\r\n",
    "Upgrade with a body": b"POST /home HTTP/1.1\r\nHost: lb\r\nConnection: upgrade\r\n"
    b"Upgrade: h2c\r\nContent-Length: 3\r\n\r\nabc",
}


@dataclass
class Result:
    requests: int = 0
    fds_before: int = 0
    fds_after: int = 0
    seconds: float = 0.0
    #: First answer line (b"HTTP/1.1 400 Bad Request") or "no answer" / "reset", counted.
    outcomes: Counter[str] = field(default_factory=Counter)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _one(port: int, payload: bytes, wait: float) -> str:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return f"connect failed: {e.strerror or e}"
    try:
        writer.write(payload)
        try:
            line = await asyncio.wait_for(reader.readline(), wait)
        except TimeoutError:
            return "no answer"
        return line.decode("latin-1").strip() or "closed without an answer"
    except ConnectionError:
        return "reset"
    finally:
        writer.close()


async def send_malformed(port: int, requests: int, concurrency: int, wait: float) -> Counter[str]:
    """Send ``requests`` malformed requests, ``concurrency`` at a time; count the outcomes."""
    outcomes: Counter[str] = Counter()
    kinds = list(MALFORMED.values())
    todo = iter(range(requests))

    async def worker() -> None:
        for i in todo:
            outcomes[await _one(port, kinds[i % len(kinds)], wait)] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


async def measure(
    requests: int, concurrency: int, wait: float, workdir: Path, settle: float = 3.0
) -> Result:
    """Start a balancer, count its descriptors, send the requests, count them again."""
    result = Result(requests=requests)
    async with running_balancer(workdir, replicas=1) as lb:
        pid = lb.proc.pid
        status, _, _ = await lb.call("GET", "/home")  # warm: a replica connection pooled
        if status != 200:
            raise RuntimeError(f"the balancer answered GET /home with {status}")
        result.fds_before = open_fds(pid)
        started = time.monotonic()
        result.outcomes = await send_malformed(lb.port, requests, concurrency, wait)
        result.seconds = time.monotonic() - started
        await asyncio.sleep(settle)  # past the balancer's linger on the connections it closed
        result.fds_after = open_fds(pid)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.malformed", description=__doc__)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--wait", type=float, default=2.0, help="seconds a client waits for an answer")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lbproxy-malformed-") as tmp:
        r = asyncio.run(measure(args.requests, args.concurrency, args.wait, Path(tmp)))
    print(f"{r.requests} malformed requests in {r.seconds:.1f}s, {args.concurrency} at a time")
    for outcome, n in r.outcomes.most_common():
        print(f"  {n:6d}  {outcome}")
    print(f"balancer descriptors: {r.fds_before} before, {r.fds_after} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
