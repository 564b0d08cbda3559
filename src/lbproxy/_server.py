"""The one place that owns the balancer's lifecycle: startup, main loop, reload, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Literal

from ._access_log import AccessLog
from ._admin import AdminApi
from ._admin_pages import AdminPages, head_lines, load_assets
from ._config import Config
from ._control import Controller
from ._errors import ConfigError, LbproxyError
from ._events import Events
from ._history import History
from ._keys import KeyFunction, make_key_function
from ._messages import Answer
from ._metrics import CONTENT_TYPE, BalancerCollector, make_registry, render
from ._pool import Pool, Replica
from ._proxy import Proxy
from ._recording import Recorder
from ._reload import fingerprint, watch_config
from ._reload_policy import ReloadPlan, plan, weights
from ._replica_handle import ReplicaHandle
from ._ring_picture import RingPicture
from ._stats import Stats
from ._supervisor import Supervisor
from ._tasks import TaskSet
from ._tls import Certificate, server_context
from ._worker import bind_socket
from ._workers import Workers
from .backends import Backend, make_backend
from .backends._orchestrator import Orchestrator
from .front import Dispatch, Front, Request
from .transport import HttptoolsTransport, Transport

log = logging.getLogger("lbproxy")

#: Connections the kernel queues for the balancer's port before they are accepted.
BACKLOG = 1024


def _bind(host: str, port: int, shared: bool = False) -> socket.socket:
    try:
        return bind_socket(host, port, shared=shared)
    except OSError as e:
        raise LbproxyError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


class Server:
    """A running balancer. ``await serve()`` runs it until ``request_shutdown()``."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        #: Dotted fields set on the command line; they win over config.yaml on reloads too.
        self.overrides = dict(overrides or {})
        #: The config file's content hash when startup begins, near when ``config`` was read
        #: from it; the watcher compares against this, so edits made during startup are
        #: not lost.
        self._config_fingerprint: bytes | None = None
        self.tasks = TaskSet()
        self.pool = Pool(
            config.hashing.scheme(),
            config.hashing.probing,
            config.hashing.balance_factor,
            config.replicas.weight_of,
        )
        #: ``backend``: one built elsewhere (tests inject faults into a real one this way).
        self.backend: Backend = backend if backend is not None else make_backend(config)
        #: The data path's counters (None: ``metrics.enabled`` is false).
        self.stats: Stats | None = Stats() if config.metrics.enabled else None
        #: The dashboard's timeline.
        self.events = Events()
        self.history = History()
        self.ring_picture = RingPicture()
        self.access_log: AccessLog | None = (
            AccessLog(config.log.format, config.log.file) if config.log.access else None
        )
        self.supervisor = Supervisor(
            self.pool,
            self.backend,
            self.tasks,
            lambda: self.config,
            self.events,
            self.stats.heartbeats if self.stats is not None else None,
        )
        self.control = Controller(
            self.pool, self.supervisor, self.backend, lambda: self.config, self.events
        )
        self._key_function: KeyFunction = make_key_function(config.hashing.key)
        self.transport: Transport | None = None
        self._fronts: list[Front] = []
        #: The worker processes serving the port (``workers`` > 1), else None.
        self.workers: Workers | None = None
        #: With workers: the socket holding the port they listen on.
        self._reserved: socket.socket | None = None
        #: The main port's certificate (``listen.tls``), reloaded when its files change.
        self.certificate: Certificate | None = None
        self._should_exit = asyncio.Event()
        self.started = asyncio.Event()
        #: The bound ports of the balancer and of its admin listener, once started.
        self.port: int | None = None
        self.admin_port: int | None = None
        #: Config reloads applied since start (shown by /status).
        self.reloads = 0
        self._started_at = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            await self.startup()
            # What startup built lives as long as the process: out of the cyclic collector's
            # sight, the collections the data path's garbage triggers stay cheap.
            gc.freeze()
            await self._should_exit.wait()
        finally:
            await self.shutdown()

    def request_shutdown(self) -> None:
        self._should_exit.set()

    async def startup(self) -> None:
        cfg = self.config
        self._started_at = time.monotonic()
        logging.getLogger("lbproxy").setLevel(cfg.log_level.upper())
        # Bound before any replica starts, so a port in use fails at once; not listening
        # yet, so nobody is accepted before the replicas can serve. With worker processes
        # this socket only holds the port (and picks it when port is 0): each worker listens
        # on its own, bound alongside it.
        worker_count = cfg.worker_count()
        sock = _bind(cfg.listen.host, cfg.listen.port, shared=worker_count > 1)
        try:
            admin_sock = _bind(cfg.admin.host, cfg.admin.port)
        except BaseException:
            sock.close()
            raise
        try:
            if cfg.listen.tls is not None:
                context = await asyncio.to_thread(server_context, cfg.listen.tls)
                self.certificate = Certificate(cfg.listen.tls, context)
            if self.config_path is not None:
                self._config_fingerprint = await asyncio.to_thread(fingerprint, self.config_path)
            self.transport = HttptoolsTransport(cfg.proxy)
            await self.pool.refresh_ring()
            # Deaths are followed from before the first replica starts.
            self.tasks.spawn(self.backend.watch(), name="backend-watch")
            adopted = await self._adoptable(await self.backend.open())
        except BaseException:
            sock.close()
            admin_sock.close()
            raise
        if isinstance(self.backend, Orchestrator):
            # The orchestrator's N and slots, not replicas.count: the pool follows them.
            initial = await self.control.follow(self.backend, await self.backend.slots(), adopted)
            self.tasks.spawn(self.control.follow_forever(self.backend), name="follow")
        else:
            initial = self.control.start_initial(adopted)
        # Open the port once the replicas answer, so the first client is served, not refused.
        first, wait = initial, cfg.health.startup_timeout
        taken_over = {h.slot for h in adopted}
        if taken_over and worker_count == 1:
            # A restarted balancer: the replicas it took over run already and answer their
            # first heartbeat at once. Clients are queued meanwhile instead of refused, and
            # the port opens as soon as those answer (any new ones join as they come up), or
            # soon in any case (a hung one is replaced by its keeper).
            sock.listen(BACKLOG)
            first = [r for r in initial if r.slot in taken_over]
            wait = cfg.health.timeout * (cfg.health.healthy_threshold + 1)
        if not await self.supervisor.wait_up(first, wait):
            down = [r.hostname for r in first if not r.up.is_set()]
            log.warning("starting without %s: not up yet (still being tried)", ", ".join(down))
        proxy = Proxy(
            self.pool,
            self.transport,
            lambda: self.config,
            lambda: self._key_function,
            Recorder(self.stats, self.access_log),
        )
        main_api, admin_api = self._admin_api("main"), self._admin_api("admin")

        def admin_routes(api: AdminApi) -> dict[str, Dispatch]:
            # Carried out even if the client leaves (an /add is not undone by a hang-up).
            def serve(request: Request) -> None:
                request.spawn(api.serve(request), cancel_on_disconnect=False)

            def serve_fresh(request: Request) -> None:
                # /status shows the workers' counters: added up first.
                request.spawn(self._fresh(api.serve(request)), cancel_on_disconnect=False)

            if worker_count > 1:
                return {path: serve_fresh if path == "/status" else serve for path in api.routes}

            return dict.fromkeys(api.routes, serve)

        main = Front(
            proxy.dispatch,
            admin_routes(main_api),
            cfg.proxy.client_keepalive_timeout,
            cfg.proxy.client_timeout,
            cfg.proxy.max_client_connections,
            # With workers, this one serves only what they forward, on loopback: no TLS.
            self.certificate.listening
            if self.certificate is not None and worker_count == 1
            else None,
        )
        if self.stats is not None:
            main.own_answer = self.stats.own
        pages = await self._pages(
            lambda: self.workers.connections if self.workers else len(main.connections)
        )

        def not_proxied(request: Request) -> None:
            """The admin listener proxies nothing: the dashboard's pages, or a 404."""
            if self.workers is not None and request.raw_path == "/metrics":
                request.spawn(self._fresh_page(pages, admin_api, request))
            else:
                self._answer_page(pages, admin_api, request)

        admin = Front(
            not_proxied,
            admin_routes(admin_api),
            cfg.proxy.client_keepalive_timeout,
            cfg.proxy.client_timeout,
        )
        self._fronts = [main, admin]
        if self.access_log is not None:
            self.tasks.spawn(self.access_log.run(), name="access-log")
        self.tasks.spawn(self._sample(), name="sampler")
        if worker_count > 1:
            # The replica-changing endpoints of the port come here from the workers.
            inner = _bind("127.0.0.1", 0)
            await main.start(inner, backlog=BACKLOG)
            host, inner_port = inner.getsockname()[:2]
            self.workers = Workers(
                worker_count,
                cfg.listen.host,
                sock.getsockname()[1],
                f"{host}:{inner_port}",
                tuple(main_api.routes),
                self.pool,
                lambda: self.config,
                self.tasks,
                BACKLOG,
            )
            self.supervisor.elsewhere = self.workers.drained
            self._reserved = sock
            await self.workers.start()
        else:
            await main.start(sock, backlog=BACKLOG)
        await admin.start(admin_sock, backlog=128)
        self.port = sock.getsockname()[1]
        self.admin_port = admin_sock.getsockname()[1]
        self._after_start(cfg, main.scheme)

    async def _fresh(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` (an admin answer) with the workers' counters added up first."""
        if self.workers is not None:
            try:
                await self._refresh()
            except BaseException:
                coro.close()
                raise
        await coro

    async def _fresh_page(self, pages: AdminPages, admin_api: AdminApi, request: Request) -> None:
        await self._refresh()
        self._answer_page(pages, admin_api, request)

    async def _refresh(self) -> None:
        """Bring the workers' counters here: /metrics, /status and the dashboard show them."""
        workers = self.workers
        if workers is None:
            return
        await workers.refresh()
        workers.show(self._all_replicas())
        if self.stats is not None:
            self.stats.replicas = workers.stats

    def _answer_page(self, pages: AdminPages, admin_api: AdminApi, request: Request) -> None:
        page = pages.page(request.raw_path, request.method)
        if page is None:
            request.answer(admin_api.unknown_path(request.path))
        elif isinstance(page, Answer):
            request.answer(page)
        else:
            status, body, kind = page
            request.send_whole(
                status,
                "OK",
                head_lines(len(body), kind),
                b"" if request.method == "HEAD" else body,
                "length",
            )
        request.done()

    def _after_start(self, cfg: Config, scheme: str) -> None:
        if self.certificate is not None:
            self.tasks.spawn(
                self.certificate.watch(lambda: self.config.reload.interval), name="tls-watch"
            )
        if self.config_path is not None and cfg.reload.enabled:
            self.tasks.spawn(
                watch_config(
                    self.config_path,
                    lambda: self.config.reload.interval,
                    self._reloaded,
                    self._config_fingerprint,
                    self._reload_rejected,
                ),
                name="config-watch",
            )
        log.info(
            "lbproxy listening on %s:%d (%s%s) with %d replicas (%s backend, %s hashing); "
            "admin API on %s:%d",
            cfg.listen.host,
            self.port,
            scheme,
            f", {len(self.workers.procs)} worker processes" if self.workers else "",
            len(self.pool),
            cfg.replicas.backend,
            cfg.hashing.function,
            cfg.admin.host,
            self.admin_port,
        )
        self.started.set()

    def _admin_api(self, listener: Literal["main", "admin"]) -> AdminApi:
        return AdminApi(
            self.control,
            lambda: self.config,
            listener=listener,
            about=self._about,
            observed=self._observed,
        )

    async def _pages(self, connections: Callable[[], int]) -> AdminPages:
        """/metrics and the dashboard, for the admin listener."""
        assets = await asyncio.to_thread(load_assets)
        if self.stats is None:
            return AdminPages(assets, None, CONTENT_TYPE)
        collector = BalancerCollector(
            self.stats,
            self._all_replicas,
            lambda: self.ring_picture.shares(self.pool.ring),
            connections,
        )
        registry = make_registry(collector)
        return AdminPages(assets, lambda: render(registry), CONTENT_TYPE)

    def _all_replicas(self) -> list[Replica]:
        """The pool's replicas in /rep's order, then those draining."""
        return [*self.pool.replicas.values(), *self.supervisor.draining]

    async def _sample(self) -> None:
        """Once a second: the dashboard's history, and old counters forgotten."""
        loop = asyncio.get_running_loop()
        while True:
            await self._refresh()
            self.history.sample(self.pool.replicas.values(), self.stats, loop.time())
            if self.stats is not None:
                self.stats.forget(r.hostname for r in self._all_replicas())
            await asyncio.sleep(self.history.step)

    def _observed(self, replica: Replica) -> dict[str, object]:
        """A replica's figures for /status and the dashboard beyond its totals."""
        out: dict[str, object] = {"rate": self.history.rate(replica.slot)}
        out.update(self.history.recent(replica.hostname))
        s = self.stats.replicas.get(replica.hostname) if self.stats is not None else None
        # 5xx answers in all; null when metrics are off.
        out["errors"] = s.errors if s is not None else (0 if self.stats is not None else None)
        return out

    def _about(self) -> dict[str, object]:
        """What /status tells besides N and the replicas."""
        from . import __version__  # the package, fully imported by now

        cfg = self.config
        return {
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "version": __version__,
            "backend": cfg.replicas.backend,
            # /add, /rm and /kill can change the replicas (the static backend's cannot be).
            "can_scale": self.backend.manages_lifecycle,
            "hashing": cfg.hashing.function,
            "config_reloads": self.reloads,
            "draining": len(self.supervisor.draining),
            "metrics": self.stats is not None,
            "token_required": cfg.admin.token is not None,
            "workers": self.workers.describe() if self.workers is not None else [],
            "ring": {
                "slots": self.pool.ring.scheme.slots,
                "arcs": [
                    [round(a, 5), round(b, 5), slot]
                    for a, b, slot in self.ring_picture.arcs(self.pool.ring)
                ],
                "shares": {
                    str(slot): round(share, 5)
                    for slot, share in self.ring_picture.shares(self.pool.ring).items()
                },
            },
            "events": self.events.recent(100),
            "history": self.history.series(),
        }

    async def shutdown(self) -> None:
        log.info("shutting down")
        # From now on no keeper is restarted and /add, /rm are refused (503); an /add waiting
        # for its replicas answers at once.
        self.supervisor.begin_shutdown()
        if self.workers is not None:
            # The data path first (each worker lets the answers under way finish), while
            # every replica still serves.
            self.pool.drain_all()
            await self.workers.close(self.config.shutdown_timeout)
        # Keepers first, so nothing replaces the replicas this shutdown stops. Drain tasks go
        # too: what they waited for is waited for below, within shutdown_timeout.
        await self.tasks.close()
        # No new request goes to any replica; those in flight finish.
        self.pool.drain_all()
        fronts, self._fronts = self._fronts, []
        # Each stops listening, closes idle connections, lets responses under way finish.
        await asyncio.gather(*(f.close(self.config.shutdown_timeout) for f in fronts))
        if self.access_log is not None:
            await self.access_log.flush()  # the lines of the last answers
            self.access_log.close()
        if self._reserved is not None:
            self._reserved.close()
        await self.backend.close()
        await self.supervisor.close()
        if self.transport is not None:
            await self.transport.close()
        log.info("stopped")

    async def _adoptable(self, handles: list[ReplicaHandle]) -> list[ReplicaHandle]:
        """The replicas left running by an earlier balancer that fit under replicas.max;
        the others (highest slots) are stopped."""
        cap = self.config.replicas.max
        if len(handles) <= cap or isinstance(self.backend, Orchestrator):
            return handles
        keep, extra = handles[:cap], handles[cap:]
        log.warning("stopping %d running replicas above replicas.max (%d)", len(extra), cap)
        await asyncio.gather(*(self.backend.stop(h) for h in extra))
        return keep

    # -- reload ----------------------------------------------------------------------------

    async def _reloaded(self, config: Config) -> None:
        """config.yaml changed: apply it, with the command line's overrides still on top."""
        try:
            reload = plan(self.config, config, self.overrides)
        except ConfigError as e:
            log.error("config reload rejected, keeping the running configuration: %s", e)
            self._reload_rejected(str(e))
            return
        await self._carry_out(reload)

    def _reload_rejected(self, why: str) -> None:
        if self.stats is not None:
            self.stats.reloads["failure"] += 1
        self.events.add("reloaded", detail=f"rejected: {why}")

    async def apply(self, new: Config) -> None:
        """Apply a changed configuration to the running balancer (``_reload_policy``)."""
        await self._carry_out(plan(self.config, new))

    async def _carry_out(self, reload: ReloadPlan) -> None:
        effective = reload.effective
        if reload.restart_only:
            log.warning(
                "these changes take effect after a restart: %s", ", ".join(reload.restart_only)
            )
        self.config = effective
        self.reloads += 1
        if self.stats is not None:
            self.stats.reloads["success"] += 1
        later = (
            f"; after a restart: {', '.join(reload.restart_only)}" if reload.restart_only else ""
        )
        self.events.add("reloaded", detail=f"applied{later}")
        logging.getLogger("lbproxy").setLevel(effective.log_level.upper())
        if reload.hashing_changed:
            self._key_function = make_key_function(effective.hashing.key)
            log.info("hashing is now %s", effective.hashing.model_dump())
        if reload.weights_changed:
            log.info("replica weights are now %s", weights(effective))
        if reload.rebuild_table:
            await self.pool.configure(
                effective.hashing.scheme(),
                effective.hashing.probing,
                effective.hashing.balance_factor,
                effective.replicas.weight_of,
            )
        if reload.count is not None:
            await self.control.scale_to(reload.count)
