"""Hash functions and schemes: the assignment's, the seed's modulo variant, the vnode ring, and
the default Maglev table.

Pure functions, no I/O. A *scheme* maps a request key to a position (in a ring of ``slots``
positions, or in a table of ``slots`` entries) and, for the ring schemes, a (replica slot,
virtual node) pair to a ring position, both already reduced mod ``slots``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import xxhash

HashName = Literal["default", "ring", "assignment", "modulo"]
HASH_NAMES: tuple[HashName, ...] = ("default", "ring", "assignment", "modulo")
#: Schemes that place virtual nodes on a ring (the rest: the default's lookup table).
RING_NAMES: tuple[HashName, ...] = ("ring", "assignment", "modulo")

#: The assignment's ring: M = 512 slots, K = log2(M) = 9 virtual nodes per replica.
ASSIGNMENT_SLOTS = 512
ASSIGNMENT_VIRTUAL_NODES = 9

#: The ``ring`` scheme (lbproxy's default before the Maglev table): the whole 64-bit space,
#: 16384 virtual nodes per replica, which keep every share within about 1% of even for N = 2..10.
RING_SLOTS = 1 << 64
RING_VIRTUAL_NODES = 16384

#: The default: a Maglev table of this many entries (a prime). The table's size sets what
#: building it costs (linear in it, in pure Python) against the keys that move beyond the
#: ideal 1/N when a replica joins or leaves (shrinking as the table grows): 16411 builds in
#: well under 50 ms at N = 64 here; docs/ring.md has the measurements behind the choice.
DEFAULT_TABLE_SIZE = 16411
#: Largest table the default accepts: building is linear in it (about 1.5 s at this size).
MAX_TABLE_SIZE = 1 << 20

#: Weights are kept as integer thousandths, so every balancer computes the same shares and
#: caps from the same configuration, with no floating-point rounding in between.
WEIGHT_UNIT = 1000


def weight_units(weight: float) -> int:
    """A weight as integer thousandths (at least 1)."""
    return max(1, round(weight * WEIGHT_UNIT))


def assignment_h(i: int) -> int:
    """H(i) = i^2 + 2i + 17, the assignment's request hash (before ``mod M``)."""
    return i * i + 2 * i + 17


def assignment_phi(i: int, j: int) -> int:
    """Phi(i, j) = i^2 + j^2 + 2j + 25, the assignment's virtual-node hash (before ``mod M``)."""
    return i * i + j * j + 2 * j + 25


def modulo_h(i: int) -> int:
    """The seed's experiment-4 request hash: H(i) = i (so the slot is ``i mod M``)."""
    return i


def key_hash(key: str) -> int:
    """The stable 64-bit hash of a request key (xxh3; never Python's per-process ``hash``)."""
    return xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass"))


def key_to_int(key: str) -> int:
    """A request id as the integer the assignment's H takes.

    Decimal ids (the assignment's 6-digit numbers) are used as they are; any other key is
    first turned into an integer by a stable 64-bit hash so every key still has a slot.
    """
    if key.isascii() and key.isdigit():
        return int(key)
    return key_hash(key)


@dataclass(frozen=True, slots=True)
class HashScheme:
    """A named pair of hash functions over ``slots`` positions."""

    name: HashName
    slots: int
    #: Virtual nodes per replica (of weight 1) on the ring schemes; 1 for the default's table.
    virtual_nodes: int

    def key_position(self, key: str) -> int:
        """Ring position (or table entry) of a request key."""
        if self.name == "assignment":
            return assignment_h(key_to_int(key)) % self.slots
        if self.name == "modulo":
            return modulo_h(key_to_int(key)) % self.slots
        return key_hash(key) % self.slots

    def vnode_position(self, replica: int, j: int) -> int:
        """Ring position wanted by virtual node ``j`` of the replica in slot ``replica``."""
        if self.name == "ring":
            return xxhash.xxh3_64_intdigest(b"%d:%d" % (replica, j)) % self.slots
        if self.name == "default":
            raise ValueError("the default's Maglev table has no virtual nodes")
        return assignment_phi(replica, j) % self.slots

    @property
    def is_ring(self) -> bool:
        return self.name in RING_NAMES


def make_scheme(
    name: HashName, slots: int | None = None, virtual_nodes: int | None = None
) -> HashScheme:
    """The scheme ``name`` with the named defaults for whatever is not given."""
    if name not in HASH_NAMES:
        raise ValueError(f"unknown hash function {name!r}; choose one of {', '.join(HASH_NAMES)}")
    if name == "default":
        if virtual_nodes is not None:
            raise ValueError(
                "virtual_nodes applies to the ring schemes (ring, assignment, modulo), "
                "not to the default's Maglev table"
            )
        m = DEFAULT_TABLE_SIZE if slots is None else slots
        if not 2 <= m <= MAX_TABLE_SIZE:
            raise ValueError(f"the default's table size must be 2..{MAX_TABLE_SIZE}, not {m}")
        return HashScheme(name=name, slots=m, virtual_nodes=1)
    if name == "ring":
        m = RING_SLOTS if slots is None else slots
        k = RING_VIRTUAL_NODES if virtual_nodes is None else virtual_nodes
    else:
        m = ASSIGNMENT_SLOTS if slots is None else slots
        # The assignment ties K to M: K = log2(M).
        k = max(1, m.bit_length() - 1) if virtual_nodes is None else virtual_nodes
    if m < 1 or k < 1:
        raise ValueError("slots and virtual_nodes must be positive")
    return HashScheme(name=name, slots=m, virtual_nodes=k)
