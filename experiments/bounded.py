"""Beyond the seed: bounded loads under Zipf-skewed keys, through real balancers.

The Zipf experiment again, with replicas that take 20 ms per request (``_slow_replica.py``)
so that requests pile up on them as in production, at every ``hashing.balance_factor`` of
``FACTORS`` (off, then tighter and tighter). For each run: the requests each replica
answered, how many it had in flight (each answer says how many its replica had under way
when it arrived), and the share of requests answered by a replica other than their key's own
(what bounded loads trade for balance). Process backend only: the replica command is this
directory's script.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._balancer import ExperimentError
from ._load import LoadResult, zipf_ids
from ._results import Report, md_table, pyplot, save_figure, write_csv
from ._settings import Settings
from .balance import ZIPF_EXPONENTS, ZIPF_UNIVERSE, answers_per_replica
from .ring_stats import ring_owners

#: None = bounded loads off; then the factors the issue asks about, loosest first.
FACTORS: tuple[float | None, ...] = (None, 1.5, 1.25, 1.1)
#: Seconds each replica holds a request.
DELAY = 0.02
SLOW_REPLICA = Path(__file__).resolve().with_name("_slow_replica.py")


@dataclass
class BoundedRun:
    factor: float | None
    exponent: float
    replicas: list[str]  # slot order, as /rep lists them
    counts: dict[str, int]
    #: Per replica: mean and peak of its requests in flight, as seen by arriving requests.
    in_flight_mean: dict[str, float]
    in_flight_peak: dict[str, int]
    #: Share of answered requests that came from a replica other than their key's own.
    left_home: float
    hottest_share: float
    requests: int
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def label(self) -> str:
        return "off" if self.factor is None else f"{self.factor:g}"

    @property
    def values(self) -> list[int]:
        return [self.counts[r] for r in self.replicas]

    @property
    def max_over_mean(self) -> float:
        values = self.values
        return max(values) * len(values) / sum(values) if sum(values) else float("nan")

    @property
    def in_flight_max_over_mean(self) -> float:
        means = [self.in_flight_mean[r] for r in self.replicas]
        return max(means) / statistics.fmean(means) if any(means) else float("nan")

    def row(self) -> dict[str, Any]:
        return {
            "balance_factor": self.label,
            "exponent": self.exponent,
            "hottest_id_share": round(self.hottest_share, 4),
            "requests": self.requests,
            "answered": sum(self.values),
            "failed": sum(self.errors.values()),
            **{f"answers_{r}": self.counts[r] for r in self.replicas},
            "max_over_mean": round(self.max_over_mean, 4),
            **{f"in_flight_mean_{r}": round(self.in_flight_mean[r], 2) for r in self.replicas},
            "in_flight_max_over_mean": round(self.in_flight_max_over_mean, 4),
            "in_flight_peak": max(self.in_flight_peak.values(), default=0),
            "left_home": round(self.left_home, 4),
            "seconds": round(self.elapsed, 2),
        }


def summarize(
    factor: float | None,
    exponent: float,
    replicas: Sequence[str],
    ids: Sequence[str],
    load: LoadResult,
) -> BoundedRun:
    """One run's figures from its answers; a key's own replica is the one the ring gives it."""
    slots = ring_owners("default", range(1, len(replicas) + 1), ids)
    home = {k: replicas[slot - 1] for k, slot in zip(ids, slots, strict=True)}
    seen: dict[str, list[int]] = defaultdict(list)
    answered = away = 0
    for a in load.answers:
        if a.replica is None:
            continue
        answered += 1
        away += a.replica != home[a.key]
        if a.in_flight is not None:
            seen[a.replica].append(a.in_flight)
    return BoundedRun(
        factor=factor,
        exponent=exponent,
        replicas=list(replicas),
        counts=answers_per_replica(load, replicas, f"factor {factor} s={exponent}"),
        in_flight_mean={r: statistics.fmean(seen[r]) if seen[r] else 0.0 for r in replicas},
        in_flight_peak={r: max(seen[r], default=0) for r in replicas},
        left_home=away / answered if answered else float("nan"),
        hottest_share=Counter(ids).most_common(1)[0][1] / len(ids),
        requests=len(ids),
        errors=load.errors,
        elapsed=load.elapsed,
    )


def overrides(factor: float | None) -> dict[str, Any]:
    command = [sys.executable, str(SLOW_REPLICA), "--delay", str(DELAY)]
    return {
        "replicas": {"process": {"command": command, "output": "discard"}},
        "hashing": {"balance_factor": factor},
    }


async def experiment_bounded(
    s: Settings,
    factors: Sequence[float | None] = FACTORS,
    exponents: Sequence[float] = ZIPF_EXPONENTS,
) -> list[BoundedRun]:
    if s.backend != "process":
        raise ExperimentError("the bounded-load experiment runs on the process backend only")
    universe = min(ZIPF_UNIVERSE, s.requests)
    # The same draws as the Zipf experiment's (same purpose names, same seed).
    draws = {a: zipf_ids(s.requests, universe, a, s.rng(f"zipf-{a}")) for a in exponents}
    runs = []
    for factor in factors:
        async with s.balancer("default", s.replicas, overrides(factor)) as b:
            for a, ids in draws.items():
                replicas = await b.rep()
                label = f"bounded {'off' if factor is None else factor} s={a}"
                runs.append(summarize(factor, a, replicas, ids, await s.load(b, ids, label)))
    return runs


def plot_bounded(runs: Sequence[BoundedRun], concurrency: int, path: Path) -> Path:
    fig, axes = pyplot().subplots(1, 3, figsize=(13.2, 3.8))
    axes[1].sharey(axes[0])
    for label in dict.fromkeys(r.label for r in runs):
        mine = [r for r in runs if r.label == label]
        xs = [r.exponent for r in mine]
        axes[0].plot(xs, [r.max_over_mean for r in mine], "o-", label=f"factor {label}")
        axes[1].plot(xs, [r.in_flight_max_over_mean for r in mine], "o-", label=label)
        axes[2].plot(xs, [100 * r.left_home for r in mine], "o-", label=label)
    for f in {r.factor for r in runs} - {None}:
        axes[0].axhline(f, color="grey", lw=0.6, ls=":")
    axes[0].set_title("requests answered: max / mean")
    axes[1].set_title("requests in flight: max / mean")
    axes[2].set_title("% answered away from home")
    for ax in axes:
        ax.set_xlabel("Zipf exponent s")
        ax.set_xticks(sorted({r.exponent for r in runs}))
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Bounded loads: N = {len(runs[0].replicas)}, replicas take {DELAY * 1000:.0f} ms, "
        f"{concurrency} clients, {runs[0].requests:,} requests per run"
    )
    return save_figure(fig, path)


def report_bounded(s: Settings, runs: Sequence[BoundedRun]) -> Report:
    files = [write_csv(s.out / "bounded.csv", [r.row() for r in runs])]
    files.append(plot_bounded(runs, s.concurrency, s.out / "bounded.png"))
    md = table(runs)
    failed = [r for r in runs if r.errors]
    failures = (
        "Every request was answered by a replica (no errors)."
        if not failed
        else "Failures: " + "; ".join(f"{r.label} s={r.exponent}: {dict(r.errors)}" for r in failed)
    )
    return Report(
        "bounded",
        f"Beyond the seed: bounded loads under Zipf keys, N = {s.replicas}",
        f"![bounded](bounded.png)\n\n{md}\n\n{failures}",
        headline={
            f"factor={r.label} s={r.exponent}": {
                "max_over_mean": round(r.max_over_mean, 3),
                "in_flight_max_over_mean": round(r.in_flight_max_over_mean, 3),
                "left_home": round(r.left_home, 4),
            }
            for r in runs
        },
        files=[f.name for f in files],
        console=md,
    )


def table(runs: Sequence[BoundedRun]) -> str:
    rows = [
        [
            r.label,
            r.exponent,
            f"{r.hottest_share:.1%}",
            " / ".join(map(str, r.values)),
            r.max_over_mean,
            " / ".join(f"{r.in_flight_mean[x]:.1f}" for x in r.replicas),
            r.in_flight_max_over_mean,
            max(r.in_flight_peak.values(), default=0),
            f"{r.left_home:.1%}",
        ]
        for r in runs
    ]
    return md_table(
        [
            "balance_factor",
            "s",
            "hottest id",
            "answers per replica",
            "max/mean",
            "mean in flight per replica",
            "in flight max/mean",
            "peak in flight",
            "away from home",
        ],
        rows,
    )
