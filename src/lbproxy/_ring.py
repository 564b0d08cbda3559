"""The consistent-hash ring: pure data, rebuilt (never mutated) when membership changes.

A replica's virtual nodes belong to its *slot* number (the ``i`` of Phi), never to its
hostname, so a replacement started in the same slot gets back exactly the same keys. A
replica of weight w places round(w x K) virtual nodes (at least one): the first K are those
it has at weight 1, so changing one replica's weight moves keys to or from it only.
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Literal

from ._hashing import WEIGHT_UNIT, HashScheme, weight_units

Probing = Literal["linear", "quadratic"]

#: Rings at most this large are built slot by slot with probing; larger ones (the 64-bit
#: default) are built by one sort and fall back to probing only on an actual collision.
_SMALL_RING = 1 << 20
_OWNER_BITS = 16
MAX_REPLICA_SLOT = (1 << _OWNER_BITS) - 1


def members_of(replicas: Iterable[int] | Mapping[int, float]) -> dict[int, int]:
    """Slot -> weight in thousandths (``weight_units``), in slot order, slots checked.

    A plain iterable of slots gives every one weight 1.
    """
    if isinstance(replicas, Mapping):
        members = {s: weight_units(w) for s, w in replicas.items()}
    else:
        members = dict.fromkeys(replicas, WEIGHT_UNIT)
    for r in members:
        if not 0 <= r <= MAX_REPLICA_SLOT:
            raise ValueError(f"replica slot {r} is outside 0..{MAX_REPLICA_SLOT}")
    return dict(sorted(members.items()))


def vnode_count(scheme: HashScheme, units: int) -> int:
    """Virtual nodes of a replica of ``units`` thousandths of weight: round(w x K), >= 1."""
    return max(1, (scheme.virtual_nodes * units + WEIGHT_UNIT // 2) // WEIGHT_UNIT)


@lru_cache(maxsize=512)
def _packed_positions(scheme: HashScheme, replica: int, count: int) -> tuple[int, ...]:
    # Cached because the ring scheme hashes thousands of virtual nodes per replica and
    # membership changes rebuild the ring from every member's positions.
    return tuple((scheme.vnode_position(replica, j) << _OWNER_BITS) | replica for j in range(count))


class RingFullError(ValueError):
    """More virtual nodes than ring slots."""


class Membership:
    """What every routing structure keeps of what it was built from (the pool compares it
    with the replicas that are up to know whether to rebuild), and its owners array."""

    __slots__ = ("_owners", "probing", "replicas", "scheme", "weights")

    def __init__(
        self,
        scheme: HashScheme,
        replicas: Iterable[int] | Mapping[int, float],
        probing: Probing = "linear",
    ) -> None:
        self.scheme = scheme
        self.probing: Probing = probing
        members = members_of(replicas)
        self.replicas: frozenset[int] = frozenset(members)
        #: Each slot's weight in thousandths, in slot order.
        self.weights: dict[int, int] = members
        #: The owning slot of each virtual node (or table entry), in position order.
        self._owners = array("H")

    def __len__(self) -> int:
        return len(self._owners)

    def weight_map(self) -> dict[int, float]:
        """Slot -> weight, as the structure was built from (what ``members_of`` reads back
        into the same thousandths)."""
        return {s: u / WEIGHT_UNIT for s, u in self.weights.items()}

    def __bool__(self) -> bool:
        return bool(self._owners)

    def _distinct(self, owners: Iterable[int]) -> Iterator[int]:
        """Each replica once, in the order ``owners`` meets them; then, in slot order, any
        that own nothing (a slot of tiny weight on a small table)."""
        remaining = len(self.replicas)
        seen: set[int] = set()
        for owner in owners:
            if owner not in seen:
                seen.add(owner)
                yield owner
                remaining -= 1
                if not remaining:
                    return
        yield from sorted(self.replicas - seen)


class HashRing(Membership):
    """Replica slots placed on a ring of ``scheme.slots`` positions by ``scheme``."""

    __slots__ = ("_counts", "_first_in", "_positions", "_shift")

    def __init__(
        self,
        scheme: HashScheme,
        replicas: Iterable[int] | Mapping[int, float],
        probing: Probing = "linear",
        built: tuple[array[int], array[int]] | None = None,
    ) -> None:
        """``built``: the positions and owners of this very ring, placed before (by another
        process: ``__reduce__``), taken as they are instead of being placed again."""
        super().__init__(scheme, replicas, probing)
        members = self.weights
        #: Virtual nodes per slot, in slot order.
        self._counts = {r: vnode_count(scheme, u) for r, u in members.items()}
        total = sum(self._counts.values())
        if total > scheme.slots:
            k = scheme.virtual_nodes
            weighted = "" if total == len(members) * k else " (weighted)"
            raise RingFullError(
                f"{len(self.replicas)} replicas x {k} virtual nodes{weighted} "
                f"do not fit in {scheme.slots} slots"
            )
        if built is not None:
            self._positions, self._owners = built
        else:
            packed = self._place()
            self._positions = array("Q", [p >> _OWNER_BITS for p in packed])
            self._owners = array("H", [p & MAX_REPLICA_SLOT for p in packed])
        self._index()

    def __reduce__(self) -> tuple[object, ...]:
        # Explicit, so that a compiled (mypyc) ring pickles as its source does: the worker
        # processes route from the supervisor's own ring, not one they build again.
        built = (self._positions, self._owners)
        return (HashRing, (self.scheme, self.weight_map(), self.probing, built))

    def _index(self) -> None:
        # Bisecting the whole ring costs every request some 16 probes, each boxing a 64-bit
        # position into a new int. Buckets by the position's top bits, about as many as
        # there are virtual nodes / 4, leave a bisect of a few entries: _first_in[b] is the
        # index of the first virtual node at or after the start of bucket b.
        slot_bits = (self.scheme.slots - 1).bit_length()
        bits = min(slot_bits, max(0, len(self._positions).bit_length() - 2))
        self._shift = slot_bits - bits
        positions = self._positions
        self._first_in = array(
            "I", [bisect_left(positions, b << self._shift) for b in range((1 << bits) + 1)]
        )

    def _index_of(self, position: int) -> int:
        """``bisect_left(self._positions, position)``, searching only its bucket."""
        b = position >> self._shift
        first_in = self._first_in
        return bisect_left(self._positions, position, first_in[b], first_in[b + 1])

    def _place(self) -> list[int]:
        if self.scheme.slots > _SMALL_RING:
            packed: list[int] = []
            for r, count in self._counts.items():
                packed.extend(_packed_positions(self.scheme, r, count))
            packed.sort()
            if all((a >> _OWNER_BITS) != (b >> _OWNER_BITS) for a, b in itertools.pairwise(packed)):
                return packed
        return self._place_probing()

    def _place_probing(self) -> list[int]:
        # Canonical order (slot, then virtual node) makes the result depend only on the set
        # of members, so rebuilding after a replacement gives the identical ring.
        m = self.scheme.slots
        taken: dict[int, int] = {}
        for r, count in self._counts.items():
            for packed in _packed_positions(self.scheme, r, count):
                p = start = packed >> _OWNER_BITS
                step = 0
                while p in taken:
                    step += 1
                    if self.probing == "quadratic" and step <= m:
                        # Triangular offsets visit every slot when m is a power of two.
                        p = (start + step * (step + 1) // 2) % m
                    else:
                        p = (p + 1) % m
                taken[p] = r
        return sorted((p << _OWNER_BITS) | r for p, r in taken.items())

    def owner_at(self, position: int) -> int | None:
        """The replica of the first virtual node clockwise from ``position`` (inclusive)."""
        if not self._positions:
            return None
        i = bisect_left(self._positions, position)
        return self._owners[i if i < len(self._owners) else 0]

    def lookup(self, key: str) -> int | None:
        """The replica slot that serves ``key``, or None on an empty ring."""
        # owner_at inlined: this runs for every proxied request.
        owners = self._owners
        if not owners:
            return None
        i = self._index_of(self.scheme.key_position(key))
        return owners[i if i < len(owners) else 0]

    def walk(self, key: str) -> Iterator[int]:
        """Every replica once, in the order met going clockwise from ``key``'s position.

        The first is ``lookup(key)``; the rest are where retries go.
        """
        owners = self._owners
        n = len(owners)
        if not n:
            return
        i = self._index_of(self.scheme.key_position(key))
        yield from self._distinct(owners[(i + step) % n] for step in range(n))

    def vnodes(self) -> list[tuple[int, int]]:
        """(position, replica) of every virtual node, clockwise."""
        return list(zip(self._positions, self._owners, strict=True))

    def shares(self) -> dict[int, float]:
        """Fraction of the key space each replica serves (for reports and tests)."""
        n = len(self._positions)
        out = dict.fromkeys(self.replicas, 0.0)
        if not n:
            return out
        m = self.scheme.slots
        for k in range(n):
            prev = self._positions[k - 1] if k else self._positions[-1] - m
            out[self._owners[k]] += (self._positions[k] - prev) / m
        return out
