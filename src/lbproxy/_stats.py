"""What the data path counts: plain integers in plain structures, read at scrape time.

No I/O and no locks: everything runs on the event loop's thread, so an increment is a
Python ``+= 1`` (tens of nanoseconds) where a ``prometheus_client`` counter would take its
lock (some 0.5 us) on every request. ``_metrics.py`` renders these when /metrics is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

#: Upper bounds (seconds) of the duration buckets: from half a millisecond (a proxied hop on
#: loopback) to 10 s (beyond that, the replica's read timeout is the better signal).
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum of values."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.sum += seconds

    def add(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of values at most le), as the text format lists buckets."""
        out = []
        total = 0
        for bound, n in zip((*DURATION_BUCKETS, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


def quantile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of bucket ``counts`` (not cumulative), interpolated linearly within
    its bucket as Prometheus' histogram_quantile does; None without any value."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, n in enumerate(counts):
        upper = DURATION_BUCKETS[i] if i < len(DURATION_BUCKETS) else lower
        if n and seen + n >= rank:
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        lower = upper
    return lower


class ReplicaStats:
    """One replica's counters (by hostname: a replacement starts its own)."""

    __slots__ = ("codes", "connect_errors", "durations", "retries")

    def __init__(self) -> None:
        #: status -> answers relayed (or given by the balancer about this replica).
        self.codes: dict[int, int] = {}
        self.durations = Histogram()
        #: Requests sent on to another replica after this one failed them.
        self.retries = 0
        self.connect_errors = 0

    def add(self, other: ReplicaStats) -> None:
        """Count ``other``'s too (another worker process's counters of the same replica)."""
        codes = self.codes
        for code, n in other.codes.items():
            codes[code] = codes.get(code, 0) + n
        self.durations.add(other.durations)
        self.retries += other.retries
        self.connect_errors += other.connect_errors

    @property
    def answers(self) -> int:
        return sum(self.codes.values())

    @property
    def errors(self) -> int:
        """Answers with a 5xx status."""
        return sum(n for code, n in self.codes.items() if code >= 500)


#: The name the balancer's own answers that concern no one replica are counted under
#: (``replica=""``). A module constant: compiled (mypyc), a plain class attribute is not one.
OWN = ""


class Stats:
    """Every counter of the balancer's data path and supervisor."""

    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaStats] = {}
        self.heartbeats = Histogram()
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}

    def of(self, name: str) -> ReplicaStats:
        stats = self.replicas.get(name)
        if stats is None:
            stats = self.replicas[name] = ReplicaStats()
        return stats

    def answered(self, name: str, status: int, seconds: float) -> None:
        """An answer went out (relayed from ``name``, or the balancer's own about it)."""
        stats = self.replicas.get(name)
        if stats is None:
            stats = self.replicas[name] = ReplicaStats()
        codes = stats.codes
        codes[status] = codes.get(status, 0) + 1
        stats.durations.observe(seconds)

    def own(self, status: int) -> None:
        """An answer of the balancer's own that no replica had part in (a malformed
        request's 400, ...): counted, with no duration."""
        codes = self.of(OWN).codes
        codes[status] = codes.get(status, 0) + 1

    def forget(self, keep: Iterable[str], most: int = 1024) -> None:
        """Drop the counters of replicas gone long ago, beyond the ``most`` kept: a balancer
        that replaces replicas for months must not grow without bound (``keep``: the ones
        that still run, and the balancer's own)."""
        extra = len(self.replicas) - most
        if extra <= 0:
            return
        keep = {*keep, OWN}
        for name in [n for n in self.replicas if n not in keep][:extra]:
            del self.replicas[name]


def summed(*parts: dict[str, ReplicaStats]) -> dict[str, ReplicaStats]:
    """The per-replica counters of several processes added up, in new objects."""
    out: dict[str, ReplicaStats] = {}
    for part in parts:
        for name, stats in part.items():
            mine = out.get(name)
            if mine is None:
                mine = out[name] = ReplicaStats()
            mine.add(stats)
    return out
