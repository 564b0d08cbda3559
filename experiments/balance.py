"""Experiments 1 and 2 (load per replica at N = 3, and at N = 2..6) and the balance under Zipf.

Every count is of answers: the replica named in each answer's body. The pure ring's
prediction for the same ids is recorded next to it, which shows that the live balancer
routes exactly as the ring says (the replicas of a fresh balancer, and of one grown by
``/add`` alone, hold slots 1..N in the order ``/rep`` lists them).
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._balancer import Balancer
from ._load import LoadResult, uniform_ids, zipf_ids
from ._results import HASH_COLORS, Report, md_table, panels, pyplot, save_figure, write_csv
from ._settings import Settings
from .ring_stats import ring_counts

#: Zipf exponents of the skewed-key runs; 0 is uniform over the same set of distinct ids.
ZIPF_EXPONENTS = (0.0, 0.8, 1.0, 1.2)
#: Distinct ids the Zipf runs draw from.
ZIPF_UNIVERSE = 10_000
#: Random placements per exponent for the "perfect hash" baseline of the Zipf runs.
ZIPF_TRIALS = 200


@dataclass
class BalanceRun:
    """One load run: per-replica answers at one N with one hash choice."""

    hash: str
    replicas: list[str]  # as /rep lists them: slot order
    counts: dict[str, int]  # answers per replica, from the answers (0 for a silent one)
    predicted: list[int]  # the pure ring's counts for the same ids, in slot order
    requests: int
    errors: Counter[str] = field(default_factory=Counter)
    not_sent: int = 0
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def values(self) -> list[int]:
        return [self.counts[r] for r in self.replicas]

    @property
    def answered(self) -> int:
        return sum(self.values)

    @property
    def mean(self) -> float:
        return self.answered / self.n

    @property
    def max_over_mean(self) -> float:
        return max(self.values) / self.mean if self.answered else float("nan")

    @property
    def cv(self) -> float:
        """Coefficient of variation of the per-replica counts."""
        return statistics.pstdev(self.values) / self.mean if self.answered else float("nan")

    @property
    def matches_ring(self) -> bool:
        return self.values == self.predicted

    def spread_row(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "N": self.n,
            "requests": self.requests,
            "answered": self.answered,
            "failed": sum(self.errors.values()),
            "mean": round(self.mean, 1),
            "min": min(self.values),
            "max": max(self.values),
            "max_over_mean": round(self.max_over_mean, 4),
            "cv": round(self.cv, 4),
            "matches_ring": self.matches_ring,
            "seconds": round(self.elapsed, 2),
            **self.extra,
        }


def answers_per_replica(load: LoadResult, replicas: Sequence[str], label: str) -> dict[str, int]:
    """Answers per replica of ``replicas`` (0 for a silent one)."""
    counted = load.counts
    strangers = set(counted) - set(replicas)
    if strangers:
        # An answer from a replica /rep does not list would make the counts meaningless.
        raise RuntimeError(f"{label}: answers from replicas not in /rep: {sorted(strangers)}")
    return {r: counted.get(r, 0) for r in replicas}


async def measure(
    balancer: Balancer, hash_name: str, ids: Sequence[str], s: Settings, label: str
) -> BalanceRun:
    """Send ``ids`` through the balancer and count the answers per replica."""
    replicas = await balancer.rep()
    load = await s.load(balancer, ids, label)
    return BalanceRun(
        hash=hash_name,
        replicas=replicas,
        counts=answers_per_replica(load, replicas, label),
        predicted=ring_counts(hash_name, len(replicas), ids),  # type: ignore[arg-type]
        requests=len(ids),
        errors=load.errors,
        not_sent=load.not_sent + load.cut,
        elapsed=load.elapsed,
    )


def _count_rows(runs: Sequence[BalanceRun]) -> list[dict[str, Any]]:
    return [
        {
            "hash": run.hash,
            "N": run.n,
            "slot": slot,
            "replica": replica,
            "count": run.counts[replica],
            "predicted_by_ring": run.predicted[slot - 1],
        }
        for run in runs
        for slot, replica in enumerate(run.replicas, start=1)
    ]


def _write_runs(s: Settings, prefix: str, runs: Sequence[BalanceRun]) -> list[Path]:
    """The raw counts (one row per replica and run) and the spread (one row per run)."""
    return [
        write_csv(s.out / f"{prefix}_counts.csv", _count_rows(runs)),
        write_csv(s.out / f"{prefix}_spread.csv", [r.spread_row() for r in runs]),
    ]


def _failures(runs: Sequence[BalanceRun]) -> str:
    bad = [r for r in runs if r.errors or r.not_sent]
    if not bad:
        return "Every request was answered by a replica (no errors)."
    return "Failures: " + "; ".join(
        f"{r.hash} N={r.n}: {dict(r.errors)}, {r.not_sent} not sent" for r in bad
    )


# -- experiment 1 ---------------------------------------------------------------------------


async def experiment1(s: Settings) -> list[BalanceRun]:
    ids = uniform_ids(s.requests, s.rng("uniform"))
    runs = []
    for h in s.hashes:
        async with s.balancer(h, s.replicas) as b:
            runs.append(await measure(b, h, ids, s, f"exp1 {h} N={s.replicas}"))
    return runs


def report1(s: Settings, runs: Sequence[BalanceRun]) -> Report:
    files = _write_runs(s, "exp1", runs)
    fig, axes = panels(len(runs))
    for ax, run in zip(axes, runs, strict=True):
        bars = ax.bar(run.replicas, run.values, color=HASH_COLORS.get(run.hash, "grey"))
        ax.bar_label(bars, fmt="%d", fontsize=9)
        ax.axhline(run.mean, color="black", ls="--", lw=1, label=f"mean {run.mean:.0f}")
        ax.set_title(f"{run.hash}  (max/mean {run.max_over_mean:.2f})")
        ax.set_xlabel("replica")
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("requests answered")
    fig.suptitle(f"Experiment 1: {runs[0].requests:,} requests on N = {runs[0].n} replicas")
    files.append(save_figure(fig, s.out / "exp1.png"))
    rows = [
        [
            r.hash,
            " / ".join(map(str, r.values)),
            r.max_over_mean,
            r.matches_ring,
            f"{r.elapsed:.1f}",
        ]
        for r in runs
    ]
    md = md_table(
        ["hash", "answers per replica", "max/mean", "same as the pure ring", "seconds"], rows
    )
    return Report(
        "exp1",
        f"Experiment 1: load per replica, N = {s.replicas}",
        f"![exp1](exp1.png)\n\n{md}\n\n{_failures(runs)}",
        headline={r.hash: dict(zip(r.replicas, r.values, strict=True)) for r in runs},
        files=[f.name for f in files],
    )


# -- experiment 2 ---------------------------------------------------------------------------


async def experiment2(s: Settings) -> list[BalanceRun]:
    ids = uniform_ids(s.requests, s.rng("uniform"))
    runs = []
    sizes = sorted(s.sizes)
    for h in s.hashes:
        async with s.balancer(h, sizes[0]) as b:
            for n in sizes:
                have = len(await b.rep())
                if n > have:
                    await b.add(n - have)
                runs.append(await measure(b, h, ids, s, f"exp2 {h} N={n}"))
    return runs


def report2(s: Settings, runs: Sequence[BalanceRun]) -> Report:
    files = _write_runs(s, "exp2", runs)
    hashes = list(dict.fromkeys(r.hash for r in runs))
    fig, axes = panels(len(hashes))
    for ax, h in zip(axes, hashes, strict=True):
        mine = [r for r in runs if r.hash == h]
        ns = [r.n for r in mine]
        color = HASH_COLORS.get(h, "grey")
        ax.fill_between(
            ns,
            [min(r.values) for r in mine],
            [max(r.values) for r in mine],
            color=color,
            alpha=0.2,
            label="min..max",
        )
        ax.plot(ns, [r.mean for r in mine], "o-", color=color, label="average")
        for r in mine:
            ax.scatter([r.n] * r.n, r.values, s=10, color="black", zorder=3)
            ax.annotate(
                f"{r.max_over_mean:.2f}",
                (r.n, max(r.values)),
                textcoords="offset points",
                xytext=(0, 5),
                ha="center",
                fontsize=8,
            )
        ax.margins(y=0.12)
        ax.set_title(f"{h}  (labels: max/mean)")
        ax.set_xlabel("N replicas")
        ax.set_xticks(ns)
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("requests per replica")
    fig.suptitle(f"Experiment 2: {runs[0].requests:,} requests at each N; dots: each replica")
    files.append(save_figure(fig, s.out / "exp2.png"))
    rows = [
        [
            r.hash,
            r.n,
            f"{r.mean:.0f}",
            min(r.values),
            max(r.values),
            r.max_over_mean,
            r.cv,
            r.matches_ring,
        ]
        for r in runs
    ]
    md = md_table(["hash", "N", "average", "min", "max", "max/mean", "cv", "same as ring"], rows)
    return Report(
        "exp2",
        "Experiment 2: average load and spread, N = 2..6",
        f"![exp2](exp2.png)\n\n{md}\n\n{_failures(runs)}",
        headline={f"{r.hash} N={r.n}": round(r.max_over_mean, 3) for r in runs},
        files=[f.name for f in files],
    )


# -- Zipf -----------------------------------------------------------------------------------


def random_placement(ids: Sequence[str], n: int, trials: int, rng: random.Random) -> list[float]:
    """max/mean when each distinct id goes to a uniformly random replica: a perfect hash."""
    weights = Counter(ids)
    total = len(ids)
    out = []
    for _ in range(trials):
        loads = [0] * n
        for w in weights.values():
            loads[rng.randrange(n)] += w
        out.append(max(loads) * n / total)
    return sorted(out)


async def experiment_zipf(s: Settings) -> list[BalanceRun]:
    universe = min(ZIPF_UNIVERSE, s.requests)
    draws = {a: zipf_ids(s.requests, universe, a, s.rng(f"zipf-{a}")) for a in ZIPF_EXPONENTS}
    runs = []
    for h in s.hashes:
        async with s.balancer(h, s.replicas) as b:
            for a, ids in draws.items():
                run = await measure(b, h, ids, s, f"zipf {h} s={a}")
                top = Counter(ids).most_common(1)[0][1]
                baseline = random_placement(ids, run.n, ZIPF_TRIALS, s.rng(f"placement-{a}"))
                run.extra = {
                    "exponent": a,
                    "distinct_ids": len(set(ids)),
                    "hottest_id_share": round(top / len(ids), 4),
                    "floor_max_over_mean": round(max(1.0, top * run.n / len(ids)), 4),
                    "perfect_hash_median": round(baseline[len(baseline) // 2], 4),
                    "perfect_hash_p95": round(baseline[int(len(baseline) * 0.95)], 4),
                }
                runs.append(run)
    return runs


def report_zipf(s: Settings, runs: Sequence[BalanceRun]) -> Report:
    plt = pyplot()

    files = _write_runs(s, "zipf", runs)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    hashes = list(dict.fromkeys(r.hash for r in runs))
    base = [r for r in runs if r.hash == hashes[0]]
    xs = [r.extra["exponent"] for r in base]
    ax.fill_between(
        xs,
        [1.0] * len(xs),
        [r.extra["perfect_hash_p95"] for r in base],
        color="grey",
        alpha=0.25,
        label="perfect hash: 95% of placements below",
    )
    ax.plot(xs, [r.extra["perfect_hash_median"] for r in base], "k:", label="perfect hash: median")
    for h in hashes:
        mine = [r for r in runs if r.hash == h]
        ax.plot(xs, [r.max_over_mean for r in mine], "o-", color=HASH_COLORS.get(h), label=h)
    ax.set_xlabel("Zipf exponent s (0 = uniform over the same distinct ids)")
    ax.set_ylabel("max / mean (1 = even)")
    ax.set_xticks(xs)
    ax.set_title(f"Balance under skewed keys, N = {base[0].n}, {base[0].requests:,} requests")
    ax.legend(fontsize=8)
    files.append(save_figure(fig, s.out / "zipf.png"))
    rows = [
        [
            r.hash,
            r.extra["exponent"],
            r.extra["distinct_ids"],
            r.extra["hottest_id_share"],
            " / ".join(map(str, r.values)),
            r.max_over_mean,
            r.extra["perfect_hash_median"],
            r.extra["perfect_hash_p95"],
        ]
        for r in runs
    ]
    md = md_table(
        [
            "hash",
            "s",
            "distinct ids",
            "hottest id's share",
            "answers per replica",
            "max/mean",
            "perfect hash median",
            "p95",
        ],
        rows,
    )
    return Report(
        "zipf",
        f"Beyond the seed: balance under Zipf-skewed keys, N = {s.replicas}",
        f"![zipf](zipf.png)\n\n{md}\n\n{_failures(runs)}",
        headline={f"{r.hash} s={r.extra['exponent']}": round(r.max_over_mean, 3) for r in runs},
        files=[f.name for f in files],
    )
