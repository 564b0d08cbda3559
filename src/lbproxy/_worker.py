"""A worker process (``workers: N``): the data path on its own SO_REUSEPORT socket.

The supervisor (``Server``) starts N of these; the kernel spreads the port's connections over
their sockets. A worker owns no replica and no configuration file: it routes from the
supervisor's pool, ring and bounded-load caps, which arrive on its channel (``_channel``)
whenever they change, and it answers the supervisor's requests for its counters. The
replica-changing endpoints of the port (/rep, /add, /rm) are forwarded to the supervisor,
which owns the replicas. Nothing is shared between workers on the hot path: each has its own
upstream connections, in-flight counts (so bounded loads are per worker) and outlier
ejections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass

from ._access_log import AccessLog
from ._channel import Channel, ChannelClosedError
from ._config import Config
from ._keys import KeyFunction, make_key_function
from ._pool import Member, Pool, Replica, State
from ._proxy import Proxy
from ._recording import Recorder
from ._replica_handle import ReplicaHandle
from ._routing import LoadBound, Ring
from ._runtime import raise_open_files_limit, run
from ._stats import ReplicaStats, Stats
from ._tls import Certificate, server_context
from .front import Dispatch, Front
from .transport import HttptoolsTransport

log = logging.getLogger("lbproxy.worker")

#: The name the supervisor's own endpoint goes by in a worker's (one-member) admin pool.
SUPERVISOR = "lbproxy-supervisor"


@dataclass(frozen=True, slots=True)
class Init:
    """The first message a worker gets: everything it needs to start serving."""

    index: int
    config: Config
    host: str
    port: int
    #: ``host:port`` of the supervisor's listener for /rep, /add and /rm.
    admin_address: str
    admin_paths: tuple[str, ...]
    version: int
    members: tuple[Member, ...]
    routing: tuple[Ring, LoadBound | None]
    backlog: int


@dataclass(frozen=True, slots=True)
class View:
    """The supervisor's pool changed: its members, and its routing if that changed too."""

    version: int
    members: tuple[Member, ...]
    routing: tuple[Ring, LoadBound | None] | None


@dataclass(frozen=True, slots=True)
class Reconfigure:
    config: Config


@dataclass(frozen=True, slots=True)
class ReportRequest:
    ident: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class Applied:
    version: int


@dataclass(frozen=True, slots=True)
class Suspect:
    """A request to this replica failed: the supervisor heartbeats it now."""

    hostname: str


@dataclass(frozen=True, slots=True)
class Report:
    ident: int
    #: Per replica name, the counters for /metrics (None: metrics are off).
    stats: dict[str, ReplicaStats] | None
    #: Per replica name: (requests sent in all, requests in flight).
    counts: dict[str, tuple[int, int]]
    connections: int


def bind_socket(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port``; ``shared``: one that other processes of this user
    may bind too, the kernel spreading new connections over those listening (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _SuspectSignal(asyncio.Event):
    """A replica's ``suspect`` event in a worker: the heartbeat it asks for is the
    supervisor's, so setting it tells the supervisor."""

    def __init__(self, hostname: str, tell: Channel) -> None:
        super().__init__()
        self._hostname = hostname
        self._tell = tell

    def set(self) -> None:
        # Once the supervisor is gone, this worker is stopping: nobody to tell.
        with contextlib.suppress(ChannelClosedError):
            self._tell.send(Suspect(self._hostname))


class Worker:
    def __init__(self, init: Init, channel: Channel) -> None:
        self.index = init.index
        self.config = init.config
        self._init = init
        self._channel = channel
        cfg = init.config
        self._key_function: KeyFunction = make_key_function(cfg.hashing.key)
        self.pool = Pool(cfg.hashing.scheme(), cfg.hashing.probing, cfg.hashing.balance_factor)
        #: Replicas that left the supervisor's pool while requests here were in flight.
        self._leaving: dict[str, Replica] = {}
        self.stats: Stats | None = Stats() if cfg.metrics.enabled else None
        self.access_log: AccessLog | None = (
            AccessLog(cfg.log.format, cfg.log.file) if cfg.log.access else None
        )
        self.transport = HttptoolsTransport(cfg.proxy)
        self.front: Front | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        init, cfg = self._init, self.config
        self._apply(View(init.version, init.members, init.routing))
        admin_pool = Pool(cfg.hashing.scheme(), cfg.hashing.probing)
        supervisor = admin_pool.add(1, SUPERVISOR)
        supervisor.handle = ReplicaHandle(SUPERVISOR, 1, init.admin_address, "")
        supervisor.state = State.UP
        await admin_pool.refresh_ring()
        proxy = Proxy(
            self.pool,
            self.transport,
            lambda: self.config,
            lambda: self._key_function,
            Recorder(self.stats, self.access_log),
        )
        forward = Proxy(admin_pool, self.transport, lambda: self.config, lambda: self._key_function)
        routes: dict[str, Dispatch] = dict.fromkeys(init.admin_paths, forward.dispatch)
        certificate = None
        if cfg.listen.tls is not None:
            context = await asyncio.to_thread(server_context, cfg.listen.tls)
            certificate = Certificate(cfg.listen.tls, context)
        front = self.front = Front(
            proxy.dispatch,
            routes,
            cfg.proxy.client_keepalive_timeout,
            cfg.proxy.client_timeout,
            cfg.proxy.max_client_connections,
            certificate.listening if certificate is not None else None,
        )
        if self.stats is not None:
            front.own_answer = self.stats.own
        if self.access_log is not None:
            self._tasks.append(asyncio.create_task(self.access_log.run()))
        if certificate is not None:
            interval = cfg.reload.interval
            self._tasks.append(asyncio.create_task(certificate.watch(lambda: interval)))
        sock = bind_socket(init.host, init.port, shared=True)
        await front.start(sock, backlog=init.backlog)
        self._channel.send(Ready(os.getpid()))
        listen = asyncio.create_task(self._listen())
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({listen, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listen.cancel()
            stop.cancel()
            await self._close()

    async def _listen(self) -> None:
        channel = self._channel
        while True:
            try:
                message = await channel.recv()
            except ChannelClosedError:
                log.info("worker %d: the supervisor is gone; stopping", self.index)
                return
            if isinstance(message, View):
                self._apply(message)
                channel.send(Applied(message.version))
            elif isinstance(message, ReportRequest):
                channel.send(self._report(message.ident))
            elif isinstance(message, Reconfigure):
                self._reconfigure(message.config)
            elif isinstance(message, Stop):
                return

    def _apply(self, view: View) -> None:
        for r in self.pool.mirror(view.members, view.routing):
            if r.in_flight:
                self._leaving[r.hostname] = r
        for r in self.pool.replicas.values():
            if not isinstance(r.suspect, _SuspectSignal):
                r.suspect = _SuspectSignal(r.hostname, self._channel)

    def _reconfigure(self, config: Config) -> None:
        old, self.config = self.config, config
        logging.getLogger("lbproxy").setLevel(config.log_level.upper())
        if config.hashing.key != old.hashing.key:
            self._key_function = make_key_function(config.hashing.key)

    def _report(self, ident: int) -> Report:
        counts = {r.hostname: (r.requests, r.in_flight) for r in self.pool.replicas.values()}
        for name, r in list(self._leaving.items()):
            counts.setdefault(name, (r.requests, r.in_flight))
            if not r.in_flight:
                del self._leaving[name]
        if self.stats is not None:
            # Asked once a second at least (the supervisor's sampler): bounded, as its own is.
            self.stats.forget([*counts, *(r.hostname for r in self.pool.replicas.values())])
        front = self.front
        return Report(
            ident,
            self.stats.replicas if self.stats is not None else None,
            counts,
            len(front.connections) if front is not None else 0,
        )

    async def _close(self) -> None:
        # Stop accepting first: new connections go to the other workers' sockets.
        if self.front is not None:
            await self.front.close(self.config.shutdown_timeout)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.access_log is not None:
            await self.access_log.flush()
            self.access_log.close()
        await self.transport.close()
        self._channel.close()


async def _main(fd: int) -> None:
    channel = await Channel.open(socket.socket(fileno=fd))
    init = await channel.recv()
    if not isinstance(init, Init):
        raise SystemExit(f"lbproxy worker: expected the supervisor's Init, got {init!r}")
    from ._log_format import configure as configure_logging

    configure_logging(init.config.log.format, init.config.log.file)
    logging.getLogger("lbproxy").setLevel(init.config.log_level.upper())
    worker = Worker(init, channel)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    await worker.serve()


def main() -> None:
    """``python -c 'from lbproxy._worker import main; main()' FD``: started by the supervisor
    with its end of the channel as FD."""
    # Ctrl-C reaches the whole terminal's group: the supervisor stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO)
    raise_open_files_limit()
    run(_main(int(sys.argv[1])))
