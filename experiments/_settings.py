"""What one run of the experiments is asked to do (the command line, as a value object)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._balancer import BackendName, Balancer, running_balancer
from ._load import LoadResult, run_load

#: The hash choices in the order the plots show them: the assignment's, the seed's
#: experiment-4 variant, and lbproxy's default.
HASHES: tuple[str, ...] = ("assignment", "modulo", "default")

#: The committed results that experiments/README.md shows; a run writes here only when asked
#: (``--out experiments/results``), so trying the experiments never rewrites tracked files.
RESULTS = Path(__file__).resolve().parent / "results"
#: Where a run writes by default (ignored by git).
OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Settings:
    out: Path = OUT
    backend: BackendName = "process"
    requests: int = 10_000
    concurrency: int = 64
    seed: int = 0
    hashes: tuple[str, ...] = HASHES
    progress: bool = True
    #: Longest any one load run may take, in seconds.
    time_limit: float = 300.0
    #: N of experiment 1 (and of the Zipf runs).
    replicas: int = 3
    #: The N of experiment 2 and of the movement runs.
    sizes: tuple[int, ...] = (2, 3, 4, 5, 6)
    #: Replicas killed in experiment 3.
    kills: int = 3

    @property
    def workdir(self) -> Path:
        """Generated configs and balancer logs (not committed)."""
        return self.out / "tmp"

    def rng(self, purpose: str) -> random.Random:
        """A random source of its own per purpose, so one experiment's draws do not shift
        another's: the same seed gives the same ids whichever experiments are selected."""
        return random.Random(f"{self.seed}:{purpose}")

    async def load(self, balancer: Balancer, ids: Iterable[str], label: str) -> LoadResult:
        """Send ``ids`` through ``balancer`` (GET /home) as this run is configured."""
        return await run_load(
            balancer.url + "/home",
            ids,
            concurrency=self.concurrency,
            time_limit=self.time_limit,
            label=label,
            progress=self.progress,
        )

    def balancer(
        self, hash_name: str, replicas: int, overrides: dict[str, Any] | None = None
    ) -> AbstractAsyncContextManager[Balancer]:
        return running_balancer(self.workdir, hash_name, replicas, self.backend, overrides)
