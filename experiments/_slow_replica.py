"""A replica that takes a fixed time per request and says how busy it was.

    python experiments/_slow_replica.py --delay 0.02

lbproxy's own replica server (``lbproxy.replica``: same ``/home`` and ``/heartbeat``, same
environment: SERVER_ID, PORT, LISTEN_FD) with every ``/home`` held for ``--delay`` seconds,
and an ``X-In-Flight`` header on each answer: how many requests this replica had under way
when that one arrived, itself included. Run by the bounded-load experiment as the process
backend's replica command; a standalone script so that the balancer can run it by path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from lbproxy._runtime import run
from lbproxy.replica import _die_with_parent, make_app, serve_app

IN_FLIGHT_HEADER = "X-In-Flight"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def slow_app(server_id: str, delay: float) -> web.Application:
    app = make_app(server_id)
    busy = 0

    @web.middleware
    async def hold(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal busy
        if request.path != "/home":
            return await handler(request)
        busy += 1
        seen = busy
        try:
            await asyncio.sleep(delay)
            response = await handler(request)
        finally:
            busy -= 1
        response.headers[IN_FLIGHT_HEADER] = str(seen)
        return response

    app.middlewares.append(hold)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--delay", type=float, default=0.02, help="seconds per /home (0.02)")
    args = p.parse_args()
    fd = os.environ.get("LISTEN_FD")
    server_id = os.environ.get("SERVER_ID") or socket.gethostname()
    port = int(os.environ.get("PORT", "5000"))
    _die_with_parent()
    run(serve_app(slow_app(server_id, args.delay), "127.0.0.1", port, int(fd) if fd else None))


if __name__ == "__main__":
    main()
