"""The memory bench's upstream: streams a generated body of any size, counts and discards
uploads. ``python -m bench.upstream FD`` serves on an inherited listening socket.

``GET /download?bytes=N`` answers N bytes (with a Content-Length) made from one repeated
block; ``POST /upload`` answers ``{"bytes": <count received>}``; ``GET /home`` a small JSON.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from aiohttp import web

from lbproxy._runtime import run

BLOCK = bytes(range(256)) * 1024  # 256 KiB


async def download(request: web.Request) -> web.StreamResponse:
    try:
        size = int(request.query["bytes"])
    except (KeyError, ValueError):
        return web.Response(status=400, text="bytes=N required")
    resp = web.StreamResponse()
    resp.content_length = size
    await resp.prepare(request)
    left = size
    while left > 0:
        n = min(left, len(BLOCK))
        await resp.write(BLOCK[:n])  # waits while the reader is slow: backpressure
        left -= n
    await resp.write_eof()
    return resp


async def upload(request: web.Request) -> web.Response:
    n = 0
    async for chunk in request.content.iter_any():
        n += len(chunk)
    return web.json_response({"bytes": n})


async def heartbeat(request: web.Request) -> web.Response:
    return web.Response()


async def small(request: web.Request) -> web.Response:
    return web.json_response({"message": "Hello from Server: upstream", "status": "successful"})


async def serve(fd: int) -> None:
    app = web.Application(client_max_size=0)
    app.router.add_get("/heartbeat", heartbeat)
    app.router.add_get("/home", small)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, socket.socket(fileno=fd)).start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    run(serve(int(sys.argv[1])))
