"""Replica backends: where replicas run. One small interface, one module per kind."""

from __future__ import annotations

from .._config import Config
from ._base import Backend, ReplicaHandle
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


def make_backend(config: Config) -> Backend:
    """The backend ``replicas.backend`` names."""
    if config.replicas.backend == "static":
        return StaticBackend(config.replicas.static)
    if config.replicas.backend == "swarm":
        from ._swarm import SwarmBackend  # aiodocker is needed only for the Docker backends

        return SwarmBackend(
            config.replicas.swarm,
            config.replicas.count,
            stop_timeout=config.replicas.stop_timeout,
            health_path=config.health.path,
        )
    if config.replicas.backend == "docker":
        return DockerBackend(config.replicas.docker, stop_timeout=config.replicas.stop_timeout)
    return ProcessBackend(config.replicas.process, stop_timeout=config.replicas.stop_timeout)
