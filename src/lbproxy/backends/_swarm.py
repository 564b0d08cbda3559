"""Swarm backend: the replicas are the tasks of one Docker Swarm service, which Swarm keeps.

The balancer never starts or stops a task: it creates the service if it is missing (else
adopts it), follows its tasks (the engine's event stream for this node's containers, plus a
listing every ``poll_interval`` for the other nodes'), and changes N only by updating the
service's replica count with the spec version it read (optimistic concurrency: a balancer
that loses a race re-reads and tries its change again on the new count). Swarm restarts a dead
task in its slot after ``restart_delay``; the ring is keyed by the task **slot**, so the
replacement gets back exactly the keys of the task it replaces, and every balancer that
follows the service computes the same ring. See docs/swarm.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiodocker

from .._config import SwarmBackendConfig
from .._errors import BackendError
from .._replica_handle import ReplicaHandle
from ._docker import docker_client, follow_events, missing_image_message
from ._exits import Exits

log = logging.getLogger("lbproxy.swarm")

T = TypeVar("T")

#: On the services and the network lbproxy creates (`make swarm-down` removes what has it).
LABEL = "lbproxy.swarm"
#: The image the service was created from, as named (the spec holds its id).
LABEL_IMAGE = "lbproxy.image"
#: Every task's hostname and SERVER_ID (what /home answers): the same in a slot for ever.
SLOT_NAME = "{{.Service.Name}}-{{.Task.Slot}}"
#: Desired states up to "running": the slot is meant to run (swarmkit's "runnable" tasks).
RUNNABLE = frozenset(
    {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}
)
#: The engine's answer to an update that carried an old spec version.
OUT_OF_SEQUENCE = "update out of sequence"
#: Updates tried in a row when other balancers keep changing the service meanwhile.
SCALE_ATTEMPTS = 8
#: Longest wait for Swarm to carry out a scale-down before /rm answers with the pool as it is.
SCALE_DOWN_WAIT = 15.0
#: The pace at which the tasks are listed while a scale-down is carried out.
SCALE_DOWN_POLL = 0.2
#: Swarm's own heartbeat of each task (bash, which the replica image has, speaks just enough
#: HTTP): until it first passes, Swarm does not count a task as running, so a rolling update
#: stops the old task only once the new one answers, and it restarts a task that hangs.
HEALTH_SCRIPT = (
    "exec 3<>/dev/tcp/127.0.0.1/$PORT && printf '%s\\r\\n\\r\\n' {request} >&3 "
    '&& read -r status <&3 && [[ "$status" == *" 200 "* ]]'
)


def health_script(path: str) -> str:
    """The task's health check: ``GET path`` answered 200 on its own port."""
    return HEALTH_SCRIPT.replace("{request}", shlex.quote(f"GET {path} HTTP/1.0"))


HEALTH_INTERVAL = 0.5
HEALTH_TIMEOUT = 2.0
HEALTH_RETRIES = 3
#: Failed checks while a task starts do not count for this long (a first pass ends it).
HEALTH_START_PERIOD = 20.0
#: Container actions that mean a task is gone.
DEATH_EVENTS = frozenset({"die", "oom"})
#: Labels Swarm puts on a task's container.
TASK_ID_LABEL = "com.docker.swarm.task.id"
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


def nanoseconds(seconds: float) -> int:
    return int(seconds * 1e9)


def desired_slots(replicas: int, runnable: Iterable[int]) -> frozenset[int]:
    """The slots Swarm runs once it has carried out a count of ``replicas``: each slot with a
    task meant to run, plus, when there are fewer, the lowest free ones (which is where
    swarmkit puts new tasks). While a scale-down is under way the extra slots are still there,
    serving, until Swarm has chosen and removed them."""
    slots = set(runnable)
    s = 0
    while len(slots) < replicas:
        s += 1
        slots.add(s)
    return frozenset(slots)


@dataclass(frozen=True, slots=True)
class Task:
    """What the balancer reads of one task of the service."""

    id: str
    slot: int
    state: str
    desired: str
    created: tuple[str, int]
    #: ``ip:port`` on the overlay network, once the task has an address there.
    address: str | None
    message: str

    @property
    def serving(self) -> bool:
        return self.state == "running" and self.desired == "running" and self.address is not None


def created_key(stamp: str) -> tuple[str, int]:
    """An RFC 3339 time as Docker writes it (fraction of 0-9 digits, trailing zeros cut)
    made comparable: (seconds part, nanoseconds)."""
    head, _, rest = stamp.partition(".")
    digits = "".join(c for c in rest if c.isdigit())[:9]
    return head, int(digits.ljust(9, "0")) if digits else 0


def task_of(raw: dict[str, Any], network: str, port: int) -> Task | None:
    """The task a listing entry describes, or None if it has no slot (not a replicated task)."""
    slot = raw.get("Slot")
    if not isinstance(slot, int) or slot < 1:
        return None
    address = None
    for attachment in raw.get("NetworksAttachments") or []:
        spec = (attachment.get("Network") or {}).get("Spec") or {}
        addresses = attachment.get("Addresses") or []
        if spec.get("Name") == network and addresses:
            address = f"{addresses[0].partition('/')[0]}:{port}"
    status = raw.get("Status") or {}
    return Task(
        id=str(raw.get("ID", "")),
        slot=slot,
        state=str(status.get("State", "")),
        desired=str(raw.get("DesiredState", "")),
        created=created_key(str(raw.get("CreatedAt", ""))),
        address=address,
        message=str(status.get("Err") or status.get("Message") or ""),
    )


def serving_by_slot(tasks: Iterable[Task], dead: Collection[str] = ()) -> dict[int, Task]:
    """The task that serves each slot. During a rolling update two tasks run in one slot for a
    moment: the newest (latest CreatedAt, then the greater id) is the one, so every balancer
    picks the same, and the slot moves to the new task as soon as it runs."""
    out: dict[int, Task] = {}
    for task in tasks:
        if not task.serving or task.id in dead:
            continue
        best = out.get(task.slot)
        if best is None or (task.created, task.id) > (best.created, best.id):
            out[task.slot] = task
    return out


def service_spec(
    config: SwarmBackendConfig,
    image_id: str,
    count: int,
    stop_timeout: float,
    health_path: str = "/heartbeat",
) -> dict[str, Any]:
    """The replica service: ``count`` tasks of the replica image on the overlay network."""
    env = {**config.environment, "SERVER_ID": SLOT_NAME, "PORT": str(config.port)}
    return {
        "Name": config.service,
        "Labels": {LABEL: "replicas", LABEL_IMAGE: config.image},
        "TaskTemplate": {
            "ContainerSpec": {
                # By id or digest: a node never pulls a tag that may have moved.
                "Image": image_id,
                "Hostname": SLOT_NAME,
                "Env": [f"{k}={v}" for k, v in env.items()],
                # A tiny init as PID 1 forwards signals and reaps children.
                "Init": True,
                "StopGracePeriod": nanoseconds(stop_timeout),
                "Healthcheck": {
                    "Test": ["CMD", "bash", "-c", health_script(health_path)],
                    "Interval": nanoseconds(HEALTH_INTERVAL),
                    "Timeout": nanoseconds(HEALTH_TIMEOUT),
                    "Retries": HEALTH_RETRIES,
                    "StartPeriod": nanoseconds(HEALTH_START_PERIOD),
                },
            },
            "RestartPolicy": {
                "Condition": "any",
                "Delay": nanoseconds(config.restart_delay),
                "MaxAttempts": 0,
            },
            "Networks": [{"Target": config.network}],
        },
        "Mode": {"Replicated": {"Replicas": count}},
        # A new image rolls one slot at a time, the new task started before the old stops.
        "UpdateConfig": {"Parallelism": 1, "Order": "start-first", "FailureAction": "pause"},
        # No virtual IP: balancers reach each task at its own address (and this kernel has
        # no IPVS for VIPs anyway).
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def pinned_image(image: dict[str, Any]) -> str:
    """How the service names the image (``docker image inspect``): by registry digest when
    it came from (or went to) a registry, which nodes without it can pull and nodes with it
    use as is; else by its local id, which no node tries to pull (docs/swarm.md)."""
    digests = image.get("RepoDigests") or []
    return str(digests[0] if digests else image["Id"])


def replicated(service: dict[str, Any]) -> dict[str, Any]:
    """``service`` if it is a replicated service (whose tasks have slots), else BackendError."""
    mode = (service.get("Spec") or {}).get("Mode") or {}
    if not isinstance((mode.get("Replicated") or {}).get("Replicas"), int):
        name = (service.get("Spec") or {}).get("Name", "?")
        raise BackendError(
            f"service {name!r} is not a replicated service: its tasks have no slots "
            "(replicas.swarm.service must name the replicas' own service)"
        )
    return service


def swarm_problem(info: dict[str, Any]) -> str | None:
    """Why this engine cannot run the swarm backend (from ``docker info``), or None."""
    swarm = info.get("Swarm") or {}
    state = swarm.get("LocalNodeState") or "inactive"
    if state != "active":
        return (
            f"this Docker engine is in no swarm (its swarm state is {state!r}): run "
            "`docker swarm init` first (docs/swarm.md), or use replicas.backend docker"
        )
    if not swarm.get("ControlAvailable"):
        return (
            "this Docker engine is a swarm worker: the swarm backend needs a manager's API "
            "(run the balancer on a manager node; docs/swarm.md)"
        )
    return None


class SwarmBackend:
    manages_lifecycle = True
    #: Swarm names each replica for its slot.
    fixed_hostnames = None

    def __init__(
        self,
        config: SwarmBackendConfig,
        count: int,
        stop_timeout: float = 5.0,
        health_path: str = "/heartbeat",
    ) -> None:
        self._config = config
        self._health_path = health_path
        #: N for a service this balancer creates; an existing one keeps its own.
        self._count = count
        self._stop_timeout = stop_timeout
        self._docker: aiodocker.Docker | None = None
        self._service_id: str | None = None
        self._tasks: list[Task] = []
        #: Tasks whose container died on this node, before the listing says so.
        self._dead: set[str] = set()
        self._serving: dict[int, Task] = {}
        self._desired: frozenset[int] = frozenset()
        #: The replicas handed out, by task id: each ends (``_exits``) once it no longer serves
        #: its slot.
        self._handles: dict[str, ReplicaHandle] = {}
        self._exits = Exits()
        #: Replaced (then set) whenever what is known of the tasks changes.
        self._pulse = asyncio.Event()
        #: Set to have the tasks listed again now.
        self._stale = asyncio.Event()

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = docker_client(self._config.url)
        return self._docker

    # -- the Orchestrator interface --------------------------------------------------------

    def name_of(self, slot: int) -> str:
        return f"{self._config.service}-{slot}"

    async def slots(self) -> frozenset[int]:
        await self._refresh()
        return self._desired

    async def changed(self, known: frozenset[int]) -> frozenset[int]:
        return await self._wait_for(lambda: self._desired if self._desired != known else None)

    async def scale_by(self, delta: int) -> frozenset[int]:
        docker = self._client()
        target = 0
        for _ in range(SCALE_ATTEMPTS):
            service = await self._inspect()
            spec = service["Spec"]
            target = spec["Mode"]["Replicated"]["Replicas"] + delta
            if target < 0:
                raise BackendError(f"the service has fewer than {-delta} replicas")
            spec["Mode"]["Replicated"]["Replicas"] = target
            try:
                await self._update(docker, service["ID"], service["Version"]["Index"], spec)
            except _OutOfSequence:
                # Another balancer changed the service since we read it: ours applies on top.
                log.info("another balancer changed the service meanwhile; reading it again")
                continue
            log.info("asked Swarm for %d replicas", target)
            break
        else:
            raise BackendError(
                f"could not update service {self._config.service!r}: it changed "
                f"{SCALE_ATTEMPTS} times while we tried"
            )
        await self._refresh()
        if delta < 0:
            # Swarm chooses which tasks go; answer once it has.
            deadline = time.monotonic() + SCALE_DOWN_WAIT
            while len(self._desired) > target and time.monotonic() < deadline:
                await asyncio.sleep(SCALE_DOWN_POLL)
                await self._refresh()
        return self._desired

    async def scale_to(self, count: int) -> None:
        service = await self._inspect()
        spec = service["Spec"]
        if spec["Mode"]["Replicated"]["Replicas"] == count:
            return
        spec["Mode"]["Replicated"]["Replicas"] = count
        try:
            await self._update(self._client(), service["ID"], service["Version"]["Index"], spec)
        except _OutOfSequence:
            log.warning("another balancer changed the service meanwhile; following its count")
            return
        log.info("asked Swarm for %d replicas (replicas.count)", count)
        self._stale.set()

    # -- the Backend interface -------------------------------------------------------------

    async def open(self) -> list[ReplicaHandle]:
        """Check that the engine is a swarm manager and has the image; create the overlay
        network and the service if missing; return the tasks that serve now."""
        docker = self._client()
        try:
            problem = swarm_problem(await docker.system.info())
        except (aiodocker.DockerError, OSError) as e:
            raise BackendError(f"cannot reach the Docker engine ({docker.docker_host}): {e}") from e
        if problem:
            raise BackendError(problem)
        image = self._config.image
        try:
            image_id = pinned_image(await docker.images.inspect(image))
        except aiodocker.DockerError as e:
            if e.status == 404:
                raise BackendError(missing_image_message(image)) from None
            raise BackendError(f"cannot inspect image {image!r}: {e.message}") from e
        await self._ensure_network()
        await self._ensure_service(image_id)
        await self._refresh()
        return [self._track(self._serving[s]) for s in sorted(self._serving)]

    async def watch(self) -> None:
        """Follow the tasks for as long as the balancer runs: this node's container events
        as they happen, and a listing of all the tasks every ``poll_interval``."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_events())
            group.create_task(self._follow_listing())

    async def start(self, hostname: str, slot: int, restarts: int = 0) -> ReplicaHandle:
        """Swarm starts the tasks: this waits for the one that serves the slot."""
        task = await self._wait_for(lambda: self._serving.get(slot))
        return self._track(task, restarts)

    async def unavailable(self, hostnames: Sequence[str]) -> list[str]:
        return []  # a task's name is its slot's (the controller checks /add's names)

    async def stop(self, handle: ReplicaHandle) -> None:
        """Nothing to do: Swarm stops tasks (on a scale-down, or to restart a dead one)."""
        self._forget(handle.ident)

    async def kill(self, handle: ReplicaHandle) -> None:
        """SIGKILL the task's container, as a crash would; Swarm restarts the task in its slot.
        Only a container on this balancer's node can be killed from here."""
        docker = self._client()
        try:
            task = await docker._query_json(f"tasks/{handle.ident}")
            container_id = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
            if not container_id:
                raise BackendError(f"task of {handle.hostname} has no container (yet)")
            await docker.containers.container(container_id).kill()
        except aiodocker.DockerError as e:
            if e.status == 404:
                raise BackendError(
                    f"{handle.hostname} runs on another node (or is gone): kill it there"
                ) from e
            if e.status != 409:  # 409: not running any more
                raise BackendError(f"cannot kill {handle.hostname}: {e.message}") from e
        except OSError as e:
            raise BackendError(f"cannot kill {handle.hostname}: {e}") from e

    async def wait_exit(self, handle: ReplicaHandle) -> str:
        return await self._exits.wait(handle.ident, "task stopped")

    async def list(self) -> list[ReplicaHandle]:
        await self._refresh()
        return [self._handle(t) for t in self._serving.values()]

    async def close(self) -> None:
        """The service stays: other balancers may follow it (`make swarm-down` removes it)."""
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    # -- helpers ---------------------------------------------------------------------------

    async def _wait_for(self, found: Callable[[], T | None]) -> T:
        while (value := found()) is None:
            await self._pulse.wait()
        return value

    def _changed(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    def _handle(self, task: Task, restarts: int = 0) -> ReplicaHandle:
        assert task.address is not None
        return ReplicaHandle(self.name_of(task.slot), task.slot, task.address, task.id, restarts)

    def _track(self, task: Task, restarts: int = 0) -> ReplicaHandle:
        handle = self._handle(task, restarts)
        self._handles[task.id] = handle
        self._exits.track(task.id)
        self._check_tracked()
        return handle

    def _forget(self, task_id: str) -> None:
        self._handles.pop(task_id, None)
        self._exits.forget(task_id)

    def _died(self, task_id: str, reason: str) -> None:
        self._exits.died(task_id, reason)

    def _check_tracked(self) -> None:
        """Each replica handed out that no longer serves its slot has ended."""
        by_id = {t.id: t for t in self._tasks}
        for task_id, handle in self._handles.items():
            serving = self._serving.get(handle.slot)
            if serving is not None and serving.id == task_id:
                continue
            task = by_id.get(task_id)
            if task_id in self._dead or task is None:
                why = "task's container died" if task_id in self._dead else "task was removed"
            elif serving is not None and task.state == "running":
                why = f"task {serving.id[:12]} took over its slot (rolling update)"
            else:
                why = f"task is {task.state}" + (f": {task.message}" if task.message else "")
            self._died(task_id, why)

    def _recompute(self, replicas: int | None = None) -> None:
        self._serving = serving_by_slot(self._tasks, self._dead)
        if replicas is not None:
            runnable = (t.slot for t in self._tasks if t.desired in RUNNABLE)
            self._desired = desired_slots(replicas, runnable)
        self._check_tracked()
        self._changed()

    async def _inspect(self) -> dict[str, Any]:
        name = self._service_id or self._config.service
        try:
            service: dict[str, Any] = await self._client().services.inspect(name)
        except aiodocker.DockerError as e:
            raise BackendError(f"cannot inspect service {name!r}: {e.message}") from e
        return replicated(service)

    async def _update(
        self, docker: aiodocker.Docker, service_id: str, version: int, spec: dict[str, Any]
    ) -> None:
        try:
            # aiodocker's own update changes only the image; the whole spec goes as read.
            await docker._query_json(
                f"services/{service_id}/update",
                method="POST",
                params={"version": str(version)},
                data=json.dumps(spec),
            )
        except aiodocker.DockerError as e:
            if OUT_OF_SEQUENCE in (e.message or ""):
                raise _OutOfSequence from None
            name = self._config.service
            raise BackendError(f"cannot update service {name!r}: {e.message}") from e

    async def _refresh(self) -> None:
        """List the service and its tasks again."""
        if self._service_id is None:
            return  # not open yet
        service = await self._inspect()
        replicas = int(service["Spec"]["Mode"]["Replicated"]["Replicas"])
        try:
            # All of them (Swarm keeps a few ended ones per slot): one waiting out its restart
            # delay is meant to run too, and an ended one says why it ended.
            listed = await self._client().tasks.list(filters={"service": [self._config.service]})
        except aiodocker.DockerError as e:
            raise BackendError(f"cannot list the service's tasks: {e.message}") from e
        cfg = self._config
        tasks = [
            task
            for raw in listed
            if raw.get("ServiceID") == self._service_id
            and (task := task_of(raw, cfg.network, cfg.port)) is not None
        ]
        self._tasks = tasks
        self._dead &= {t.id for t in tasks}
        self._recompute(replicas)

    async def _follow_listing(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.poll_interval):
                    await self._stale.wait()
            self._stale.clear()
            try:
                await self._refresh()
            except (BackendError, OSError) as e:
                log.warning("cannot follow service %s: %s", self._config.service, e)

    async def _follow_events(self) -> None:
        await follow_events(
            self._client(), {"type": ["container", "service"]}, self._catch_up, self._on_event
        )

    async def _catch_up(self) -> None:
        self._stale.set()  # whatever happened while the stream was down: listed again

    def _on_event(self, event: dict[str, Any]) -> None:
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        kind = event.get("Type")
        if kind == "service" and attributes.get("name") == self._config.service:
            self._stale.set()
        elif kind == "container" and attributes.get(SERVICE_NAME_LABEL) == self._config.service:
            task_id = attributes.get(TASK_ID_LABEL)
            if event.get("Action") in DEATH_EVENTS and task_id:
                # At once, before Swarm's listing says so: the ring drops it now.
                self._dead.add(task_id)
                status = attributes.get("exitCode", "?")
                self._died(task_id, f"task's container exited with status {status}")
                self._recompute()
            self._stale.set()

    async def _ensure_network(self) -> None:
        docker = self._client()
        name = self._config.network
        try:
            info = await (await docker.networks.get(name)).show()
        except aiodocker.DockerError as e:
            if e.status != 404:
                raise BackendError(f"cannot inspect network {name!r}: {e.message}") from e
        else:
            if info.get("Driver") != "overlay" or not info.get("Attachable"):
                raise BackendError(
                    f"network {name!r} exists but is not an attachable overlay network "
                    "(replicas.swarm.network)"
                )
            return
        try:
            await docker.networks.create(
                {
                    "Name": name,
                    "Driver": "overlay",
                    "Attachable": True,
                    "CheckDuplicate": True,
                    "Labels": {LABEL: "network"},
                }
            )
            log.info("created overlay network %s", name)
        except aiodocker.DockerError as e:
            if e.status != 409:  # created meanwhile by another balancer: fine
                raise BackendError(f"cannot create network {name!r}: {e.message}") from e

    async def _ensure_service(self, image_id: str) -> None:
        docker = self._client()
        name = self._config.service
        for _ in range(2):
            try:
                self._service_id = replicated(await docker.services.inspect(name))["ID"]
                log.info("following service %s", name)
                return
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise BackendError(f"cannot inspect service {name!r}: {e.message}") from e
            spec = service_spec(
                self._config, image_id, self._count, self._stop_timeout, self._health_path
            )
            try:
                created = await docker._query_json(
                    "services/create", method="POST", data=json.dumps(spec)
                )
            except aiodocker.DockerError as e:
                if e.status == 409:
                    continue  # another balancer created it meanwhile: adopt that one
                raise BackendError(f"cannot create service {name!r}: {e.message}") from e
            self._service_id = created["ID"]
            log.info("created service %s with %d replicas", name, self._count)
            return
        raise BackendError(f"cannot create or find service {name!r}")


class _OutOfSequence(Exception):
    """The service changed since its spec was read."""
