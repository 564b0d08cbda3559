"""The pool's routing: a key's replica and its order, weights, and bounded loads for given loads.

The pool is pure state (no I/O): replicas are marked up and given requests in flight through
the same ``begin``/``end`` calls the data path makes.
"""

from __future__ import annotations

import random

import pytest

from lbproxy import build_ring, make_scheme
from lbproxy._pool import Pool, Replica, State

DEFAULT = make_scheme("default")


async def pool_of(
    n: int = 3, factor: float | None = None, weights: dict[str, float] | None = None
) -> Pool:
    pool = Pool(DEFAULT, balance_factor=factor, weight_of=lambda h: (weights or {}).get(h, 1.0))
    for slot in range(1, n + 1):
        pool.add(slot, f"server-{slot}").state = State.UP
    await pool.refresh_ring()
    return pool


def keys(n: int = 2000, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [str(rng.randint(100_000, 999_999)) for _ in range(n)]


def load(replica: Replica, n: int) -> None:
    for _ in range(n):
        replica.begin()


def set_loads(pool: Pool, loads: dict[int, int]) -> None:
    """Requests in flight per slot, reached through begin() and end() as the data path does."""
    for slot, n in loads.items():
        r = pool.replicas[slot]
        while r.in_flight < n:
            r.begin()
        while r.in_flight > n:
            r.finish()


def a_key_of(pool: Pool, slot: int) -> tuple[str, list[int]]:
    for k in keys():
        order = list(pool.ring.walk(k))
        if order[0] == slot:
            return k, order
    raise AssertionError(f"no key for slot {slot}")


async def test_pick_and_route_follow_the_ring_when_bounded_loads_are_off() -> None:
    pool = await pool_of(3)
    assert pool.bound is None
    load(pool.replicas[1], 500)  # however loaded, a replica keeps its keys
    for k in keys(500):
        order = list(pool.ring.walk(k))
        assert pool.pick(k) is pool.replicas[order[0]]
        assert [r.slot for r in pool.route(k)] == order


async def test_a_replica_at_its_cap_passes_the_key_to_the_next_in_its_order() -> None:
    pool = await pool_of(3, factor=1.25)
    assert pool.bound is not None
    key, order = a_key_of(pool, 1)
    home, second, third = order

    def chosen() -> tuple[int | None, list[int]]:
        picked = pool.pick(key)
        return picked and picked.slot, [r.slot for r in pool.route(key)]

    # cap = ceil(1.25 x (total + 1) / 3), total = all in flight before this request.
    set_loads(pool, {home: 3, second: 2, third: 2})  # total 7: cap ceil(10 / 3) = 4
    assert pool.bound.cap(home, 7) == 4
    assert chosen() == (home, order)
    set_loads(pool, {home: 4})  # total 8: cap ceil(11.25 / 3) = 4, the home is full
    assert chosen() == (second, [second, third, home])
    set_loads(pool, {home: 5, second: 5, third: 0})  # total 10: cap 5; home and second full
    assert chosen() == (third, [third, home, second])


async def test_keys_return_home_as_soon_as_it_has_room() -> None:
    pool = await pool_of(3, factor=1.0)
    key, order = a_key_of(pool, 2)
    home, second, third = order
    set_loads(pool, {home: 6, second: 3, third: 3})  # total 12: cap ceil(13 / 3) = 5
    assert pool.pick(key) is pool.replicas[second]
    set_loads(pool, {home: 4})  # total 10: cap ceil(11 / 3) = 4, still full
    assert pool.pick(key) is pool.replicas[second]
    set_loads(pool, {home: 3})  # total 9: cap ceil(10 / 3) = 4: back home, nothing remembered
    assert pool.pick(key) is pool.replicas[home]


async def test_keys_stay_home_while_nothing_is_overloaded() -> None:
    # Uniform traffic: every replica about as loaded as the others, none at its cap.
    pool = await pool_of(4, factor=1.25)
    set_loads(pool, dict.fromkeys(range(1, 5), 10))  # cap ceil(1.25 x 41 / 4) = 13
    plain = build_ring(DEFAULT, [1, 2, 3, 4])
    for k in keys():
        replica = pool.pick(k)
        assert replica is not None and replica.slot == plain.lookup(k)
        assert next(pool.route(k)) is replica


async def test_when_no_replica_has_room_the_key_keeps_its_order() -> None:
    # Only while the ring lags behind who is up: a replica just gone down is still in it.
    pool = await pool_of(3, factor=1.0)
    key, order = a_key_of(pool, 3)
    pool.replicas[order[2]].state = State.DOWN
    set_loads(pool, {order[0]: 10, order[1]: 10})  # cap ceil(21 / 3) = 7: both full
    assert [r.slot for r in pool.route(key)] == order[:2]
    assert pool.pick(key) is pool.replicas[3]


async def test_a_replica_not_up_is_skipped_and_pick_leaves_it_to_route() -> None:
    pool = await pool_of(3, factor=1.5)
    key, order = a_key_of(pool, 1)
    pool.replicas[1].state = State.DOWN  # the ring is rebuilt a moment later
    assert pool.pick(key) is None
    assert [r.slot for r in pool.route(key)] == order[1:]


async def test_the_total_counts_every_replicas_requests_in_flight() -> None:
    pool = await pool_of(3)
    a, b = pool.replicas[1], pool.replicas[2]
    load(a, 3)
    load(b, 2)
    assert pool.load.total == 5
    gone = pool.remove(1)  # a replica leaving finishes what it has
    assert pool.load.total == 5
    gone.finish()
    b.finish()
    assert pool.load.total == 3 and a.in_flight == 2 and b.in_flight == 1


async def test_weights_set_shares_and_caps_and_stay_with_the_slot() -> None:
    pool = await pool_of(3, factor=1.0, weights={"server-1": 2.0})
    assert [r.weight for r in pool.replicas.values()] == [2.0, 1.0, 1.0]
    shares = pool.ring.shares()
    assert shares[1] == pytest.approx(0.5, abs=2 / DEFAULT.slots)
    assert pool.bound is not None and pool.bound.cap(1, 99) == 50 and pool.bound.cap(2, 99) == 25
    # A replacement in slot 1 under a new name (as the supervisor makes) keeps the weight,
    # also when the weights are reloaded.
    pool.replicas[1].hostname = "server-x1y2z3"
    await pool.configure(DEFAULT, "linear", 1.0, lambda h: 3.0 if h == "server-1" else 1.0)
    assert [r.weight for r in pool.replicas.values()] == [3.0, 1.0, 1.0]
    assert pool.ring.shares()[1] == pytest.approx(0.6, abs=2 / DEFAULT.slots)


async def test_configure_rebuilds_for_new_weights_and_factor() -> None:
    pool = await pool_of(3)
    ring = pool.ring
    await pool.configure(DEFAULT, "linear", None, lambda h: 1.0)
    assert pool.ring is ring  # nothing changed: not rebuilt
    await pool.configure(DEFAULT, "linear", 1.25, lambda h: 1.0)
    assert pool.ring is ring and pool.bound is not None and pool.bound.factor == 1.25
    await pool.configure(DEFAULT, "linear", 1.25, lambda h: 2.0 if h == "server-3" else 1.0)
    assert pool.ring is not ring
    assert pool.ring.shares()[3] == pytest.approx(0.5, abs=2 / DEFAULT.slots)
    await pool.configure(make_scheme("ring", virtual_nodes=64), "linear", None, lambda h: 1.0)
    assert pool.ring.scheme.name == "ring" and pool.bound is None
