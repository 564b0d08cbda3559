"""What the dashboard plots and its table shows beyond totals: requests/s of each slot over
the last minutes, and each replica's error rate and p50/p99 over the last seconds.

Pure: ``sample`` is handed the replicas and counters (once a second, by the server's
sampler task) and only reads them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from ._pool import Replica
from ._stats import Stats, quantile

#: Seconds between samples, samples kept (the plot's span), samples in a latency window.
STEP = 1.0
KEEP = 180
WINDOW = 10


class History:
    def __init__(self, step: float = STEP, keep: int = KEEP, window: int = WINDOW) -> None:
        self.step = step
        self._keep = keep
        self._window = window
        self.times: deque[float] = deque(maxlen=keep)
        #: slot -> requests/s at each of ``times`` (None before the slot existed).
        self.rates: dict[int, deque[float | None]] = {}
        #: slot -> its hostname at the latest sample (the plot labels lines by it).
        self.names: dict[int, str] = {}
        self._requests: dict[int, int] = {}
        self._last: float | None = None
        #: hostname -> (answers, 5xx answers, bucket counts) at each of the last samples.
        self._snapshots: dict[str, deque[tuple[int, int, list[int]]]] = {}

    def sample(self, replicas: Iterable[Replica], stats: Stats | None, now: float) -> None:
        elapsed = None if self._last is None else now - self._last
        self._last = now
        self.times.append(time.time())
        seen: set[int] = set()
        names: set[str] = set()
        for r in replicas:
            seen.add(r.slot)
            self.names[r.slot] = r.hostname
            before = self._requests.get(r.slot)
            self._requests[r.slot] = r.requests
            series = self.rates.get(r.slot)
            if series is None:
                series = self.rates[r.slot] = deque(
                    [None] * (len(self.times) - 1), maxlen=self._keep
                )
            rate = None
            if before is not None and elapsed:
                rate = max(0, r.requests - before) / elapsed
            series.append(rate)
            if stats is not None:
                names.add(r.hostname)
                s = stats.of(r.hostname)
                snaps = self._snapshots.get(r.hostname)
                if snaps is None:
                    snaps = self._snapshots[r.hostname] = deque(maxlen=self._window + 1)
                snaps.append((s.answers, s.errors, list(s.durations.counts)))
        for slot in list(self.rates):
            if slot not in seen:  # removed: its line ends; gone once it has left the plot
                self.rates[slot].append(None)
                self._requests.pop(slot, None)
                if not any(v is not None for v in self.rates[slot]):
                    del self.rates[slot]
                    self.names.pop(slot, None)
        for name in list(self._snapshots):
            if name not in names:
                del self._snapshots[name]

    def rate(self, slot: int) -> float | None:
        series = self.rates.get(slot)
        return series[-1] if series else None

    def recent(self, name: str) -> dict[str, float | None]:
        """Error rate (5xx share of answers), p50 and p99 (seconds) over the last WINDOW
        samples of the replica ``name``; None where nothing was answered."""
        snaps = self._snapshots.get(name)
        if not snaps or len(snaps) < 2:
            return {"error_rate": None, "p50": None, "p99": None}
        (a0, e0, c0), (a1, e1, c1) = snaps[0], snaps[-1]
        counts = [y - x for x, y in zip(c0, c1, strict=True)]
        answers = a1 - a0
        return {
            "error_rate": (e1 - e0) / answers if answers else None,
            "p50": quantile(counts, 0.5),
            "p99": quantile(counts, 0.99),
        }

    def series(self) -> dict[str, object]:
        """The plot's data: sample times and, per slot, its hostname and rates."""
        return {
            "step": self.step,
            "times": [round(t, 3) for t in self.times],
            "slots": [
                {
                    "slot": slot,
                    "hostname": self.names.get(slot, ""),
                    "rates": [None if v is None else round(v, 1) for v in values],
                }
                for slot, values in sorted(self.rates.items())
            ],
        }
