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


async def test_a_mirror_routes_every_key_as_the_pool_it_copies() -> None:
    """What a worker process does with the supervisor's view: same replicas, same picks."""
    from lbproxy._replica_handle import ReplicaHandle

    source = await pool_of(4, factor=1.25)
    for r in source.replicas.values():
        r.handle = ReplicaHandle(r.hostname, r.slot, f"127.0.0.1:{9000 + r.slot}", "x")
    copy = Pool(DEFAULT)
    assert copy.mirror(source.members(), (source.ring, source.bound)) == []
    assert copy.ring is source.ring and copy.bound is source.bound
    assert [(r.slot, r.hostname, r.state, r.address) for r in copy.replicas.values()] == [
        (r.slot, r.hostname, r.state, r.address) for r in source.replicas.values()
    ]
    for key in keys(500):
        assert copy.pick(key).hostname == source.pick(key).hostname  # type: ignore[union-attr]
    # Counters stay with a replica kept under its name; a replacement in its slot is new.
    kept = copy.replicas[1]
    load(kept, 2)
    gone = copy.replicas[2]
    load(gone, 1)
    source.replicas[2].hostname = "server-9"
    source.replicas[2].state = State.STARTING
    source.remove(3)
    left = copy.mirror(source.members())
    assert copy.replicas[1] is kept and kept.in_flight == 2
    assert copy.replicas[2] is not gone and copy.replicas[2].hostname == "server-9"
    assert copy.replicas[2].state is State.STARTING
    assert 3 not in copy.replicas
    assert {r.hostname for r in left} == {"server-2", "server-3"}
    assert all(r.state is State.DRAINING for r in left)
    assert gone.in_flight == 1  # still finishing where it went


async def test_a_mirror_gives_up_on_a_replica_that_failed() -> None:
    source = await pool_of(3)
    copy = Pool(DEFAULT)
    copy.mirror(source.members(), (source.ring, source.bound))
    failed: list[str] = []
    copy.on_failed.append(lambda r: failed.append(r.hostname))
    source.replicas[2].state = State.DOWN
    await source.refresh_ring()
    copy.mirror(source.members(), (source.ring, source.bound))
    assert failed == ["server-2"]
    assert copy.replicas[2].state is State.DOWN
