"""The replica web server: ``GET /home``, ``GET /heartbeat`` (docs/api.md), 404 elsewhere.

Run it with ``python -m lbproxy.replica`` (or ``lbproxy replica``). Its id comes from
``--id``/``SERVER_ID`` (default: the hostname), its port from ``--port``/``PORT`` (default 5000);
a balancer that started it passes an already-listening socket in ``LISTEN_FD``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys

from aiohttp import web

_SERVER_ID = web.AppKey("server_id", str)


async def _home(request: web.Request) -> web.Response:
    return web.json_response(
        {"message": f"Hello from Server: {request.app[_SERVER_ID]}", "status": "successful"}
    )


async def _heartbeat(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _not_found(request: web.Request) -> web.Response:
    return web.json_response(
        {"message": f"'{request.path}' endpoint does not exist", "status": "failure"},
        status=404,
    )


def make_app(server_id: str) -> web.Application:
    app = web.Application()
    app[_SERVER_ID] = server_id
    app.router.add_get("/home", _home)
    app.router.add_get("/heartbeat", _heartbeat)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    return True


def _die_with_parent() -> None:
    """For a launcher that sets LBPROXY_PARENT_PID (the benchmark does; the balancer ties its
    replicas' lives to its own by their process group instead): exit when the parent process
    dies, even by SIGKILL (Linux only)."""
    parent = os.environ.get("LBPROXY_PARENT_PID")
    if not parent or not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    # Another parent is a shell or wrapper between us (which is fine), unless the named one
    # is gone: then it died before prctl took effect.
    if os.getppid() != int(parent) and not _alive(int(parent)):
        sys.exit(0)


async def serve(server_id: str, host: str, port: int, fd: int | None) -> None:
    await serve_app(make_app(server_id), host, port, fd)


async def serve_app(app: web.Application, host: str, port: int, fd: int | None) -> None:
    """Serve ``app`` (on the inherited socket ``fd`` if given) until SIGINT or SIGTERM."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    if fd is not None:
        site: web.BaseSite = web.SockSite(runner, socket.socket(fileno=fd))
    else:
        site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lbproxy replica", description="Run one replica web server (/home, /heartbeat)."
    )
    parser.add_argument(
        "--id",
        default=os.environ.get("SERVER_ID") or socket.gethostname(),
        help="id shown in /home (env SERVER_ID; default: the hostname)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("HOST", "0.0.0.0"),
        help="address to listen on (env HOST; default 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "5000")),
        help="port to listen on (env PORT; default 5000)",
    )
    fd = os.environ.get("LISTEN_FD")
    parser.add_argument(
        "--fd",
        type=int,
        default=int(fd) if fd else None,
        help="listen on this inherited socket instead (env LISTEN_FD)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _die_with_parent()
    from ._runtime import run

    run(serve(args.id, args.host, args.port, args.fd))


if __name__ == "__main__":
    main()
