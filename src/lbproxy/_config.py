"""Every setting of lbproxy in one immutable value object, parsed from config.yaml.

Pure: ``parse_config`` takes the decoded YAML and returns a ``Config`` or raises ``ConfigError``
naming the bad field. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import ConfigError
from ._hashing import HashName, HashScheme, make_scheme, weight_units
from ._names import name_problem
from ._ring import vnode_count

DEFAULT_PORT = 5000
DEFAULT_REPLICAS = 3
DEFAULT_MAX_REPLICAS = 32
DEFAULT_ADMIN_PORT = 5001
#: Environment variable that sets ``admin.token`` (read by the command line), so the secret
#: need not sit in config.yaml.
TOKEN_ENV = "LBPROXY_ADMIN_TOKEN"
#: A shorter token could be guessed over the network.
MIN_TOKEN_LENGTH = 16

Seconds = Annotated[float, Field(gt=0, le=86_400)]


def _not_bool(v: Any) -> Any:
    # YAML reads yes/no/on/off as booleans; a number is meant, so say so instead of
    # taking true for 1.
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    return v


#: A replica's weight: its share of the keys and of the bounded-load cap relative to the
#: others'. Kept to thousandths (``weight_units``).
Weight = Annotated[float, BeforeValidator(_not_bool), Field(ge=0.001, le=1000)]
#: Most worker processes: far beyond any machine this runs on, low enough that a typo
#: (``workers: 2000``) is refused rather than forking thousands of processes.
MAX_WORKERS = 256


def _worker_count(value: object) -> object:
    if value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS
    ):
        return value
    raise ValueError(f"must be a whole number from 1 to {MAX_WORKERS}, or auto; not {value!r}")


WorkerCount = Annotated[int | Literal["auto"], BeforeValidator(_worker_count)]


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset limits)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


_KEY_RE = re.compile(r"request_id|client_ip|path|(header|cookie|query):[!-~]+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class TlsConfig(_Model):
    """TLS termination on ``listen.port``: PEM files (checked at startup, by ``_tls``)."""

    #: The server certificate, followed by its intermediate certificates.
    cert: str = Field(min_length=1)
    #: Its private key (unencrypted).
    key: str = Field(min_length=1)


class ListenConfig(_Model):
    host: str = "0.0.0.0"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    #: Set: the port speaks HTTPS (and wss) only; the replicas are still reached over HTTP.
    tls: TlsConfig | None = None


class ProcessBackendConfig(_Model):
    #: Command that runs one replica; it gets SERVER_ID, PORT and LISTEN_FD in its environment.
    #: None means this Python's ``-m lbproxy.replica``. See docs/replicas.md.
    command: list[str] | None = None
    host: str = "127.0.0.1"
    #: Hand each replica its socket already listening (LISTEN_FD; no other program can take
    #: the port meanwhile). False: only PORT, a port free a moment before, for a command that
    #: can only bind a port itself (it could not while it holds the listening socket).
    listen_fd: bool = True
    #: Where replicas' stdout/stderr go: the balancer's own ("inherit") or nowhere ("discard").
    output: Literal["inherit", "discard"] = "inherit"

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must name a program (or be null for the built-in replica)")
        return v


class DockerBackendConfig(_Model):
    """Replicas as containers on one Docker network, created through the Docker API."""

    #: The replica image (``make images`` builds it); never pulled.
    image: str = Field("lbproxy/server:latest", min_length=1)
    #: The network replicas join (created if missing); the balancer must reach it.
    network: str = Field("lbproxy-net", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
    #: Label value marking this balancer's replicas: a restarted balancer adopts the running
    #: ones carrying it. Two balancers on one engine need different instances.
    instance: str = Field("lbproxy", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
    #: Port the replica server listens on inside its container.
    port: int = Field(5000, ge=1, le=65535)
    #: Docker engine URL; None: DOCKER_HOST, else the local socket.
    url: str | None = None
    #: Remove the replicas when the balancer stops; False leaves them running for the next
    #: balancer to adopt (an upgrade without restarting the replicas).
    remove_on_shutdown: bool = True
    #: Extra environment for every replica (SERVER_ID and PORT are set by the balancer).
    environment: dict[str, str] = {}
    #: Resource limits per replica; None: unlimited.
    memory_mb: int | None = Field(None, ge=6, le=1 << 20)
    cpus: float | None = Field(None, gt=0, le=1024)

    @field_validator("environment")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name in ("SERVER_ID", "PORT"):
                raise ValueError(f"{name} is set by the balancer")
        return v


class SwarmBackendConfig(_Model):
    """Replicas as the tasks of one Docker Swarm service, which Swarm keeps (docs/swarm.md)."""

    #: The replica service: adopted if it exists, else created with ``replicas.count`` tasks.
    #: Its task in slot ``s`` is named (hostname and /home) ``<service>-<s>``.
    service: str = Field("lbproxy-replicas", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,50}$")
    #: The replica image (``make images`` builds it); the service names it by its local image
    #: id, so no node ever tries to pull it (every node needs it: docs/swarm.md).
    image: str = Field("lbproxy/server:latest", min_length=1)
    #: The attachable overlay network of the replicas (created if missing); every balancer
    #: must be attached to it.
    network: str = Field("lbproxy-overlay", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
    #: Port the replica server listens on inside its task.
    port: int = Field(5000, ge=1, le=65535)
    #: Docker engine URL (a swarm manager's); None: DOCKER_HOST, else the local socket.
    url: str | None = None
    #: Swarm's wait before it restarts a dead task (its own default is 5 s). While it waits,
    #: the slot's keys are served by the next replicas; 1 s brings them home sooner and still
    #: spaces out the restarts of a task that keeps crashing (docs/swarm.md).
    restart_delay: float = Field(1.0, ge=0, le=3600)
    #: How often the service's tasks are listed besides the event stream, which only reports
    #: this node's containers: tasks on other nodes are followed at this pace (and by
    #: heartbeats).
    poll_interval: Seconds = 2.0
    #: Extra environment for every task (SERVER_ID and PORT are set per slot).
    environment: dict[str, str] = {}

    @field_validator("environment")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        return DockerBackendConfig._env_names(v)


class StaticReplica(_Model):
    hostname: str
    address: str
    weight: Weight = 1.0

    @field_validator("hostname")
    @classmethod
    def _valid_hostname(cls, v: str) -> str:
        problem = name_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("address")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{v!r} is not host:port")
        return v


class ReplicasConfig(_Model):
    count: int = Field(DEFAULT_REPLICAS, ge=0)
    max: int = Field(DEFAULT_MAX_REPLICAS, ge=1, le=4096)
    backend: Literal["process", "docker", "static", "swarm"] = "process"
    #: Prefix of generated hostnames: ``<prefix>-<n>`` at start, ``<prefix>-<random>`` later.
    name_prefix: str = Field("server", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$")
    #: How long a stopping replica gets before it is killed.
    stop_timeout: Seconds = 5.0
    #: How long a leaving replica (/rm, a scale-down) may finish the requests it has before it
    #: is stopped anyway; it gets no new ones meanwhile.
    drain_timeout: Seconds = 30.0
    process: ProcessBackendConfig = ProcessBackendConfig()
    docker: DockerBackendConfig = DockerBackendConfig()
    swarm: SwarmBackendConfig = SwarmBackendConfig()
    static: list[StaticReplica] = []
    #: Weight of every replica not named in ``weights`` (nor given one in ``static``).
    weight: Weight = 1.0
    #: Weights by hostname (case-insensitive), for replicas of any backend. A weight belongs
    #: to the slot its replica was added in: a replacement under a new name keeps it.
    weights: dict[str, Weight] = {}

    @field_validator("weights")
    @classmethod
    def _weight_names(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            problem = name_problem(name)
            if problem:
                raise ValueError(problem)
        if len({n.lower() for n in v}) != len(v):
            raise ValueError("names a hostname twice (hostnames compare case-insensitively)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _static_count(cls, data: Any) -> Any:
        # A static config without a count takes its count from the list, explicitly, so that
        # model_dump() round-trips (with_overrides and reload re-validate the dump).
        if (
            isinstance(data, dict)
            and data.get("backend") == "static"
            and "count" not in data
            and isinstance(data.get("static"), list)
        ):
            data = {**data, "count": len(data["static"])}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ReplicasConfig:
        if self.backend == "static":
            if not self.static:
                raise ValueError("backend 'static' needs a non-empty replicas.static list")
            if "count" in self.model_fields_set and self.count != len(self.static):
                raise ValueError(
                    f"count ({self.count}) differs from the {len(self.static)} static replicas"
                )
            names = [s.hostname.lower() for s in self.static]
            if len(set(names)) != len(names):
                raise ValueError("replicas.static has duplicate hostnames")
        if self.desired_count > self.max:
            raise ValueError(f"count ({self.desired_count}) is above max ({self.max})")
        return self

    @property
    def desired_count(self) -> int:
        return len(self.static) if self.backend == "static" else self.count

    def weight_of(self, hostname: str) -> float:
        """The weight of the replica added as ``hostname``: ``weights`` names it, else its
        ``static`` entry, else ``weight``."""
        low = hostname.lower()
        for name, w in self.weights.items():
            if name.lower() == low:
                return w
        if self.backend == "static":
            for s in self.static:
                if s.hostname.lower() == low:
                    return s.weight
        return self.weight

    @property
    def max_weight(self) -> float:
        static = [s.weight for s in self.static] if self.backend == "static" else []
        return max([self.weight, *self.weights.values(), *static])


class HashingConfig(_Model):
    #: default (a Maglev table), ring (xxh3 ring with virtual nodes), assignment, modulo.
    function: HashName = "default"
    #: Table size for default (None: 16411); ring size M for the others (None: 2^64 for
    #: ring, 512 for assignment and modulo).
    slots: int | None = Field(None, ge=1, le=1 << 64)
    #: Virtual nodes per replica K of the ring schemes; None: 16384 for ring, log2(M) for
    #: assignment and modulo. The default's table has none.
    virtual_nodes: int | None = Field(None, ge=1, le=1 << 20)
    probing: Literal["linear", "quadratic"] = "linear"
    #: What routes a request: request_id (X-Request-Id, a random 6-digit id when absent),
    #: client_ip, path, header:<Name>, cookie:<name> or query:<name>.
    key: str = "request_id"
    #: Consistent hashing with bounded loads: a replica with ceil(factor x (in flight + 1) x
    #: its share) requests in flight is passed over for the next in the key's order. None: off.
    balance_factor: Annotated[float, BeforeValidator(_not_bool), Field(ge=1.0, le=100.0)] | None = (
        None
    )

    @model_validator(mode="after")
    def _valid_scheme(self) -> HashingConfig:
        try:
            self.scheme()
        except ValueError as e:
            field = "virtual_nodes" if "virtual_nodes" in str(e) else "slots"
            raise ValueError(f"{field}: {e}") from None
        return self

    @field_validator("key")
    @classmethod
    def _key_spec(cls, v: str) -> str:
        if not _KEY_RE.fullmatch(v):
            raise ValueError(
                f"{v!r} is not one of request_id, client_ip, path, header:<name>, "
                "cookie:<name>, query:<name>"
            )
        return v

    def scheme(self) -> HashScheme:
        return make_scheme(self.function, self.slots, self.virtual_nodes)


class HealthConfig(_Model):
    path: str = Field("/heartbeat", pattern=r"^/\S*$")
    interval: Seconds = 2.0
    timeout: Seconds = 1.0
    #: Consecutive missed heartbeats before a replica leaves the ring and is replaced.
    unhealthy_threshold: int = Field(3, ge=1, le=100)
    #: Consecutive answered heartbeats before a replica (re)joins the ring.
    healthy_threshold: int = Field(1, ge=1, le=100)
    #: How often a starting replica is probed until it first answers.
    startup_probe_interval: Seconds = 0.05
    #: A replica that does not answer within this long after start has failed to start.
    startup_timeout: Seconds = 20.0
    backoff_initial: Seconds = 0.5
    backoff_max: Seconds = 30.0

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        return self


class ProxyConfig(_Model):
    #: Further replicas (distinct, clockwise) tried when one cannot be connected to; one of
    #: them may also be a bodiless idempotent request's second try after its replica broke
    #: off (reset, closed, timed out, taken out) before any of the answer went out.
    retries: int = Field(2, ge=0, le=64)
    connect_timeout: Seconds = 2.0
    #: Longest wait for the replica's answer headers, and between two reads of its body.
    read_timeout: Seconds = 60.0
    #: Most idle keep-alive connections kept per replica. Busy ones are not capped: a request
    #: never queues for a connection, so this should cover the clients' concurrency.
    pool_size: int = Field(512, ge=1, le=100_000)
    #: An idle upstream connection older than this is closed instead of reused.
    keepalive_timeout: Seconds = 15.0
    #: A client connection with no request under way for this long is closed.
    client_keepalive_timeout: Seconds = 75.0
    #: A client that, mid-request, sends none of its body or reads none of the answer for
    #: this long has its connection cut (with a 408 if none of the answer went out yet).
    client_timeout: Seconds = 60.0
    #: An upgraded connection (WebSocket...) relayed as raw bytes is closed after this long
    #: with nothing sent either way; the two timeouts above do not apply to it.
    tunnel_idle_timeout: Seconds = 300.0
    #: Client connections served at once; beyond it a new one gets a 503. None: half of
    #: what the open-files limit leaves after a reserve (each may hold a replica connection).
    max_client_connections: int | None = Field(None, ge=1, le=10_000_000)
    #: Requests in a row a replica fails (no connection, broken off, timed out; an answer of
    #: any status is a success) before it is taken out of routing and probed at once; 0: never.
    outlier_failures: int = Field(5, ge=0, le=1000)
    #: Seconds an outlier stays out of routing (its keys go to the next replica meanwhile),
    #: unless its heartbeats fail first and it is replaced.
    outlier_ejection_time: Seconds = 10.0


class AdminConfig(_Model):
    """The admin listener, and who may change the replicas."""

    #: Where /rep, /add, /rm and /status are served apart from the balancer's port; loopback
    #: by default, so only this host reaches it.
    host: str = "127.0.0.1"
    #: 0: any free port (tests); ``Server.admin_port`` tells which.
    port: int = Field(DEFAULT_ADMIN_PORT, ge=0, le=65535)
    #: When set, /add and /rm (on both ports) need ``Authorization: Bearer <token>``.
    token: SecretStr | None = None
    #: False: /add and /rm are refused on the balancer's port (403) and served only here.
    on_main_port: bool = True

    @field_validator("token")
    @classmethod
    def _token_usable(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        token = v.get_secret_value()
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
            )
        if len(token) > 4096 or not all("!" <= c <= "~" for c in token):
            raise ValueError("must be at most 4096 printable ASCII characters without spaces")
        return v


class ReloadConfig(_Model):
    enabled: bool = True
    #: How often config.yaml is checked for changes.
    interval: Seconds = 1.0


class LogConfig(_Model):
    """The balancer's own log (its level is ``log_level``)."""

    #: One line per proxied request (docs/observability.md lists the fields).
    access: bool = False
    #: ``text`` for people, ``json`` (one object per line) for log shippers; every line.
    format: Literal["text", "json"] = "text"
    #: Append the log (access lines included) to this file instead of standard error.
    file: str | None = Field(None, min_length=1)


class MetricsConfig(_Model):
    #: Count answers, durations, retries for /metrics and the dashboard (false: the data
    #: path counts nothing beyond /status' totals; for measuring what counting costs).
    enabled: bool = True


class Config(_Model):
    listen: ListenConfig = ListenConfig()
    replicas: ReplicasConfig = ReplicasConfig()
    hashing: HashingConfig = HashingConfig()
    health: HealthConfig = HealthConfig()
    proxy: ProxyConfig = ProxyConfig()
    admin: AdminConfig = AdminConfig()
    reload: ReloadConfig = ReloadConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    #: Longest wait for in-flight requests and replicas on shutdown.
    shutdown_timeout: Seconds = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Processes serving the balancer's port, each on its own SO_REUSEPORT socket and routing
    #: from the supervisor's ring (docs/workers.md); 1: the one process does everything;
    #: ``auto``: one per usable core.
    workers: WorkerCount = 1

    def worker_count(self) -> int:
        return usable_cores() if self.workers == "auto" else self.workers

    @model_validator(mode="after")
    def _ring_fits(self) -> Config:
        scheme = self.hashing.scheme()
        cap = self.replicas.max
        if not scheme.is_ring:
            if cap > scheme.slots:
                raise ValueError(
                    f"hashing.slots ({scheme.slots}) must have an entry for each of "
                    f"replicas.max ({cap}) replicas"
                )
            return self
        heaviest = self.replicas.max_weight
        per_replica = vnode_count(scheme, weight_units(heaviest))
        need = cap * per_replica
        if need > scheme.slots:
            k = scheme.virtual_nodes
            nodes = f"{k}" if per_replica == k else f"{k} x weight {heaviest:g}"
            raise ValueError(
                f"hashing.slots ({scheme.slots}) must hold replicas.max x virtual_nodes "
                f"({cap} x {nodes} = {need})"
            )
        return self


def _field_path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the validator's name in loc for model validators; drop it.
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(parts) or "(top level)"


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = _field_path(e["loc"])
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate decoded YAML; ``source`` is used in the error message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, not {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_describe(e)}") from None


def parse_config_text(text: str, source: str = "config") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    return parse_config(data, source)


def parse_config_file(content: bytes, source: str) -> Config:
    """A config file's bytes, validated. Stricter than ``parse_config_text``: a file with no
    YAML document (empty, or only comments and blanks) is an error, since it cannot be told
    from one cut short (an editor mid-save, a copy that failed); ``{}`` states the defaults."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(
            f"{source}: the file is empty (no YAML document); write {{}} in it to run on the "
            "defaults"
        )
    return parse_config(data, source)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file (blocking: call it off the event loop when running)."""
    p = Path(path)
    try:
        content = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    return parse_config_file(content, str(p))


def with_overrides(config: Config, **dotted: Any) -> Config:
    """A copy of ``config`` with dotted fields replaced (``listen.port=0``), re-validated."""
    # Only what was set explicitly, so defaults that depend on other fields (a static
    # backend's count) are derived again from the overridden values.
    data = config.model_dump(exclude_unset=True)
    for key, value in dotted.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, "overrides")
