"""A replica server with a slow endpoint, run by the process backend in tests
(``replicas.process.command: [python, tests/slow_replica.py]``).

/home and /heartbeat as lbproxy.replica answers them, plus ``GET /slow?s=<seconds>``, which
answers ``{"message": "Hello from Server: <id>", ...}`` after that long: a request that is
still in flight when the test acts. It listens on the socket the balancer hands it
(LISTEN_FD) and dies with the balancer, as the built-in replica does. On SIGTERM it gives
requests under way 1 s, then cuts them, so a replica stopped too early shows in the answers.
"""

from __future__ import annotations

import asyncio
import os
import socket

from aiohttp import web

from lbproxy.replica import _die_with_parent

SERVER_ID = os.environ.get("SERVER_ID", "slow")


async def home(request: web.Request) -> web.Response:
    return web.json_response({"message": f"Hello from Server: {SERVER_ID}", "status": "successful"})


async def heartbeat(request: web.Request) -> web.Response:
    return web.Response()


async def slow(request: web.Request) -> web.Response:
    seconds = float(request.query.get("s", "1"))
    await asyncio.sleep(seconds)
    return web.json_response(
        {"message": f"Hello from Server: {SERVER_ID}", "slept": seconds, "status": "successful"}
    )


def main() -> None:
    _die_with_parent()
    app = web.Application()
    app.router.add_get("/home", home)
    app.router.add_get("/heartbeat", heartbeat)
    app.router.add_get("/slow", slow)
    sock = socket.socket(fileno=int(os.environ["LISTEN_FD"]))
    web.run_app(app, sock=sock, shutdown_timeout=1.0, access_log=None, print=None)


if __name__ == "__main__":
    main()
