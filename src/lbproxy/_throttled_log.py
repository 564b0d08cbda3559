"""Log lines the data path would otherwise write once per request, said once per event.

A replica stopped under load fails every request routed to it until it leaves the ring; one
warning per request buried the log (95 "cannot connect" lines in 0.7 s). Here the first
line about a subject (a replica, the clients) and an event ("connect", "failed"...) is logged
at once; the same event about the same subject within ``window`` seconds is only counted,
and the count is logged when the window ends, with the last such message:

    WARNING cannot connect to 127.0.0.1:8001: Connection refused; trying the next replica
    WARNING server-2: 94 more like "cannot connect" in the last 2.0s (last: cannot ...)

A quiet window ends the event: the next one is logged at once again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

#: Seconds during which repeats of an event are counted rather than logged.
WINDOW = 2.0


class _Event:
    __slots__ = ("count", "last", "level", "since")

    def __init__(self, level: int, since: float) -> None:
        self.level = level
        self.count = 0  # repeats not logged yet
        self.last = ""
        self.since = since


class ThrottledLog:
    """Logs through ``logger``, at most one line per (subject, event) and window, plus a
    summary line with the number of repeats."""

    def __init__(self, logger: logging.Logger, window: float = WINDOW) -> None:
        self.logger = logger
        self.window = window
        self._events: dict[tuple[str, str], _Event] = {}

    def warning(self, subject: str, event: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, subject, event, msg, *args)

    def info(self, subject: str, event: str, msg: str, *args: Any) -> None:
        self.log(logging.INFO, subject, event, msg, *args)

    def log(self, level: int, subject: str, event: str, msg: str, *args: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        key = (subject, event)
        seen = self._events.get(key)
        if seen is not None:
            seen.count += 1
            seen.last = msg % args if args else msg
            return
        self.logger.log(level, msg, *args)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test calling from outside one): nothing to count
            return
        self._events[key] = _Event(level, loop.time())
        loop.call_later(self.window, self._flush, key, loop)

    def _flush(self, key: tuple[str, str], loop: asyncio.AbstractEventLoop) -> None:
        seen = self._events.get(key)
        if seen is None:
            return
        if not seen.count:
            del self._events[key]  # a quiet window: the next one is news again
            return
        now = loop.time()
        self.logger.log(
            seen.level,
            '%s: %d more like "%s" in the last %.1fs (last: %s)',
            key[0],
            seen.count,
            key[1],
            now - seen.since,
            seen.last,
        )
        seen.count = 0
        seen.since = now
        loop.call_later(self.window, self._flush, key, loop)
