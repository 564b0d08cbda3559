"""The deaths of a backend's replicas as it learns them, for ``Backend.wait_exit``."""

from __future__ import annotations

import asyncio


class Exits:
    """One event per replica the backend runs (by its ident), set once the replica is known
    to have ended, with why; or once the backend forgets it (stopped on purpose): whoever
    still waits learns it is gone."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._reasons: dict[str, str] = {}

    def track(self, ident: str) -> None:
        """From now on (before it even starts, so a death while it starts is not missed)."""
        self._events.setdefault(ident, asyncio.Event())

    def died(self, ident: str, reason: str) -> None:
        event = self._events.get(ident)
        if event is not None and not event.is_set():
            self._reasons[ident] = reason
            event.set()

    def forget(self, ident: str) -> None:
        self._reasons.pop(ident, None)
        event = self._events.pop(ident, None)
        if event is not None:
            event.set()

    async def wait(self, ident: str, default: str) -> str:
        """Why it ended (``default`` if it was forgotten), once it has."""
        event = self._events.get(ident)
        if event is None:
            return "not running"
        await event.wait()
        return self._reasons.get(ident, default)
