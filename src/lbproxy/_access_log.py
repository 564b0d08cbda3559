"""The access log: one line per proxied request, written by a thread off the event loop.

The data path only appends a tuple to a list (``add``); a task hands the batch to a thread
every ``FLUSH_INTERVAL``, which formats it and writes it with one system call. Lines reach
the log up to that interval late, and the event loop neither formats nor waits on a disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Literal

from ._log_format import json_line, text_line

log = logging.getLogger("lbproxy.access")

#: (time.time(), client, method, target, status, body bytes, replica, seconds, request key)
Entry = tuple[float, str, str, str, int, int, str, float, str]

#: How often the lines gathered are written.
FLUSH_INTERVAL = 0.2
#: Lines kept waiting at most (a log file on a disk that stalls): beyond them, lines are
#: dropped and counted, rather than the balancer's memory growing without bound.
MAX_PENDING = 200_000


class AccessLog:
    def __init__(self, fmt: Literal["text", "json"] = "text", path: str | None = None) -> None:
        self._format = json_line if fmt == "json" else text_line
        #: None: the balancer's standard error.
        self._path = path
        self._fd: int | None = None
        self._pending: list[Entry] = []
        #: Lines dropped because MAX_PENDING were waiting.
        self.dropped = 0
        self._said_dropped = 0

    def add(self, entry: Entry) -> None:
        """Called by the data path for each answer: no formatting, no I/O."""
        pending = self._pending
        if len(pending) < MAX_PENDING:
            pending.append(entry)
        else:
            self.dropped += 1

    async def run(self) -> None:
        """Write what gathered, every FLUSH_INTERVAL, for as long as the balancer runs."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(self._write, batch)
        if self.dropped != self._said_dropped:
            log.warning("access log: %d lines dropped (writing fell behind)", self.dropped)
            self._said_dropped = self.dropped

    def _write(self, batch: list[Entry]) -> None:
        fmt = self._format
        data = "".join([fmt(e) for e in batch]).encode("utf-8", "backslashreplace")
        try:
            if self._fd is None:
                self._fd = (
                    sys.stderr.fileno()
                    if self._path is None
                    else os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                )
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            log.error("cannot write the access log to %s: %s", self._path or "stderr", e)

    def close(self) -> None:
        if self._fd is not None and self._path is not None:
            os.close(self._fd)
        self._fd = None
