"""The balancer's hot path in memory: CPU per request, without sockets or wrk.

    python -m bench.hotpath [--requests N] [--runs R]

A real ``Server`` (static backend, one real replica for its heartbeats) is started; then one
client connection and one kept-alive replica connection are driven on in-memory transports
(``bench.in_memory``): a bodiless GET goes through the front's parser, the proxy's hot path
and the transport, and a 60-byte answer comes back the same way, N times, on the event loop
the balancer uses (uvloop if installed). Prints the CPU time per request, the least of R
runs: the Python work of the data path, which the socket-bound ``make bench`` figures blur
with whatever else the machine runs. Comparing two commits: run it with ``PYTHONPATH``
pointing at each one's ``src`` (the harness only uses the front's ``Front`` connections and
the transport's pool, which both keep).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

from bench.in_memory import MemoryTransport
from lbproxy import Server, parse_config
from lbproxy._runtime import run

REQUEST = b"GET /home HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 123456\r\nUser-Agent: wrk\r\n\r\n"
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n" + b"x" * 60
)


async def _heartbeat(request: web.Request) -> web.Response:
    return web.Response()


async def measure(
    requests: int, runs: int, metrics: bool = True, access_log: str | None = None
) -> float:
    """CPU seconds per request, the least of ``runs`` runs of ``requests``."""
    app = web.Application()
    app.router.add_get("/heartbeat", _heartbeat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    address = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    config = parse_config(
        {
            "listen": {"host": "127.0.0.1", "port": 0},
            "admin": {"host": "127.0.0.1", "port": 0},
            "reload": {"enabled": False},
            "log_level": "warning",
            "replicas": {"backend": "static", "static": [{"hostname": "a1", "address": address}]},
            "metrics": {"enabled": metrics},
            "log": {"access": access_log is not None, "file": access_log},
        }
    )
    server = Server(config)
    await server.startup()
    try:
        from lbproxy.transport._httptools import _Connection, _HostPool

        try:
            from lbproxy.front._connection import ClientConnection as Client
        except ImportError:  # the front before issue 11
            from lbproxy._front import _ClientConnection as Client  # type: ignore
        pools = server.transport._pools  # type: ignore[union-attr]
        pool = pools.setdefault(
            address, _HostPool(address, config.proxy, asyncio.get_running_loop())
        )
        replica = _Connection(pool)
        replica_side = MemoryTransport(replica)
        replica.connection_made(replica_side)
        pool.release(replica)
        client = Client(server._fronts[0])
        client_side = MemoryTransport(client)
        client.connection_made(client_side)
        best = float("inf")
        for _ in range(runs):
            started = time.process_time()
            for _ in range(requests):
                client.data_received(REQUEST)
                replica.data_received(ANSWER)
            if server.access_log is not None:
                await server.access_log.flush()  # its lines formatted and written, counted too
            best = min(best, time.process_time() - started)
            answered = client_side.take().count(b"HTTP/1.1 200 OK\r\n")
            replica_side.take()
            if answered != requests:
                raise RuntimeError(f"{answered} of {requests} requests were answered")
        return best / requests
    finally:
        await server.shutdown()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-metrics", action="store_true", help="metrics.enabled: false")
    parser.add_argument("--access-log", metavar="FILE", help="log.access: true, to FILE")
    args = parser.parse_args()
    # uvloop, as the balancer runs
    per_request = run(measure(args.requests, args.runs, not args.no_metrics, args.access_log))
    print(
        f"hot path in memory: {per_request * 1e6:.2f} µs CPU per request "
        f"(least of {args.runs} runs of {args.requests})"
    )


if __name__ == "__main__":
    main()
