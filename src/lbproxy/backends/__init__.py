"""Replica backends: where replicas run. One small interface, one module per kind.

Each backend is imported only when chosen (``make_backend``) or named: the docker backend's
client library is not loaded by a balancer that runs processes, nor by anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._replica_handle import ReplicaHandle
from ._base import Backend

if TYPE_CHECKING:
    from .._config import Config
    from ._docker import DockerBackend
    from ._process import ProcessBackend
    from ._static import StaticBackend

__all__ = [
    "Backend",
    "DockerBackend",
    "ProcessBackend",
    "ReplicaHandle",
    "StaticBackend",
    "make_backend",
]

#: Backend class name -> the module that defines it, imported on first use.
_LAZY = {
    "DockerBackend": "._docker",
    "ProcessBackend": "._process",
    "StaticBackend": "._static",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


def make_backend(config: Config) -> Backend:
    """The backend ``replicas.backend`` names."""
    replicas = config.replicas
    if replicas.backend == "static":
        from ._static import StaticBackend

        return StaticBackend(replicas.static)
    if replicas.backend == "swarm":
        from ._swarm import SwarmBackend

        return SwarmBackend(
            replicas.swarm,
            replicas.count,
            stop_timeout=replicas.stop_timeout,
            health_path=config.health.path,
        )
    if replicas.backend == "docker":
        from ._docker import DockerBackend

        return DockerBackend(replicas.docker, stop_timeout=replicas.stop_timeout)
    from ._process import ProcessBackend

    return ProcessBackend(replicas.process, stop_timeout=replicas.stop_timeout)
