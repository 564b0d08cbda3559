"""The one place that owns the balancer's lifecycle: startup, main loop, reload, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ._admin import AdminApi
from ._config import RELOADABLE, Config, same_but_weights, with_overrides
from ._control import Controller
from ._errors import ConfigError, LbproxyError
from ._keys import KeyFunction, make_key_function
from ._pool import Pool
from ._proxy import Proxy
from ._reload import fingerprint, watch_config
from ._supervisor import Supervisor
from ._tasks import TaskSet
from ._tls import Certificate, server_context
from .backends import Backend, ReplicaHandle, make_backend
from .front import Dispatch, Front, Request
from .transport import HttptoolsTransport, Transport

log = logging.getLogger("lbproxy")

#: Connections the kernel queues for the balancer's port before they are accepted.
BACKLOG = 1024


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    """Dotted names of changed fields that a reload cannot apply."""
    changed: list[str] = []

    def walk(a: object, b: object, prefix: str) -> None:
        if prefix and any(prefix == r or prefix.startswith(r + ".") for r in RELOADABLE):
            return
        if prefix == "replicas.static" and same_but_weights(a, b):  # type: ignore[arg-type]
            return
        if hasattr(type(a), "model_fields") and type(a) is type(b):
            for name in type(a).model_fields:
                walk(getattr(a, name), getattr(b, name), f"{prefix}.{name}" if prefix else name)
        elif a != b:
            changed.append(prefix)

    walk(old, new, "")
    return changed


def _merge_reloadable(old: Config, new: Config) -> Config:
    """``old`` with every reloadable field taken from ``new``."""
    data = old.model_dump()
    fresh = new.model_dump()
    for dotted in RELOADABLE:
        *parents, leaf = dotted.split(".")
        src, dst = fresh, data
        for p in parents:
            src, dst = src[p], dst[p]
        dst[leaf] = src[leaf]
    if same_but_weights(old.replicas.static, new.replicas.static):
        data["replicas"]["static"] = fresh["replicas"]["static"]
    return Config.model_validate(data)


def _weights(config: Config) -> tuple[object, ...]:
    """Every weight setting: (replicas.weight, replicas.weights, the static entries')."""
    r = config.replicas
    return r.weight, r.weights, [s.weight for s in r.static]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise LbproxyError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


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
        self.supervisor = Supervisor(self.pool, self.backend, self.tasks, lambda: self.config)
        self.control = Controller(self.pool, self.supervisor, self.backend, lambda: self.config)
        self._key_function: KeyFunction = make_key_function(config.hashing.key)
        self.transport: Transport | None = None
        self._fronts: list[Front] = []
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
        # yet, so nobody is accepted before the replicas can serve.
        sock = _bind(cfg.listen.host, cfg.listen.port)
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
        if cfg.replicas.backend == "static":
            initial = self.control.start_initial(
                len(cfg.replicas.static), [s.hostname for s in cfg.replicas.static]
            )
        else:
            initial = self.control.start_initial(cfg.replicas.count, adopted=adopted)
        # Open the port once the replicas answer, so the first client is served, not refused.
        first, wait = initial, cfg.health.startup_timeout
        taken_over = {h.slot for h in adopted}
        if taken_over:
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
        proxy = Proxy(self.pool, self.transport, lambda: self.config, lambda: self._key_function)
        main_api, admin_api = self._admin_api("main"), self._admin_api("admin")

        def admin_routes(api: AdminApi) -> dict[str, Dispatch]:
            # Carried out even if the client leaves (an /add is not undone by a hang-up).
            def serve(request: Request) -> None:
                request.spawn(api.serve(request), cancel_on_disconnect=False)

            return dict.fromkeys(api.routes, serve)

        def not_proxied(request: Request) -> None:  # the admin listener proxies nothing
            request.answer(admin_api.unknown_path(request.path))
            request.done()

        main = Front(
            proxy.dispatch,
            admin_routes(main_api),
            cfg.proxy.client_keepalive_timeout,
            cfg.proxy.client_timeout,
            cfg.proxy.max_client_connections,
            self.certificate.listening if self.certificate is not None else None,
        )
        admin = Front(
            not_proxied,
            admin_routes(admin_api),
            cfg.proxy.client_keepalive_timeout,
            cfg.proxy.client_timeout,
        )
        self._fronts = [main, admin]
        await main.start(sock, backlog=BACKLOG)
        await admin.start(admin_sock, backlog=128)
        self.port = sock.getsockname()[1]
        self.admin_port = admin_sock.getsockname()[1]
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
                ),
                name="config-watch",
            )
        log.info(
            "lbproxy listening on %s:%d (%s) with %d replicas (%s backend, %s hashing); "
            "admin API on %s:%d",
            cfg.listen.host,
            self.port,
            main.scheme,
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
            can_scale=self.backend.manages_lifecycle,
            listener=listener,
            about=self._about,
        )

    def _about(self) -> dict[str, object]:
        """What /status tells besides N and the replicas."""
        from . import __version__  # the package, fully imported by now

        cfg = self.config
        return {
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "version": __version__,
            "backend": cfg.replicas.backend,
            "hashing": cfg.hashing.function,
            "config_reloads": self.reloads,
            "draining": len(self.supervisor.draining),
        }

    async def shutdown(self) -> None:
        log.info("shutting down")
        # From now on no keeper is restarted and /add, /rm are refused (503); an /add waiting
        # for its replicas answers at once.
        self.supervisor.begin_shutdown()
        # Keepers first, so nothing replaces the replicas this shutdown stops. Drain tasks go
        # too: what they waited for is waited for below, within shutdown_timeout.
        await self.tasks.close()
        # No new request goes to any replica; those in flight finish.
        self.pool.drain_all()
        fronts, self._fronts = self._fronts, []
        # Each stops listening, closes idle connections, lets answers under way finish.
        await asyncio.gather(*(f.close(self.config.shutdown_timeout) for f in fronts))
        await self.backend.close()
        await self.supervisor.close()
        if self.transport is not None:
            await self.transport.close()
        log.info("stopped")

    async def _adoptable(self, handles: list[ReplicaHandle]) -> list[ReplicaHandle]:
        """The replicas left running by an earlier balancer that fit under replicas.max;
        the others (highest slots) are stopped."""
        cap = self.config.replicas.max
        if len(handles) <= cap:
            return handles
        keep, extra = handles[:cap], handles[cap:]
        log.warning("stopping %d running replicas above replicas.max (%d)", len(extra), cap)
        await asyncio.gather(*(self.backend.stop(h) for h in extra))
        return keep

    # -- reload ----------------------------------------------------------------------------

    async def _reloaded(self, config: Config) -> None:
        """config.yaml changed: apply it, with the command line's overrides still on top."""
        if self.overrides:
            try:
                config = with_overrides(config, **self.overrides)
            except ConfigError as e:
                log.error("config reload rejected, keeping the running configuration: %s", e)
                return
        await self.apply(config)

    async def apply(self, new: Config) -> None:
        """Apply a changed configuration to the running balancer."""
        old = self.config
        ignored = _restart_only_changes(old, new)
        if ignored:
            log.warning("these changes take effect after a restart: %s", ", ".join(ignored))
        effective = _merge_reloadable(old, new)
        self.config = effective
        self.reloads += 1
        logging.getLogger("lbproxy").setLevel(effective.log_level.upper())
        if effective.hashing != old.hashing:
            self._key_function = make_key_function(effective.hashing.key)
            log.info("hashing is now %s", effective.hashing.model_dump())
        if _weights(effective) != _weights(old):
            log.info("replica weights are now %s", _weights(effective))
        if effective.hashing != old.hashing or _weights(effective) != _weights(old):
            await self.pool.configure(
                effective.hashing.scheme(),
                effective.hashing.probing,
                effective.hashing.balance_factor,
                effective.replicas.weight_of,
            )
        if effective.replicas.count != old.replicas.count and self.backend.manages_lifecycle:
            log.info("replica count %d -> %d", old.replicas.count, effective.replicas.count)
            await self.control.scale_to(effective.replicas.count)
