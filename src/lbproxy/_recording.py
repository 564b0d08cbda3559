"""What the data path reports once per answer: one call, bound at startup to what is on.

``Proxy`` calls ``Recorder.done`` for every answer it sends (relayed or its own). With
metrics and the access log both off that is a call to a function that does nothing; on, it
adds to plain counters (``_stats.py``) and appends one tuple to the access log's batch.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter, time
from typing import TYPE_CHECKING

from ._access_log import AccessLog
from ._stats import Stats

if TYPE_CHECKING:
    from ._front import Request

#: (request, replica name or "", status, body bytes sent, perf_counter() when it began)
Done = Callable[["Request", str, int, int, float], None]


def _nothing(request: Request, name: str, status: int, sent: int, t0: float) -> None:
    return None


class Recorder:
    def __init__(self, stats: Stats | None = None, access: AccessLog | None = None) -> None:
        #: None when metrics are off (``metrics.enabled: false``).
        self.stats = stats
        #: None when the access log is off (``log.access: false``).
        self.access = access
        self.done: Done
        if stats is not None and access is not None:
            self.done = self._both
        elif stats is not None:
            self.done = self._count
        elif access is not None:
            self.done = self._log
        else:
            self.done = _nothing

    def _count(self, request: Request, name: str, status: int, sent: int, t0: float) -> None:
        self.stats.answered(name, status, perf_counter() - t0)  # type: ignore[union-attr]

    def _log(self, request: Request, name: str, status: int, sent: int, t0: float) -> None:
        self._entry(request, name, status, sent, perf_counter() - t0)

    def _both(self, request: Request, name: str, status: int, sent: int, t0: float) -> None:
        seconds = perf_counter() - t0
        self.stats.answered(name, status, seconds)  # type: ignore[union-attr]
        self._entry(request, name, status, sent, seconds)

    def _entry(self, request: Request, name: str, status: int, sent: int, seconds: float) -> None:
        prepared = request.prepared
        self.access.add(  # type: ignore[union-attr]
            (
                time(),
                request.remote or "",
                request.method,
                request.target,
                status,
                sent,
                name,
                seconds,
                prepared[0] if prepared is not None else "",
            )
        )
