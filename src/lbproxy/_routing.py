"""Routing decisions, pure: which structure a scheme builds, and consistent hashing with bounded
loads on top of it.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads",
SODA 2018; HAProxy's ``hash-balance-factor``, Envoy's ``hash_balance_factor``): a replica
whose requests in flight would exceed ``ceil(factor x (total in flight + 1) x share)`` is
passed over for the next replica in the key's own order that has room; ``share`` is its
weight over the weights of the replicas in the ring (1/N when all weigh the same). Nothing
is remembered between requests, so a key is back on its own replica as soon as that replica
has room again, and with the same loads every balancer makes the same choice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from fractions import Fraction

from ._hashing import HashScheme
from ._maglev import MaglevTable
from ._ring import HashRing, Probing, members_of

Ring = HashRing | MaglevTable


def build_ring(
    scheme: HashScheme,
    replicas: Iterable[int] | Mapping[int, float],
    probing: Probing = "linear",
) -> Ring:
    """The routing structure of ``scheme`` over ``replicas`` (slots, or slot -> weight)."""
    if scheme.is_ring:
        return HashRing(scheme, replicas, probing)
    return MaglevTable(scheme, replicas, probing)


def exact(number: float) -> Fraction:
    """``number`` as the decimal it was written as (1.1 is 11/10, not the nearest double):
    every balancer then computes the same caps from the same configuration."""
    return Fraction(Decimal(repr(number)))


class LoadBound:
    """The bounded-load caps of one ring's members under one ``factor`` (>= 1)."""

    __slots__ = ("caps", "factor")

    def __init__(self, factor: float, replicas: Iterable[int] | Mapping[int, float]) -> None:
        if not factor >= 1:
            raise ValueError(f"balance factor must be at least 1, not {factor}")
        self.factor = factor
        members = members_of(replicas)
        c = exact(factor)
        total = sum(members.values())
        #: slot -> (num, den): a replica has room iff in_flight x den < num x (total + 1),
        #: i.e. in_flight + 1 <= ceil(factor x (total + 1) x share), in integers only.
        self.caps: dict[int, tuple[int, int]] = {
            slot: (c.numerator * units, c.denominator * total) for slot, units in members.items()
        }

    def cap(self, slot: int, total: int) -> int:
        """Most requests ``slot`` may have in flight, ``total`` being in flight in all before
        the one being placed: ceil(factor x (total + 1) x share)."""
        num, den = self.caps[slot]
        return -(-num * (total + 1) // den)

    def has_room(self, slot: int, in_flight: int, total: int) -> bool:
        """True when one more request keeps ``slot`` within its cap."""
        num, den = self.caps[slot]
        return in_flight * den < num * (total + 1)
