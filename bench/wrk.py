"""Driving wrk and reading its results: the ``LBBENCH`` line that ``keys.lua`` prints.

Latencies are wrk's (closed-loop: a slow answer delays the next request on its connection, so
they are service times under 64 busy connections, not an open-loop latency SLO).
"""

from __future__ import annotations

import json
import random
import subprocess
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from .procs import BenchError

SCRIPT = Path(__file__).with_name("keys.lua")
MARK = "LBBENCH "
#: wrk's per-request timeout; an answer slower than this counts as a timeout error.
REQUEST_TIMEOUT = "2s"

Quantiles = list[tuple[float, float]]  # (percentile 0..100, latency in microseconds), sorted


@dataclass(frozen=True)
class Load:
    """What one wrk process (or several at once, merged) measured."""

    requests: int
    duration_s: float
    errors: int  # socket errors, timeouts and non-2xx/3xx answers
    quantiles: Quantiles

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def percentile_us(self, p: float) -> float:
        return quantile(self.quantiles, p)


def parse(output: str) -> Load:
    """The ``Load`` in wrk's output (stdout with ``keys.lua``'s result line)."""
    for line in output.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK) :])
            return Load(
                requests=int(data["requests"]),
                duration_s=data["duration_us"] / 1e6,
                errors=sum(int(v) for v in data["errors"].values()),
                quantiles=[(float(p), float(us)) for p, us in data["quantiles"]],
            )
    raise BenchError(f"no {MARK.strip()} line in wrk's output:\n{output[-2000:]}")


def quantile(quantiles: Quantiles, p: float) -> float:
    """The latency at percentile ``p``, interpolated linearly between the grid's points."""
    ps = [q[0] for q in quantiles]
    i = bisect_left(ps, p)
    if i == 0:
        return quantiles[0][1]
    if i == len(ps):
        return quantiles[-1][1]
    (p0, v0), (p1, v1) = quantiles[i - 1], quantiles[i]
    return v0 if p1 == p0 else v0 + (v1 - v0) * (p - p0) / (p1 - p0)


def _cdf(quantiles: Quantiles, us: float) -> float:
    """Share (0..100) of requests at most ``us``: the inverse of ``quantile``."""
    if us < quantiles[0][1]:
        return 0.0
    for (p0, v0), (p1, v1) in pairwise(quantiles):
        if v0 <= us < v1:
            return p0 + (p1 - p0) * (us - v0) / (v1 - v0)
    return 100.0


def merge(loads: Sequence[Load], grid: Sequence[float] = (50.0, 90.0, 99.0, 99.9)) -> Load:
    """Several wrk processes that ran at the same time, as one load.

    Requests add up; rates add up (each process over its own duration); the latency
    distribution is the request-weighted mix of theirs, evaluated at ``grid``.
    """
    if len(loads) == 1:
        return loads[0]
    total = sum(x.requests for x in loads)
    rps = sum(x.rps for x in loads)
    lo = min(x.quantiles[0][1] for x in loads)
    hi = max(x.quantiles[-1][1] for x in loads)

    def mixed_cdf(us: float) -> float:
        return sum(x.requests * _cdf(x.quantiles, us) for x in loads) / total

    points: Quantiles = [(0.0, lo)]
    for p in grid:
        a, b = lo, hi
        for _ in range(60):  # bisection on the mixed CDF, to well under a microsecond
            mid = (a + b) / 2
            a, b = (mid, b) if mixed_cdf(mid) < p else (a, mid)
        points.append((p, b))
    points.append((100.0, hi))
    return Load(
        requests=total,
        duration_s=total / rps if rps else 0.0,
        errors=sum(x.errors for x in loads),
        quantiles=points,
    )


def split_connections(connections: int, parts: int) -> list[int]:
    """``connections`` shared out as evenly as possible: 64 over 3 is [22, 21, 21]."""
    base, extra = divmod(connections, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def command(
    wrk: str, url: str, connections: int, threads: int, duration: float, seed: int
) -> list[str]:
    threads = max(1, min(threads, connections))
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={REQUEST_TIMEOUT}",
        "-s",
        str(SCRIPT),
        url,
        "--",
        str(seed),
    ]


def run(wrk: str, urls: Sequence[str], connections: int, threads: int, duration: float) -> Load:
    """Drive ``urls`` at once (one wrk process each, sharing ``connections``), merged."""
    shares = split_connections(connections, len(urls))
    per = max(1, threads // len(urls))
    procs = [
        subprocess.Popen(
            command(wrk, url, c, per, duration, random.randrange(1 << 30)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for url, c in zip(urls, shares, strict=True)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=duration + 30)
            if p.returncode != 0:
                raise BenchError(f"wrk exited with {p.returncode}:\n{out[-2000:]}")
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return merge([parse(o) for o in outputs])
