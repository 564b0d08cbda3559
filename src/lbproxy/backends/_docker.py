"""Docker backend: each replica a container on one network, created through the Docker API.

Containers carry labels naming this balancer (``lbproxy.instance``), their ring slot and their
slot's restart count, so a restarted balancer adopts the running ones in their slots (with
their counts) instead of duplicating or orphaning them, and replaces in its slot any that died
while no balancer ran. Deaths are learnt from Docker's event stream the moment they happen;
heartbeats remain the safety net for a replica that hangs without dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import aiodocker
from aiodocker.events import DockerEvents

from .._config import DockerBackendConfig
from .._errors import BackendError, NameInUseError
from .._names import name_problem
from .._replica_handle import ReplicaHandle
from ._exits import Exits

log = logging.getLogger("lbproxy.docker")

LABEL_INSTANCE = "lbproxy.instance"
LABEL_SLOT = "lbproxy.slot"
LABEL_RESTARTS = "lbproxy.restarts"
#: Container events that mean a replica is gone (``kill`` and ``stop`` end in ``die``).
DEATH_EVENTS = ("die", "destroy", "oom")
#: The fields of a container listing that the backend reads.
_LISTED = ("Id", "Names", "State", "Status", "Labels", "NetworkSettings")
#: Longest pause between two attempts to reconnect the event stream.
EVENTS_BACKOFF_MAX = 10.0
#: How far back a reconnected event stream replays, covering the engine's and our clocks
#: disagreeing slightly; replaying an event twice is harmless.
EVENTS_REPLAY = 1.0


def missing_image_message(image: str) -> str:
    return (
        f"image {image!r} is not on this Docker engine, and lbproxy never pulls: "
        "build it with `make images` (or set replicas.docker.image)"
    )


def docker_client(url: str | None) -> aiodocker.Docker:
    """A client of the engine at ``url`` (None: DOCKER_HOST, else the local socket)."""
    try:
        return aiodocker.Docker(url=url)
    except (ValueError, OSError) as e:
        raise BackendError(f"cannot use the Docker engine: {e}") from e


def death_reason(event: dict[str, Any]) -> str:
    """What a container event says about how the replica ended."""
    action = event.get("Action") or event.get("status") or "?"
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    if action == "die":
        return f"container exited with status {attributes.get('exitCode', '?')}"
    if action == "oom":
        return "container ran out of memory"
    return "container was removed"


def slot_of(container: dict[str, Any]) -> tuple[str, int, int] | None:
    """(hostname, slot, restarts) of a container listing entry, running or not, or None if
    its name or labels are not a replica's."""
    labels = container.get("Labels") or {}
    names = container.get("Names") or []
    hostname = names[0].lstrip("/") if names else ""
    slot = labels.get(LABEL_SLOT, "")
    restarts = labels.get(LABEL_RESTARTS, "0")
    if not slot.isdigit() or int(slot) < 1 or name_problem(hostname):
        return None
    return hostname, int(slot), int(restarts) if restarts.isdigit() else 0


def replica_of(container: dict[str, Any], network: str, port: int) -> ReplicaHandle | None:
    """The replica a container listing entry describes, or None if it is not a usable one."""
    named = slot_of(container)
    ip = (((container.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}).get(
        "IPAddress"
    )
    if named is None or not ip:
        return None
    hostname, slot, restarts = named
    return ReplicaHandle(hostname, slot, f"{ip}:{port}", container["Id"], restarts)


async def follow_events(
    docker: aiodocker.Docker,
    filters: dict[str, list[str]],
    on_connect: Callable[[], Awaitable[None]],
    on_event: Callable[[dict[str, Any]], None],
) -> None:
    """Follow the engine's events matching ``filters`` for ever, reconnecting when the stream
    breaks. ``on_connect`` runs after each (re)connection, to catch up with what happened
    while the stream was down (a missed death); events from a little before the connection
    are replayed too (a replica adopted while it connects), and a replayed event is
    harmless."""
    delay = 0.5
    since = time.time() - EVENTS_REPLAY
    while True:
        events = DockerEvents(docker)
        subscriber = events.subscribe(create_task=False)
        pump = asyncio.ensure_future(events.run(filters=filters, since=f"{since:.6f}"))
        try:
            await on_connect()
            while (event := await subscriber.get()) is not None:
                on_event(event)
                delay = 0.5
        except (aiodocker.DockerError, OSError, BackendError) as e:
            log.warning("cannot catch up with the engine: %s", e)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        since = time.time() - EVENTS_REPLAY
        log.warning("Docker event stream ended; reconnecting in %.1fs", delay)
        await asyncio.sleep(delay)
        delay = min(EVENTS_BACKOFF_MAX, delay * 2)


class DockerBackend:
    manages_lifecycle = True
    #: The balancer names the replicas.
    fixed_hostnames = None

    def __init__(self, config: DockerBackendConfig, stop_timeout: float = 5.0) -> None:
        self._config = config
        self._stop_timeout = stop_timeout
        self._docker: aiodocker.Docker | None = None
        #: Containers this balancer runs (started or adopted), by container id.
        self._handles: dict[str, ReplicaHandle] = {}
        #: Set when a container's death is known; created before the container is started,
        #: so a death while it starts is not missed.
        self._exits = Exits()
        #: Removals that outlive the start() that needed them (see start).
        self._cleanups: set[asyncio.Task[None]] = set()
        #: The network was made by a balancer of this instance (not by compose or a user),
        #: so it is removed with the last replica.
        self._own_network = False

    @property
    def _label(self) -> str:
        return f"{LABEL_INSTANCE}={self._config.instance}"

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = docker_client(self._config.url)
        return self._docker

    # -- the Backend interface -------------------------------------------------------------

    async def open(self) -> list[ReplicaHandle]:
        """Check the engine, image and network; adopt this balancer's running replicas,
        remove its dead ones and start a replacement in the slot of each (its restart
        count one more), so a balancer that was down finds N as it was."""
        docker = self._client()
        try:
            await docker.version()
        except (aiodocker.DockerError, OSError) as e:
            raise BackendError(f"cannot reach the Docker engine ({docker.docker_host}): {e}") from e
        image = self._config.image
        try:
            await docker.images.inspect(image)
        except aiodocker.DockerError as e:
            if e.status == 404:
                raise BackendError(missing_image_message(image)) from None
            raise BackendError(f"cannot inspect image {image!r}: {e.message}") from e
        await self._ensure_network()
        containers = await self._containers()
        adopted: dict[int, ReplicaHandle] = {}
        for container in containers:
            handle = replica_of(container, self._config.network, self._config.port)
            if container.get("State") == "running" and handle and handle.slot not in adopted:
                adopted[handle.slot] = handle
                self._track(handle)
        dead: dict[int, tuple[str, int]] = {}
        stale: list[str] = []
        for container in containers:
            if container["Id"] in self._handles:
                continue
            stale.append(container["Id"])
            named = slot_of(container)
            if named is not None and named[1] not in adopted and named[1] not in dead:
                hostname, slot, restarts = named
                dead[slot] = (hostname, restarts + 1)
                log.warning(
                    "replica %s (slot %d) ended while no balancer ran (%s); replacing it",
                    hostname,
                    slot,
                    container.get("Status") or container.get("State") or "?",
                )
        if stale:
            log.info("removing %d dead or unusable replica container(s)", len(stale))
            await asyncio.gather(*(self._remove(cid) for cid in stale))
        started = await asyncio.gather(
            *(self.start(name, slot, restarts) for slot, (name, restarts) in dead.items()),
            return_exceptions=True,
        )
        for (slot, (name, _)), handle in zip(dead.items(), started, strict=True):
            if isinstance(handle, ReplicaHandle):
                adopted[slot] = handle
            elif isinstance(handle, BackendError):
                # The slot stays empty; the balancer fills up to replicas.count as usual.
                log.error("cannot replace %s in slot %d: %s", name, slot, handle)
            else:
                raise handle
        return [adopted[s] for s in sorted(adopted)]

    async def start(self, hostname: str, slot: int, restarts: int = 0) -> ReplicaHandle:
        cfg = self._config
        # The engine finishes a create it has begun even if we stop waiting for it; a start
        # cancelled meanwhile (shutdown, /rm) must still undo it, or it leaves an orphan.
        create = asyncio.ensure_future(self._create(hostname, slot, restarts))
        try:
            container = await asyncio.shield(create)
        except asyncio.CancelledError:
            self._in_background(self._remove_created(create))
            raise
        cid: str = container.id
        self._exits.track(cid)
        try:
            await container.start()
            info = await container.show()
        except aiodocker.DockerError as e:
            await self._forget_and_remove(cid)
            raise BackendError(f"cannot start container {hostname!r}: {e.message}") from e
        except BaseException:
            self._forget(cid)
            self._in_background(self._remove(cid))
            raise
        networks = info.get("NetworkSettings", {}).get("Networks") or {}
        ip = (networks.get(cfg.network) or {}).get("IPAddress")
        if not ip:
            state = info.get("State", {})
            await self._forget_and_remove(cid)
            raise BackendError(
                f"container {hostname!r} has no address on network {cfg.network!r} "
                f"(state {state.get('Status', '?')}, exit code {state.get('ExitCode', '?')})"
            )
        handle = ReplicaHandle(hostname, slot, f"{ip}:{cfg.port}", cid, restarts)
        self._handles[cid] = handle
        if not info.get("State", {}).get("Running", False):
            self._died(cid, f"container exited at once with status {info['State'].get('ExitCode')}")
        log.debug("started container %s (%s) at %s", hostname, cid[:12], handle.address)
        return handle

    async def unavailable(self, hostnames: Sequence[str]) -> list[str]:
        """Names taken by containers that are not this balancer's: container names are
        global on an engine."""
        docker = self._client()
        taken = []
        for name in hostnames:
            try:
                info = await docker.containers.container(name).show()
            except aiodocker.DockerError as e:
                if e.status == 404:
                    continue
                raise BackendError(f"cannot look up container {name!r}: {e.message}") from e
            if not self._ours(info):
                taken.append(name)
        return taken

    async def stop(self, handle: ReplicaHandle) -> None:
        await self._remove(handle.ident, graceful=True)
        self._forget(handle.ident)

    async def kill(self, handle: ReplicaHandle) -> None:
        container = self._client().containers.container(handle.ident)
        try:
            await container.kill()  # SIGKILL: the engine reports the death as for a crash
        except aiodocker.DockerError as e:
            if e.status not in (404, 409):  # gone already, or not running any more
                raise BackendError(f"cannot kill {handle.hostname}: {e.message}") from e
        except OSError as e:
            raise BackendError(f"cannot kill {handle.hostname}: {e}") from e

    async def wait_exit(self, handle: ReplicaHandle) -> str:
        return await self._exits.wait(handle.ident, "container stopped")

    async def list(self) -> list[ReplicaHandle]:
        """This balancer's running replica containers, as the engine lists them."""
        out = []
        for container in await self._containers():
            handle = replica_of(container, self._config.network, self._config.port)
            if handle is not None and container.get("State") == "running":
                out.append(handle)
        return out

    async def watch(self) -> None:
        """Follow the engine's container events for ever, reconnecting when the stream breaks.

        After each (re)connection the containers are listed again, so a death that happened
        while the stream was down is still reported.
        """
        filters = {"type": ["container"], "label": [self._label], "event": list(DEATH_EVENTS)}
        await follow_events(self._client(), filters, self._resync, self._on_death)

    def _on_death(self, event: dict[str, Any]) -> None:
        cid = (event.get("Actor") or {}).get("ID") or event.get("id")
        if cid:
            self._died(cid, death_reason(event))

    async def close(self) -> None:
        try:
            if self._cleanups:
                await asyncio.wait(set(self._cleanups), timeout=60)
            if self._config.remove_on_shutdown and self._docker is not None:
                ids = set(self._handles)
                with contextlib.suppress(aiodocker.DockerError, OSError):
                    ids.update(c["Id"] for c in await self._containers())
                await asyncio.gather(
                    *(self._remove(cid, graceful=True) for cid in ids), return_exceptions=True
                )
                for cid in ids:
                    self._forget(cid)
                if self._own_network:
                    # Fails, harmlessly, while anything else is still attached to it.
                    with contextlib.suppress(aiodocker.DockerError, OSError):
                        await (await self._docker.networks.get(self._config.network)).delete()
        finally:
            if self._docker is not None:
                await self._docker.close()
                self._docker = None

    # -- helpers ---------------------------------------------------------------------------

    async def _containers(self) -> list[dict[str, Any]]:
        """Every container of this balancer's, running or not, as the engine lists them."""
        listed = await self._client().containers.list(all=True, filters={"label": [self._label]})
        return [{k: c[k] for k in _LISTED if k in c} for c in listed]

    async def _ensure_network(self) -> None:
        docker = self._client()
        name = self._config.network
        try:
            info = await (await docker.networks.get(name)).show()
            # One an earlier balancer of ours created: ours to remove when we are done.
            self._own_network = (info.get("Labels") or {}).get(LABEL_INSTANCE) == (
                self._config.instance
            )
            return
        except aiodocker.DockerError as e:
            if e.status != 404:
                raise BackendError(f"cannot inspect network {name!r}: {e.message}") from e
        try:
            await docker.networks.create(
                {
                    "Name": name,
                    "Driver": "bridge",
                    "CheckDuplicate": True,
                    "Labels": {LABEL_INSTANCE: self._config.instance},
                }
            )
            self._own_network = True
            log.info("created Docker network %s", name)
        except aiodocker.DockerError as e:
            if e.status != 409:  # created meanwhile by someone else: fine
                raise BackendError(f"cannot create network {name!r}: {e.message}") from e

    def _container_config(self, hostname: str, slot: int, restarts: int) -> dict[str, Any]:
        cfg = self._config
        env = {**cfg.environment, "SERVER_ID": hostname, "PORT": str(cfg.port)}
        host_config: dict[str, Any] = {
            "NetworkMode": cfg.network,
            # A tiny init as PID 1 forwards signals and reaps children.
            "Init": True,
            # The balancer replaces dead replicas itself; Docker must not restart them too.
            "RestartPolicy": {"Name": "no"},
        }
        if cfg.memory_mb is not None:
            host_config["Memory"] = cfg.memory_mb * 1024 * 1024
        if cfg.cpus is not None:
            host_config["NanoCpus"] = int(cfg.cpus * 1e9)
        return {
            "Image": cfg.image,
            "Hostname": hostname,
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": {
                LABEL_INSTANCE: cfg.instance,
                LABEL_SLOT: str(slot),
                LABEL_RESTARTS: str(restarts),
            },
            "ExposedPorts": {f"{cfg.port}/tcp": {}},
            "StopTimeout": math.ceil(self._stop_timeout),
            "HostConfig": host_config,
            "NetworkingConfig": {"EndpointsConfig": {cfg.network: {"Aliases": [hostname]}}},
        }

    async def _create(
        self, hostname: str, slot: int, restarts: int
    ) -> aiodocker.docker.DockerContainer:
        docker = self._client()
        config = self._container_config(hostname, slot, restarts)
        for attempt in (1, 2):
            try:
                return await docker.containers.create(config, name=hostname)
            except aiodocker.DockerError as e:
                if e.status == 404 and "image" in e.message.lower():
                    raise BackendError(missing_image_message(self._config.image)) from None
                if e.status != 409 or attempt == 2:
                    raise BackendError(f"cannot create container {hostname!r}: {e.message}") from e
            # The name is taken: a leftover of ours is removed; anyone else's is not touched.
            try:
                existing = await docker.containers.container(hostname).show()
            except aiodocker.DockerError as e:
                raise BackendError(f"cannot create container {hostname!r}: {e.message}") from e
            if not self._ours(existing):
                raise NameInUseError(
                    f"a container named {hostname!r} already exists and is not a replica of "
                    f"this balancer (instance {self._config.instance!r})"
                )
            log.info("removing leftover container %s before reusing its name", hostname)
            await self._remove(existing["Id"])
        raise AssertionError("unreachable")

    async def _remove(self, cid: str, graceful: bool = False) -> None:
        """Stop (politely when ``graceful``) and delete a container; gone already is fine."""
        container = self._client().containers.container(cid)
        try:
            if graceful:
                with contextlib.suppress(aiodocker.DockerError):
                    await container.stop(t=math.ceil(self._stop_timeout))
            await container.delete(force=True, v=True)
        except aiodocker.DockerError as e:
            # 404: already gone; 409: its removal is already in progress.
            if e.status not in (404, 409):
                raise BackendError(f"cannot remove container {cid[:12]}: {e.message}") from e
        except OSError as e:
            raise BackendError(f"cannot remove container {cid[:12]}: {e}") from e

    def _in_background(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run a cleanup that must finish even though its caller was cancelled; close()
        waits for it."""
        task = asyncio.ensure_future(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _remove_created(self, create: asyncio.Future[Any]) -> None:
        with contextlib.suppress(Exception):
            await self._remove((await create).id)

    async def _forget_and_remove(self, cid: str) -> None:
        self._forget(cid)
        with contextlib.suppress(BackendError):
            await self._remove(cid)

    def _ours(self, container: dict[str, Any]) -> bool:
        labels = (container.get("Config") or {}).get("Labels") or {}
        return bool(labels.get(LABEL_INSTANCE) == self._config.instance)

    def _track(self, handle: ReplicaHandle) -> None:
        self._handles[handle.ident] = handle
        self._exits.track(handle.ident)

    def _forget(self, cid: str) -> None:
        self._handles.pop(cid, None)
        self._exits.forget(cid)

    def _died(self, cid: str, reason: str) -> None:
        self._exits.died(cid, reason)

    async def _resync(self) -> None:
        """Report the deaths of replicas that are no longer running (missed events)."""
        running = {c["Id"] for c in await self._containers() if c.get("State") == "running"}
        for cid in [c for c in self._handles if c not in running]:
            self._died(cid, "container is no longer running")
