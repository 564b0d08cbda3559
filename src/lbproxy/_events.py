"""The timeline the dashboard shows: replicas added, up, died, replaced, killed, removed, and
config reloads. Pure and bounded: the latest ``MOST`` events are kept."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal

Kind = Literal["added", "up", "died", "replaced", "killed", "removed", "stopped", "reloaded"]
MOST = 500


@dataclass(frozen=True, slots=True)
class Event:
    #: Sequence number: the dashboard asks only for those after the last it has.
    seq: int
    time: float
    kind: Kind
    replica: str = ""
    slot: int | None = None
    detail: str = ""


class Events:
    def __init__(self, most: int = MOST) -> None:
        self._items: deque[Event] = deque(maxlen=most)
        self._seq = 0

    def add(self, kind: Kind, replica: str = "", slot: int | None = None, detail: str = "") -> None:
        self._seq += 1
        self._items.append(Event(self._seq, time.time(), kind, replica, slot, detail))

    def recent(self, limit: int = 100) -> list[dict[str, object]]:
        """The latest ``limit`` events, oldest first, as JSON-ready dicts."""
        items = list(self._items)[-limit:] if limit else []
        return [asdict(e) for e in items]

    def kinds(self) -> list[str]:
        return [e.kind for e in self._items]
