"""Turning the runs into the table: medians over rounds, ratios, and the issue's targets.

Ratios and the added p99 are taken within each round (the targets of one round ran minutes
apart at most, under the same background load) and then their median is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

#: The issue's targets for lbproxy, as ratios to HAProxy in the same round.
MIN_RPS_VS_HAPROXY = 0.9
MAX_CPU_VS_HAPROXY = 1.25
MAX_ADDED_P99_MS = 1.0
MAX_TRANSFER_GROWTH_MB = 30.0
MAX_IDLE_GROWTH_MB = 200.0


@dataclass(frozen=True)
class Run:
    """One wrk run against one target in one round."""

    round: int
    target: str
    requests: int
    rps: float
    p50_us: float
    p99_us: float
    errors: int
    cpu_us_per_request: float | None  # None: no balancer (direct)
    #: CPU that processes other than the bench's used during the run, in % of one CPU.
    other_cpu_pct: float = 0.0


@dataclass(frozen=True)
class Row:
    """One target's medians over the rounds."""

    target: str
    rounds: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None
    vs_direct: float | None
    vs_haproxy: float | None
    #: Its CPU per request over its HAProxy's in the same round.
    cpu_vs_haproxy: float | None
    added_p99_ms: float | None
    errors: int
    other_cpu_pct: float


def cpu_per_request_us(ticks: int, requests: int, clk_tck: int) -> float:
    """Balancer CPU time (``ticks`` of utime+stime at ``clk_tck`` Hz) per request, in µs."""
    if requests <= 0:
        raise ValueError("no requests were served")
    return ticks / clk_tck * 1e6 / requests


def other_cpu_pct(machine_ticks: int, own_ticks: int, seconds: float, clk_tck: int) -> float:
    """CPU used by everything but the bench over ``seconds``, in % of one CPU.

    ``machine_ticks``: busy ticks of all CPUs together (/proc/stat); ``own_ticks``: those of
    the bench and every process it started.
    """
    return max(0.0, (machine_ticks - own_ticks) / clk_tck / seconds * 100)


def _per_round(runs: Sequence[Run], target: str) -> dict[int, Run]:
    return {r.round: r for r in runs if r.target == target}


def _median_of(values: Iterable[float]) -> float | None:
    v = list(values)
    return median(v) if v else None


def _cpu_ratio(mine: Run, theirs: Run) -> float | None:
    if mine.cpu_us_per_request is None or not theirs.cpu_us_per_request:
        return None
    return mine.cpu_us_per_request / theirs.cpu_us_per_request


def summarize(
    runs: Sequence[Run], order: Sequence[str], reference: Mapping[str, str] | None = None
) -> list[Row]:
    """One row per target of ``order`` that ran; ``reference``: the HAProxy target each one
    is compared with, where not ``haproxy``."""
    direct = _per_round(runs, "direct")
    rows = []
    for target in order:
        haproxy = _per_round(runs, (reference or {}).get(target, "haproxy"))
        mine = _per_round(runs, target)
        if not mine:
            continue
        cpu = [r.cpu_us_per_request for r in mine.values() if r.cpu_us_per_request is not None]
        rows.append(
            Row(
                target=target,
                rounds=len(mine),
                rps=median(r.rps for r in mine.values()),
                p50_ms=median(r.p50_us for r in mine.values()) / 1000,
                p99_ms=median(r.p99_us for r in mine.values()) / 1000,
                cpu_us_per_request=_median_of(cpu),
                vs_direct=_median_of(r.rps / direct[n].rps for n, r in mine.items() if n in direct),
                vs_haproxy=_median_of(
                    r.rps / haproxy[n].rps for n, r in mine.items() if n in haproxy
                ),
                cpu_vs_haproxy=_median_of(
                    x
                    for n, r in mine.items()
                    if n in haproxy and (x := _cpu_ratio(r, haproxy[n])) is not None
                ),
                added_p99_ms=_median_of(
                    (r.p99_us - direct[n].p99_us) / 1000 for n, r in mine.items() if n in direct
                )
                if target != "direct"
                else None,
                errors=sum(r.errors for r in mine.values()),
                other_cpu_pct=median(r.other_cpu_pct for r in mine.values()),
            )
        )
    return rows


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def load_table(rows: Sequence[Row]) -> str:
    lines = [
        "| target | requests/s | p50 ms | p99 ms | balancer CPU µs/req | CPU vs HAProxy "
        "| vs direct | vs HAProxy | added p99 ms | errors | other load % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {_f(r.cpu_us_per_request, '.1f')} | {_f(r.cpu_vs_haproxy, '.2f')} "
            f"| {_f(r.vs_direct, '.2f')} "
            f"| {_f(r.vs_haproxy, '.2f')} | {_f(r.added_p99_ms, '+.2f')} | {r.errors} "
            f"| {r.other_cpu_pct:.0f} |"
        )
    return "\n".join(lines)


def mb(kib: int) -> float:
    """KiB (as /proc reports) in MB (10^6 bytes, as the targets are written)."""
    return kib * 1024 / 1e6


def memory_table(results: Sequence[Any]) -> str:
    lines = [
        "| lbproxy memory | RSS before MB | peak RSS MB | growth MB | what was verified |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for m in results:
        lines.append(
            f"| {m.scenario} | {mb(m.baseline_kib):.1f} | {mb(m.peak_kib):.1f} "
            f"| {mb(m.growth_kib):.1f} | {m.detail} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    goal: str
    measured: str
    passed: bool | None  # None: not measured in this run

    @property
    def word(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def verdicts(rows: Sequence[Row], memory: Sequence[Any]) -> list[Verdict]:
    """lbproxy against each of the issue's targets."""
    lb = next((r for r in rows if r.target == "lbproxy"), None)
    out = []

    def check(goal: str, value: float | None, ok: bool, fmt: str) -> None:
        measured = "not measured" if value is None else format(value, fmt)
        out.append(Verdict(goal, measured, None if value is None else ok))

    v = lb.vs_haproxy if lb else None
    check(
        f"requests/s >= {MIN_RPS_VS_HAPROXY} of HAProxy's",
        v,
        v is not None and v >= MIN_RPS_VS_HAPROXY,
        ".2f",
    )
    v = lb.cpu_vs_haproxy if lb else None
    check(
        f"CPU per request <= {MAX_CPU_VS_HAPROXY} x HAProxy's",
        v,
        v is not None and v <= MAX_CPU_VS_HAPROXY,
        ".2f",
    )
    v = lb.added_p99_ms if lb else None
    check(
        f"added p99 <= {MAX_ADDED_P99_MS:.0f} ms over direct",
        v,
        v is not None and v <= MAX_ADDED_P99_MS,
        "+.2f",
    )
    two = next((r for r in rows if r.target == "lbproxy-2w"), None)
    if two is not None:
        v = two.vs_haproxy
        check(
            f"workers: 2 requests/s >= {MIN_RPS_VS_HAPROXY} of HAProxy nbthread 2's",
            v,
            v is not None and v >= MIN_RPS_VS_HAPROXY,
            ".2f",
        )
    for m in memory:
        limit = MAX_IDLE_GROWTH_MB if m.scenario.startswith("idle") else MAX_TRANSFER_GROWTH_MB
        g = mb(m.growth_kib)
        check(f"RSS growth < {limit:.0f} MB: {m.scenario}", g, g < limit, ".1f")
    return out


def verdict_table(items: Sequence[Verdict]) -> str:
    lines = ["| lbproxy target | measured | verdict |", "| --- | ---: | --- |"]
    lines += [f"| {v.goal} | {v.measured} | {v.word} |" for v in items]
    return "\n".join(lines)


def as_json(
    runs: Sequence[Run],
    rows: Sequence[Row],
    memory: Sequence[Any],
    items: Sequence[Verdict],
    context: dict[str, Any],
) -> dict[str, Any]:
    return {
        **context,
        "runs": [asdict(r) for r in runs],
        "summary": [asdict(r) for r in rows],
        "memory": [{**asdict(m), "growth_kib": m.growth_kib} for m in memory],
        "targets": [{"goal": v.goal, "measured": v.measured, "verdict": v.word} for v in items],
    }
