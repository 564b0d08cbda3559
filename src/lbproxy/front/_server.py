"""The HTTP server on one listening socket: accepts client connections, hands every request
to one ``dispatch`` callable, and closes gracefully."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from .._throttled_log import ThrottledLog
from ._connection import ClientConnection
from ._request import Request
from ._wire import BUSY, plain_answer

log = logging.getLogger("lbproxy.front")

#: Descriptors kept free of clients and of their replica connections: heartbeats, replica
#: processes' pipes, the Docker socket, the config file, the odd one-off.
RESERVED_FDS = 64

Dispatch = Callable[[Request], None]
"""Serves a request: answers it and calls ``request.done()``, or hands it to a task with
``request.spawn(work)`` (which ends it), or keeps it and does either later (the proxy's hot
path, from another protocol's callback)."""


def default_max_connections() -> int:
    """Client connections allowed by the open-files limit: each may hold one replica
    connection too (and the replica connections it leaves idle), and ``RESERVED_FDS`` are
    kept for the rest."""
    try:
        import resource
    except ImportError:  # not POSIX: no such limit to read
        return 1 << 20
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, (soft - RESERVED_FDS) // 2)


def _ignore(status: int) -> None:
    return None


class Front:
    """The HTTP server on one of the balancer's ports, owned and closed by ``Server``.

    It knows no application: ``routes`` (request path without its query -> ``Dispatch``)
    and ``dispatch`` (every other path) decide what each request is.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        routes: Mapping[str, Dispatch],
        idle_timeout: float,
        client_timeout: float,
        max_connections: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.routes = routes
        self.idle_timeout = idle_timeout
        self.client_timeout = client_timeout
        #: How often each connection checks both limits (see _connection._Watch).
        self.tick = min(idle_timeout, client_timeout) / 4
        self.connections: set[ClientConnection] = set()
        #: Beyond this many client connections, new ones get a 503 and are closed.
        self.max_connections = max_connections or default_max_connections()
        #: Per-request notes (stalled, malformed, refused) said once per event, with counts.
        self.notes = ThrottledLog(log)
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        #: Told the status of each answer of the balancer's own to a request it could not
        #: take (malformed: 400, 414, 431, 505), for the metrics (``Stats.own``).
        self.own_answer: Callable[[int], None] = _ignore
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None

    def admit(self, conn: ClientConnection) -> bool:
        """Take a new connection, or refuse it with a 503 if there are too many."""
        if len(self.connections) < self.max_connections:
            self.connections.add(conn)
            return True
        # Out of descriptors soon: a clear answer now, and the rest kept for replica
        # connections and heartbeats (which starve first when clients take them all).
        transport = conn.transport
        assert transport is not None
        transport.write(plain_answer(BUSY))
        transport.close()
        self.notes.warning(
            "clients",
            "refused",
            "refusing client connections: %d are open, the most allowed "
            "(proxy.max_client_connections)",
            len(self.connections),
        )
        return False

    async def start(self, sock: Any, backlog: int = 1024) -> None:
        sock.listen(backlog)
        self._server = await self.loop.create_server(
            lambda: cast(asyncio.Protocol, ClientConnection(self)),
            sock=sock,
            backlog=backlog,
            ssl=self.tls,
        )

    async def close(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let answers under way finish (up to
        ``timeout``), then cut what is left."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + timeout
        while any(c.current is not None for c in self.connections):
            if time.monotonic() > deadline:
                log.warning("cutting %d answers still under way", len(self.connections))
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        await server.wait_closed()
