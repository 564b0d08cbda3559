"""The default routing structure: a Maglev lookup table (Eisenbud et al., NSDI 2016).

Pure data, rebuilt (never mutated) when membership or weights change. Each replica slot has
its own permutation of the table's entries, derived from the slot number alone; the slots,
in ascending order, take turns claiming their next free preferred entry until the table is
full (a weighted slot takes turns in proportion to its weight). So every replica owns its
share of the entries to within one, whatever N is, a lookup is one index into an array, and
the table depends only on the set of (slot, weight) pairs: never on hostnames, on the order
replicas were added in, or on the process.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping
from math import gcd

import xxhash

from ._hashing import HashScheme
from ._ring import Membership, Probing

_xxh3 = xxhash.xxh3_64_intdigest


def permutation(replica: int, size: int) -> tuple[int, int]:
    """(offset, skip) of the slot's preference order: entries offset, offset + skip, ..."""
    offset = xxhash.xxh3_64_intdigest(b"maglev-offset:%d" % replica) % size
    skip = xxhash.xxh3_64_intdigest(b"maglev-skip:%d" % replica) % (size - 1) + 1
    return offset, _coprime(skip, size)


def _coprime(step: int, size: int) -> int:
    """``step``, or the next number in 1..size-1 after it that visits every entry (with a
    prime size, every step does)."""
    while gcd(step, size) != 1:
        step = step % (size - 1) + 1
    return step


def populate(size: int, members: Mapping[int, int]) -> list[int]:
    """The table: the owning slot of each of ``size`` entries.

    ``members`` maps each slot to its weight (any positive integers; only their ratios
    matter). Equal weights give Maglev's table exactly; otherwise a slot claims an entry on
    the turns where its accumulated weight reaches the largest weight, so the heaviest claims
    on every turn and the counts end up in proportion to the weights.
    """
    slots = sorted(members)
    if not slots:
        return []
    table = [-1] * size
    order = [permutation(s, size) for s in slots]
    nxt = [offset for offset, _ in order]
    skips = [skip for _, skip in order]
    weights = [members[s] for s in slots]
    heaviest = max(weights)
    credit = [0] * len(slots)
    equal = all(w == heaviest for w in weights)
    turns = list(zip(range(len(slots)), slots, skips, weights, strict=True))
    filled = 0
    # The hot loop of a build (some 10^5 probes at N = 64): locals only, no calls.
    while True:
        for i, slot, skip, weight in turns:
            if not equal:
                credit[i] += weight
                if credit[i] < heaviest:
                    continue
                credit[i] -= heaviest
            c = nxt[i]
            while table[c] >= 0:
                c += skip
                if c >= size:
                    c -= size
            table[c] = slot
            c += skip
            nxt[i] = c - size if c >= size else c
            filled += 1
            if filled == size:
                return table


def _stepping(owners: array[int], start: int, stride: int) -> Iterator[int]:
    """The owners of entries start, start + stride, ... (mod size): every entry once."""
    size = len(owners)
    i = start
    for _ in range(size):
        yield owners[i]
        i += stride
        if i >= size:
            i -= size


class MaglevTable(Membership):
    """Replica slots owning the entries of a table of ``scheme.slots`` entries (``probing``
    is kept for the pool's comparison only: a table has none)."""

    __slots__ = ("_counts", "_size")

    def __init__(
        self,
        scheme: HashScheme,
        replicas: Iterable[int] | Mapping[int, float],
        probing: Probing = "linear",
        built: array[int] | None = None,
    ) -> None:
        """``built``: this very table's entries, filled before (by another process:
        ``__reduce__``), taken as they are instead of being filled again."""
        super().__init__(scheme, replicas, probing)
        members = self.weights
        self._size = scheme.slots
        if built is not None:
            self._owners = built
            owners: Iterable[int] = built
        else:
            owners = populate(self._size, members)
            self._owners = array("H", owners)
        counts = dict.fromkeys(members, 0)
        for slot in owners:
            counts[slot] += 1
        self._counts = counts

    def __reduce__(self) -> tuple[object, ...]:
        # Explicit, so that a compiled (mypyc) table pickles as its source does: the worker
        # processes route from the supervisor's own table, not one they fill again.
        return (MaglevTable, (self.scheme, self.weight_map(), self.probing, self._owners))

    def owner_at(self, position: int) -> int | None:
        """The slot owning table entry ``position``."""
        if not self._owners:
            return None
        return self._owners[position % self._size]

    def lookup(self, key: str) -> int | None:
        """The replica slot that serves ``key``, or None on an empty table."""
        owners = self._owners
        if not owners:
            return None
        # scheme.key_position inlined (the default's: xxh3 mod size): this runs per request.
        return owners[_xxh3(key.encode("utf-8", "surrogatepass")) % self._size]

    def walk(self, key: str) -> Iterator[int]:
        """Every replica once: ``lookup(key)`` first, then the owners of the entries a
        key-derived stride away (where retries and overflow go).

        Entries next to each other are claimed along correlated permutations, so stepping
        to the next entry would spread one replica's keys unevenly over the others (the
        busiest taking 1.4 times its share at N = 16; docs/ring.md); a stride taken from the
        key's own hash, like Envoy's jump seeded by the hash, spreads them evenly and is the
        same on every balancer.
        """
        owners = self._owners
        size = len(owners)
        if not size:
            return
        h = _xxh3(key.encode("utf-8", "surrogatepass"))
        stride = _coprime((h >> 32) % (size - 1) + 1 if size > 1 else 1, size)
        yield from self._distinct(_stepping(owners, h % size, stride))

    def shares(self) -> dict[int, float]:
        """Fraction of the key space (the entries) each replica serves."""
        if not self._owners:
            return dict.fromkeys(self.replicas, 0.0)
        return {slot: n / self._size for slot, n in self._counts.items()}
