"""What a config reload may change on a running balancer, and how: the one reload policy.

Pure: ``plan`` takes the running configuration and the file's new one and says what the
balancer runs with from now on (``effective``), which changes wait for a restart, and what
the balancer must redo (a new key function, a new routing table, another replica count).
``_server.py`` carries the plan out; ``_reload.py`` watches the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ._config import Config, StaticReplica, with_overrides

#: Fields that a reload can change on a running balancer; others need a restart. The
#: weights of ``replicas.static`` entries reload too (``same_but_weights``): the servers
#: listed cannot change live, only their shares, and ``replicas.count`` waits with them.
RELOADABLE = (
    "replicas.count",
    "replicas.max",
    "replicas.drain_timeout",
    "replicas.weight",
    "replicas.weights",
    "hashing",
    "health",
    "proxy.retries",
    "proxy.outlier_failures",
    "proxy.outlier_ejection_time",
    "admin.token",
    "admin.on_main_port",
    "log_level",
)


def same_but_weights(old: Sequence[StaticReplica], new: Sequence[StaticReplica]) -> bool:
    """True when two static lists differ at most in their weights (which a reload applies)."""
    return [(s.hostname, s.address) for s in old] == [(s.hostname, s.address) for s in new]


def _reloadable(dotted: str) -> bool:
    return any(dotted == r or dotted.startswith(r + ".") for r in RELOADABLE)


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """Dotted names of the changed fields that a reload cannot apply."""
    changed: list[str] = []

    def walk(a: object, b: object, prefix: str) -> None:
        if prefix and _reloadable(prefix):
            return
        if prefix == "replicas.static" and same_but_weights(a, b):  # type: ignore[arg-type]
            return
        if isinstance(a, BaseModel) and type(a) is type(b):
            for name in type(a).model_fields:
                walk(getattr(a, name), getattr(b, name), f"{prefix}.{name}" if prefix else name)
        elif a != b:
            changed.append(prefix)

    walk(old, new, "")
    if "replicas.static" in changed and old.replicas.count != new.replicas.count:
        changed.insert(changed.index("replicas.static"), "replicas.count")
    return changed


def merge_reloadable(old: Config, new: Config) -> Config:
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
    else:
        # The count goes with the list (a static backend's is its length): while the list
        # waits for a restart, so does the count.
        data["replicas"]["count"] = old.replicas.count
    return Config.model_validate(data)


def weights(config: Config) -> tuple[object, ...]:
    """Every weight setting: (replicas.weight, replicas.weights, the static entries')."""
    r = config.replicas
    return r.weight, r.weights, [s.weight for s in r.static]


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What applying a changed config.yaml comes to."""

    #: The configuration to run with: the running one with every reloadable change made.
    effective: Config
    #: Changed fields that take effect only after a restart (kept at their running value).
    restart_only: list[str]
    #: ``hashing`` changed: the key function and the routing table are made anew.
    hashing_changed: bool
    #: A replica weight changed: the routing table is made anew.
    weights_changed: bool
    #: The replica count to scale to, or None when it did not change.
    count: int | None

    @property
    def rebuild_table(self) -> bool:
        return self.hashing_changed or self.weights_changed


def plan(old: Config, new: Config, overrides: Mapping[str, Any] | None = None) -> ReloadPlan:
    """The plan for ``new`` (config.yaml as just read) on a balancer running ``old``.

    ``overrides`` (dotted fields set on the command line) win over the file on every reload,
    as they did at start. Raises ``ConfigError`` if the file with them on top is invalid.
    """
    if overrides:
        new = with_overrides(new, **overrides)
    effective = merge_reloadable(old, new)
    count = effective.replicas.count
    return ReloadPlan(
        effective=effective,
        restart_only=restart_only_changes(old, new),
        hashing_changed=effective.hashing != old.hashing,
        weights_changed=weights(effective) != weights(old),
        count=count if count != old.replicas.count else None,
    )
