"""Bounded loads, pure: the cap of each replica for given loads, in exact arithmetic."""

from __future__ import annotations

import math

import pytest

from lbproxy import HashRing, LoadBound, MaglevTable, build_ring, make_scheme
from lbproxy._routing import exact


@pytest.mark.parametrize(
    ("factor", "total", "cap"),
    [
        (1.25, 0, 1),  # ceil(1.25 x 1 / 3)
        (1.25, 2, 2),  # ceil(3.75 / 3)
        (1.25, 11, 5),  # ceil(15 / 3) = 5 exactly
        (1.25, 63, 27),  # 64 in flight with this one: ceil(26.67)
        (1.0, 2, 1),
        (1.0, 3, 2),  # ceil(4 / 3)
        (1.5, 5, 3),
        (2.0, 99, 67),
    ],
)
def test_cap_is_ceil_factor_times_total_plus_one_over_n(
    factor: float, total: int, cap: int
) -> None:
    bound = LoadBound(factor, [1, 2, 3])
    for slot in (1, 2, 3):
        assert bound.cap(slot, total) == cap
        # Room while one more stays within the cap.
        assert bound.has_room(slot, cap - 1, total)
        assert not bound.has_room(slot, cap, total)
        assert not bound.has_room(slot, cap + 5, total)


def test_caps_are_computed_from_the_decimal_as_written() -> None:
    # 1.1 x 90 / 3 is 33 exactly; in floating point it is 33.00000000000001, whose ceiling
    # would let a replica take a 34th request. Every balancer must agree on 33.
    assert math.ceil(1.1 * 90 / 3) == 34
    bound = LoadBound(1.1, [1, 2, 3])
    assert bound.cap(1, 89) == 33
    assert bound.has_room(1, 32, 89) and not bound.has_room(1, 33, 89)
    assert exact(1.1) == exact(1.1000) and exact(1.1).denominator == 10


def test_caps_follow_the_weights() -> None:
    bound = LoadBound(1.0, {1: 2.0, 2: 1.0, 3: 1.0})
    # 100 in flight with this one: shares 1/2, 1/4, 1/4.
    assert [bound.cap(s, 99) for s in (1, 2, 3)] == [50, 25, 25]
    bound = LoadBound(1.5, {7: 0.5, 9: 1.5})
    assert [bound.cap(s, 39) for s in (7, 9)] == [15, 45]


def test_caps_never_leave_a_replica_without_room_when_idle() -> None:
    # With nothing in flight every replica has room for one, whatever its weight.
    bound = LoadBound(1.0, {s: 0.01 if s == 1 else 1.0 for s in range(1, 65)})
    assert all(bound.has_room(s, 0, 0) for s in range(1, 65))


def test_some_replica_always_has_room() -> None:
    # The caps add up to at least factor x (total + 1) > total: with the loads any split
    # of the total, one replica at least can take the next request.
    bound = LoadBound(1.0, [1, 2, 3, 4])
    for total in range(0, 40):
        for first in range(total + 1):
            rest = total - first
            loads = [first, rest // 3, rest // 3, rest - 2 * (rest // 3)]
            assert any(bound.has_room(s, n, total) for s, n in zip(range(1, 5), loads, strict=True))


@pytest.mark.parametrize("factor", [0.99, 0.0, -1.0, float("nan")])
def test_factor_below_one_is_refused(factor: float) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LoadBound(factor, [1, 2])


def test_build_ring_builds_the_schemes_structure() -> None:
    assert isinstance(build_ring(make_scheme("default"), [1]), MaglevTable)
    assert isinstance(build_ring(make_scheme("ring", virtual_nodes=8), [1]), HashRing)
    assert isinstance(build_ring(make_scheme("assignment"), [1], "quadratic"), HashRing)
