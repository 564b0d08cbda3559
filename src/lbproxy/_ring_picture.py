"""The key space as the dashboard draws it: a circle of arcs, each owned by one slot.

Pure. The circle is cut into ``SEGMENTS`` equal arcs and each is given the owner of the
key-space position at its middle; neighbours with the same owner merge. A hash ring gives
long arcs (its virtual nodes' spans); a Maglev table, whose entries are spread on purpose,
gives a fine mosaic, which is the truth about it.
"""

from __future__ import annotations

from ._routing import Ring

SEGMENTS = 720


def arcs(ring: Ring, segments: int = SEGMENTS) -> list[tuple[float, float, int]]:
    """(start, end, slot) as fractions of the circle, clockwise from the top."""
    slots = ring.scheme.slots
    out: list[tuple[float, float, int]] = []
    if not len(ring):
        return out
    for i in range(segments):
        owner = ring.owner_at((2 * i + 1) * slots // (2 * segments))
        if owner is None:
            continue
        start = i / segments
        if out and out[-1][2] == owner and out[-1][1] == start:
            out[-1] = (out[-1][0], (i + 1) / segments, owner)
        else:
            out.append((start, (i + 1) / segments, owner))
    return out


class RingPicture:
    """``arcs`` and ``shares`` of the ring in use, made again only when the ring changes
    (a ring's shares take a pass over all its virtual nodes)."""

    def __init__(self) -> None:
        self._ring: Ring | None = None
        self._arcs: list[tuple[float, float, int]] = []
        self._shares: dict[int, float] = {}

    def _refresh(self, ring: Ring) -> None:
        if ring is not self._ring:
            self._arcs = arcs(ring)
            self._shares = ring.shares()
            self._ring = ring

    def arcs(self, ring: Ring) -> list[tuple[float, float, int]]:
        self._refresh(ring)
        return self._arcs

    def shares(self, ring: Ring) -> dict[int, float]:
        self._refresh(ring)
        return self._shares
