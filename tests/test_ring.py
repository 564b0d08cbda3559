"""The consistent-hash rings (ring, assignment, modulo): placement, lookup, balance, movement."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from functools import cache

import pytest
import xxhash

from lbproxy._hashing import HashScheme, make_scheme
from lbproxy._ring import MAX_REPLICA_SLOT, HashRing, RingFullError

ASSIGNMENT = make_scheme("assignment")
RING = make_scheme("ring")
SEED = 20240601


def assignment_ids() -> list[str]:
    """The contract's simulation (docs/api.md): 10,000 six-digit ids from random.Random(0)."""
    rng = random.Random(0)
    return [str(rng.randint(100000, 999999)) for _ in range(10_000)]


@cache
def request_ids(seed: int = SEED, n: int = 10_000) -> tuple[str, ...]:
    rng = random.Random(seed)
    return tuple(str(rng.randint(100000, 999999)) for _ in range(n))


@cache
def xxh3_ring(*replicas: int) -> HashRing:
    return HashRing(RING, replicas)


def owners(ring: HashRing, keys: tuple[str, ...] | list[str]) -> list[int | None]:
    return [ring.lookup(k) for k in keys]


def phi(i: int, j: int) -> int:
    return i * i + j * j + 2 * j + 25


def expected_placement(replicas: list[int], m: int, k: int, probing: str) -> set[tuple[int, int]]:
    """Phi(i, j) mod m with probing, in (slot, virtual node) order, written from the formula."""
    taken: dict[int, int] = {}
    for i in sorted(replicas):
        for j in range(k):
            start = p = phi(i, j) % m
            step = 0
            while p in taken:
                step += 1
                if probing == "quadratic" and step <= m:
                    p = (start + step * (step + 1) // 2) % m
                else:
                    p = (p + 1) % m
            taken[p] = i
    return set(taken.items())


# --- the assignment's ring ----------------------------------------------------------------------


def test_assignment_ring_reproduces_spec_simulation() -> None:
    ring = HashRing(ASSIGNMENT, [1, 2, 3])
    counts = Counter(owners(ring, assignment_ids()))
    assert dict(counts) == {1: 8370, 2: 511, 3: 1119}


def test_assignment_vnodes_are_phi_mod_512_with_linear_probing() -> None:
    ring = HashRing(ASSIGNMENT, [1, 2, 3])
    vnodes = ring.vnodes()
    assert len(vnodes) == 27
    assert set(vnodes) == expected_placement([1, 2, 3], 512, 9, "linear")
    # Clockwise order, one node per slot.
    positions = [p for p, _ in vnodes]
    assert positions == sorted(positions)
    assert len(set(positions)) == 27
    assert Counter(r for _, r in vnodes) == {1: 9, 2: 9, 3: 9}


def test_assignment_collisions_probe_to_the_next_free_slot() -> None:
    ring = dict(HashRing(ASSIGNMENT, [1, 2, 3]).vnodes())
    # Phi(1, 1) = 29 = Phi(2, 0): replica 1 comes first, so replica 2's node moves to 30.
    assert ring[29] == 1
    assert ring[30] == 2
    # Phi(1, 2) = 34 = Phi(3, 0): replica 3's node moves to 35.
    assert ring[34] == 1
    assert ring[35] == 3
    # Phi(2, 2) = 37 = Phi(3, 1): replica 3's node moves to 38.
    assert ring[37] == 2
    assert ring[38] == 3
    # All of it in a narrow arc: the reason the assignment's hash balances badly.
    assert max(ring) < 128


def test_assignment_quadratic_probing_matches_formula() -> None:
    replicas = list(range(1, 20))
    ring = HashRing(ASSIGNMENT, replicas, probing="quadratic")
    assert set(ring.vnodes()) == expected_placement(replicas, 512, 9, "quadratic")
    linear = HashRing(ASSIGNMENT, replicas, probing="linear")
    assert set(linear.vnodes()) == expected_placement(replicas, 512, 9, "linear")
    # With this many collisions, the two probing rules end up placing nodes differently.
    assert set(ring.vnodes()) != set(linear.vnodes())


def test_ring_with_modulo_scheme_places_vnodes_like_assignment() -> None:
    ring = HashRing(make_scheme("modulo"), [1, 2, 3])
    assert set(ring.vnodes()) == expected_placement([1, 2, 3], 512, 9, "linear")
    # H(i) = i: request 478 sits on slot 478, past every virtual node, so it wraps to slot 26.
    assert ring.lookup("132574") == ring.owner_at(0) == 1


# --- lookup -------------------------------------------------------------------------------------

# One virtual node per replica on the modulo scheme: replica i sits on Phi(i, 0) = i^2 + 25,
# and a decimal key k sits on k mod 512. So 1 -> 26, 2 -> 29, 3 -> 34.
ONE_NODE = make_scheme("modulo", slots=512, virtual_nodes=1)


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        ("0", 1),
        ("25", 1),
        ("26", 1),  # exactly on a virtual node: that node (inclusive)
        ("27", 2),
        ("29", 2),
        ("30", 3),
        ("34", 3),
        ("35", 1),  # past the last node: wraps around to the first
        ("511", 1),
        ("512", 1),  # 512 mod 512 = 0
        ("541", 2),  # 541 mod 512 = 29
    ],
)
def test_lookup_is_first_vnode_clockwise_inclusive(key: str, owner: int) -> None:
    ring = HashRing(ONE_NODE, [1, 2, 3])
    assert ring.vnodes() == [(26, 1), (29, 2), (34, 3)]
    assert ring.lookup(key) == owner


def test_owner_at_positions() -> None:
    ring = HashRing(ONE_NODE, [1, 2, 3])
    assert [ring.owner_at(p) for p in (0, 26, 27, 29, 33, 34, 35, 511)] == [1, 1, 2, 2, 3, 3, 1, 1]


def test_single_replica_owns_everything() -> None:
    ring = HashRing(ASSIGNMENT, [7])
    assert {ring.lookup(k) for k in request_ids()[:500]} == {7}
    assert ring.shares() == {7: 1.0}
    assert list(ring.walk("123456")) == [7]


# --- walk ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "order"),
    [("0", [1, 2, 3]), ("27", [2, 3, 1]), ("30", [3, 1, 2]), ("34", [3, 1, 2]), ("35", [1, 2, 3])],
)
def test_walk_goes_clockwise(key: str, order: list[int]) -> None:
    ring = HashRing(ONE_NODE, [1, 2, 3])
    assert list(ring.walk(key)) == order


@pytest.mark.parametrize(
    "ring",
    [
        HashRing(ASSIGNMENT, [1, 2, 3]),
        HashRing(ASSIGNMENT, range(10, 40), probing="quadratic"),
        HashRing(make_scheme("ring", virtual_nodes=64), range(1, 9)),
    ],
    ids=["assignment", "assignment-quadratic", "ring"],
)
def test_walk_yields_every_replica_once_starting_at_lookup(ring: HashRing) -> None:
    for key in [*request_ids()[:300], "alice", "", "/home"]:
        walked = list(ring.walk(key))
        assert walked[0] == ring.lookup(key)
        assert len(walked) == len(ring.replicas)
        assert set(walked) == set(ring.replicas)


def test_empty_ring() -> None:
    for scheme in (ASSIGNMENT, RING):
        ring = HashRing(scheme, [])
        assert ring.lookup("123456") is None
        assert ring.owner_at(0) is None
        assert list(ring.walk("123456")) == []
        assert len(ring) == 0
        assert not ring
        assert ring.vnodes() == []
        assert ring.shares() == {}


# --- balance of the ring scheme -----------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_ring_balances_random_ids(n: int) -> None:
    counts = Counter(owners(xxh3_ring(*range(1, n + 1)), request_ids()))
    assert set(counts) == set(range(1, n + 1))
    mean = 10_000 / n
    # Measured with SEED: max/mean = 1.009, 1.011, 1.011, 1.018 for N = 3..6.
    assert max(counts.values()) / mean <= 1.05
    assert min(counts.values()) / mean >= 0.95


@pytest.mark.parametrize("n", range(2, 11))
def test_ring_ring_shares_within_2_percent(n: int) -> None:
    shares = xxh3_ring(*range(1, n + 1)).shares()
    assert set(shares) == set(range(1, n + 1))
    assert sum(shares.values()) == pytest.approx(1.0)
    # Measured: worst relative deviation 1.3% (N = 3 and 8).
    for share in shares.values():
        assert abs(share - 1 / n) <= 0.02 / n


def test_assignment_shares_are_badly_unbalanced() -> None:
    shares = HashRing(ASSIGNMENT, [1, 2, 3]).shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert max(shares.values()) > 0.75


def test_shares_are_arc_lengths() -> None:
    shares = HashRing(ONE_NODE, [1, 2, 3]).shares()
    # Node 1 at 26 owns (34, 512) + [0, 26]: 512 - 34 + 26 = 504 slots; 2 owns 3; 3 owns 5.
    assert shares == {1: pytest.approx(504 / 512), 2: pytest.approx(3 / 512), 3: 5 / 512}


def test_ring_vnodes_are_xxh3_positions() -> None:
    scheme = make_scheme("ring", virtual_nodes=64)
    ring = HashRing(scheme, [4, 9])
    expected = sorted(
        (xxhash.xxh3_64_intdigest(b"%d:%d" % (r, j)), r) for r in (4, 9) for j in range(64)
    )
    assert ring.vnodes() == expected


# --- minimal movement ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_adding_a_replica_moves_only_keys_to_it(n: int) -> None:
    keys = request_ids()
    before = owners(xxh3_ring(*range(1, n + 1)), keys)
    after = owners(xxh3_ring(*range(1, n + 2)), keys)
    moved = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    to_new = [i for i, b in enumerate(after) if b == n + 1]
    assert moved == to_new
    fraction = len(moved) / len(keys)
    # Measured: 0.2468, 0.2022, 0.1640, 0.1376 for N = 3..6 (1/(N+1) = .25, .2, .167, .143).
    assert abs(fraction - 1 / (n + 1)) <= 0.1 / (n + 1)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
@pytest.mark.parametrize("removed", ["first", "middle", "last"])
def test_removing_a_replica_moves_only_its_keys(n: int, removed: str) -> None:
    gone = {"first": 1, "middle": 2, "last": n}[removed]
    keys = request_ids()
    full = list(range(1, n + 1))
    before = owners(xxh3_ring(*full), keys)
    after = owners(xxh3_ring(*[r for r in full if r != gone]), keys)
    assert gone in before
    for a, b in zip(before, after, strict=True):
        if a == gone:
            assert b != gone
        else:
            assert b == a


def test_ring_rebuilt_with_same_slots_maps_keys_the_same() -> None:
    keys = request_ids()
    for scheme, probing in ((RING, "linear"), (ASSIGNMENT, "linear"), (ASSIGNMENT, "quadratic")):
        original = HashRing(scheme, [1, 2, 3, 4], probing)  # type: ignore[arg-type]
        shrunk = HashRing(scheme, original.replicas - {2}, probing)  # type: ignore[arg-type]
        regrown = HashRing(scheme, shrunk.replicas | {2}, probing)  # type: ignore[arg-type]
        assert regrown.vnodes() == original.vnodes()
        assert owners(regrown, keys) == owners(original, keys)
        assert owners(shrunk, keys) != owners(original, keys)


# --- probing, capacity, slot range --------------------------------------------------------------


@pytest.mark.parametrize("probing", ["linear", "quadratic"])
@pytest.mark.parametrize(("slots", "k", "n"), [(64, 8, 8), (512, 9, 56), (60, 6, 10), (100, 3, 20)])
def test_probing_places_every_vnode_on_a_distinct_slot(
    probing: str, slots: int, k: int, n: int
) -> None:
    scheme = make_scheme("assignment", slots=slots, virtual_nodes=k)
    ring = HashRing(scheme, range(n), probing)  # type: ignore[arg-type]
    positions = [p for p, _ in ring.vnodes()]
    assert len(ring) == n * k
    assert len(set(positions)) == n * k
    assert all(0 <= p < slots for p in positions)
    assert Counter(r for _, r in ring.vnodes()) == dict.fromkeys(range(n), k)
    assert set(ring.vnodes()) == expected_placement(list(range(n)), slots, k, probing)


def test_large_ring_collisions_fall_back_to_probing() -> None:
    # 2^21 slots is above the probing-by-default size; 8000 nodes there collide (birthday).
    scheme = make_scheme("ring", slots=1 << 21, virtual_nodes=2000)
    wanted = [scheme.vnode_position(r, j) for r in range(4) for j in range(2000)]
    assert len(set(wanted)) < len(wanted)
    ring = HashRing(scheme, range(4))
    positions = [p for p, _ in ring.vnodes()]
    assert len(positions) == len(set(positions)) == 8000
    assert Counter(r for _, r in ring.vnodes()) == dict.fromkeys(range(4), 2000)


def test_ring_full_error() -> None:
    HashRing(ASSIGNMENT, range(56))  # 504 nodes fit in 512
    with pytest.raises(RingFullError, match="do not fit in 512 slots"):
        HashRing(ASSIGNMENT, range(57))  # 513 do not
    with pytest.raises(ValueError):
        HashRing(HashScheme("assignment", 10, 5), [1, 2, 3])
    HashRing(HashScheme("assignment", 10, 5), [1, 2])  # exactly full


@pytest.mark.parametrize("slot", [-1, MAX_REPLICA_SLOT + 1, 1 << 20])
def test_replica_slot_out_of_range(slot: int) -> None:
    assert MAX_REPLICA_SLOT == 65535
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        HashRing(ONE_NODE, [1, slot])


def test_replica_slot_bounds_are_accepted() -> None:
    ring = HashRing(make_scheme("ring", virtual_nodes=8), [0, MAX_REPLICA_SLOT])
    assert ring.replicas == {0, MAX_REPLICA_SLOT}
    assert {r for _, r in ring.vnodes()} == {0, MAX_REPLICA_SLOT}


# --- order independence -------------------------------------------------------------------------


@pytest.mark.parametrize("probing", ["linear", "quadratic"])
@pytest.mark.parametrize(
    "scheme", [ASSIGNMENT, make_scheme("ring", virtual_nodes=256)], ids=["assignment", "ring"]
)
def test_construction_is_order_independent(scheme: HashScheme, probing: str) -> None:
    a = HashRing(scheme, [3, 1, 2], probing)  # type: ignore[arg-type]
    b = HashRing(scheme, [1, 2, 3], probing)  # type: ignore[arg-type]
    c = HashRing(scheme, iter([2, 3, 1, 3]), probing)  # type: ignore[arg-type]
    assert a.vnodes() == b.vnodes() == c.vnodes()
    assert a.replicas == b.replicas == c.replicas == frozenset({1, 2, 3})
    keys = request_ids()[:1000]
    assert owners(a, keys) == owners(b, keys) == owners(c, keys)


@pytest.mark.parametrize("probing", ["linear", "quadratic"])
def test_placement_order_is_by_slot_number_not_set_order(probing: str) -> None:
    # Slot numbers whose set iteration order is not sorted, and whose nodes collide, so the
    # placement depends on the order the ring processes them in: it must be slot order.
    slots = [1000, 8, 300, 65535, 16, 24, 40]
    assert list(frozenset(slots)) != sorted(slots)
    for order in (slots, sorted(slots), sorted(slots, reverse=True)):
        ring = HashRing(ASSIGNMENT, order, probing)  # type: ignore[arg-type]
        assert set(ring.vnodes()) == expected_placement(slots, 512, 9, probing)


def test_many_replicas_assignment_order_independent() -> None:
    order = list(range(40, 0, -1))
    random.Random(3).shuffle(order)
    assert HashRing(ASSIGNMENT, order).vnodes() == HashRing(ASSIGNMENT, range(1, 41)).vnodes()


@pytest.mark.parametrize(
    ("scheme", "members"),
    [
        (RING, [1, 2, 3]),
        (make_scheme("ring", slots=1000, virtual_nodes=50), [1, 5]),
        (ASSIGNMENT, [1, 2, 3]),
        (make_scheme("modulo", slots=7, virtual_nodes=2), [4]),
    ],
)
def test_bucketed_search_matches_bisecting_the_whole_ring(
    scheme: HashScheme, members: list[int]
) -> None:
    ring = HashRing(scheme, members)
    positions = [p for p, _ in ring.vnodes()]
    rng = random.Random(SEED)
    probes = [0, scheme.slots - 1, *(rng.randrange(scheme.slots) for _ in range(2000))]
    probes += [q for p in positions[:2000] for q in (p - 1, p, p + 1) if 0 <= q < scheme.slots]
    for position in probes:
        assert ring._index_of(position) == bisect_left(positions, position), position
    for key in (str(rng.randint(100_000, 999_999)) for _ in range(500)):
        assert ring.lookup(key) == ring.owner_at(scheme.key_position(key))


@pytest.mark.parametrize("function", ["ring", "assignment"])
def test_a_pickled_ring_is_the_same_ring_without_being_placed_again(function: str) -> None:
    """What a worker process gets (``workers: N``), compiled or not."""
    import pickle

    ring = HashRing(make_scheme(function), {1: 1.0, 2: 0.5, 3: 2.0})
    copy = pickle.loads(pickle.dumps(ring, pickle.HIGHEST_PROTOCOL))
    assert type(copy) is HashRing
    assert copy.weights == ring.weights and copy.scheme == ring.scheme
    assert len(copy) == len(ring)
    for key in (str(k) for k in range(100000, 101000)):
        assert copy.lookup(key) == ring.lookup(key)
        assert list(copy.walk(key)) == list(ring.walk(key))
