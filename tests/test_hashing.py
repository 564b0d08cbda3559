"""The hash schemes: the assignment's H and Phi, the seed's modulo variant, the xxh3 ring and
the default's table."""

from __future__ import annotations

import dataclasses

import pytest
import xxhash

from lbproxy._hashing import (
    ASSIGNMENT_SLOTS,
    ASSIGNMENT_VIRTUAL_NODES,
    DEFAULT_TABLE_SIZE,
    HASH_NAMES,
    MAX_TABLE_SIZE,
    RING_SLOTS,
    RING_VIRTUAL_NODES,
    HashScheme,
    assignment_h,
    assignment_phi,
    key_to_int,
    make_scheme,
    modulo_h,
)

# --- the assignment's formulas ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("i", "expected"),
    [(0, 17), (1, 20), (2, 25), (3, 32), (10, 137), (132574, 132574**2 + 2 * 132574 + 17)],
)
def test_assignment_h_values(i: int, expected: int) -> None:
    assert assignment_h(i) == expected


@pytest.mark.parametrize(
    ("i", "j", "expected"),
    [
        (0, 0, 25),
        (1, 0, 26),
        (0, 1, 28),
        (1, 1, 29),
        (2, 3, 44),
        (3, 8, 114),
        (5, 5, 85),
    ],
)
def test_assignment_phi_values(i: int, j: int, expected: int) -> None:
    assert assignment_phi(i, j) == expected


def test_modulo_h_is_identity() -> None:
    assert modulo_h(0) == 0
    assert modulo_h(132574) == 132574


def test_assignment_defaults_are_m512_k9() -> None:
    s = make_scheme("assignment")
    assert (s.name, s.slots, s.virtual_nodes) == ("assignment", 512, 9)
    assert ASSIGNMENT_SLOTS == 512
    assert ASSIGNMENT_VIRTUAL_NODES == 9


def test_assignment_key_position_is_h_mod_512() -> None:
    s = make_scheme("assignment")
    # 132574 = 258 * 512 + 478; (478^2 + 2*478 + 17) mod 512 = (132 + 444 + 17) mod 512 = 81.
    assert s.key_position("132574") == 81
    assert s.key_position("0") == 17
    assert s.key_position("1") == 20
    for rid in (100000, 123456, 999999, 511, 512, 513):
        assert s.key_position(str(rid)) == (rid * rid + 2 * rid + 17) % 512


def test_assignment_vnode_position_is_phi_mod_512() -> None:
    s = make_scheme("assignment")
    assert s.vnode_position(0, 0) == 25
    assert s.vnode_position(2, 3) == 44
    # Phi(30, 8) = 900 + 64 + 16 + 25 = 1005; 1005 mod 512 = 493.
    assert s.vnode_position(30, 8) == 493
    for i in range(0, 40, 7):
        for j in range(9):
            assert s.vnode_position(i, j) == (i * i + j * j + 2 * j + 25) % 512


def test_modulo_key_position_is_key_mod_512() -> None:
    s = make_scheme("modulo")
    assert (s.slots, s.virtual_nodes) == (512, 9)
    assert s.key_position("132574") == 132574 % 512 == 478
    assert s.key_position("511") == 511
    assert s.key_position("512") == 0
    assert s.key_position("0") == 0


def test_modulo_vnodes_use_phi() -> None:
    s = make_scheme("modulo")
    assert s.vnode_position(2, 3) == 44
    assert s.vnode_position(1, 0) == 26


def test_positions_respect_custom_slot_count() -> None:
    s = make_scheme("assignment", slots=64)
    assert s.virtual_nodes == 6
    assert s.key_position("132574") == (132574**2 + 2 * 132574 + 17) % 64
    assert s.vnode_position(2, 3) == 44
    assert s.vnode_position(7, 5) == (49 + 25 + 10 + 25) % 64


# --- key_to_int ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("132574", 132574), ("0", 0), ("007", 7)])
def test_key_to_int_decimal_keys_are_used_as_is(key: str, value: int) -> None:
    assert key_to_int(key) == value


@pytest.mark.parametrize(
    "key",
    ["abc", "", "-5", "1.5", " 12", "user@example.com", "\u0661\u0662\u0663", "\u00b2", "\ud800"],
)
def test_key_to_int_other_keys_are_hashed(key: str) -> None:
    value = key_to_int(key)
    assert 0 <= value < 1 << 64
    assert value == key_to_int(key)  # stable
    assert value == xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass"))


def test_key_to_int_distinguishes_keys() -> None:
    values = {key_to_int(f"user-{i}") for i in range(1000)}
    assert len(values) == 1000


def test_non_ascii_digits_are_not_parsed_as_numbers() -> None:
    # Arabic-Indic "123" is str.isdigit() but must not be read as the number 123.
    assert key_to_int("\u0661\u0662\u0663") != 123


def test_non_decimal_key_on_assignment_scheme_is_h_of_hash() -> None:
    s = make_scheme("assignment")
    n = key_to_int("alice")
    assert s.key_position("alice") == (n * n + 2 * n + 17) % 512
    assert 0 <= s.key_position("alice") < 512


# --- the ring scheme (the default before the Maglev table) ------------------------------------


def test_ring_scheme_defaults() -> None:
    s = make_scheme("ring")
    assert (s.name, s.slots, s.virtual_nodes) == ("ring", 1 << 64, 16384)
    assert RING_SLOTS == 1 << 64
    assert RING_VIRTUAL_NODES == 16384
    assert s.is_ring


def test_ring_positions_within_64_bit_space() -> None:
    s = make_scheme("ring")
    positions = [s.key_position(str(k)) for k in range(2000)]
    positions += [s.key_position(k) for k in ("", "alice", "/home", "\u00e9t\u00e9", "\ud800")]
    assert all(0 <= p < 1 << 64 for p in positions)
    # A 64-bit hash spreads these over the whole space, not a narrow corner.
    assert min(positions) < 1 << 60
    assert max(positions) > (1 << 64) - (1 << 60)
    assert len(set(positions)) == len(positions)
    vnodes = [s.vnode_position(r, j) for r in range(4) for j in range(500)]
    assert all(0 <= p < 1 << 64 for p in vnodes)
    assert len(set(vnodes)) == len(vnodes)


def test_ring_positions_are_xxh3() -> None:
    s = make_scheme("ring")
    assert s.key_position("132574") == xxhash.xxh3_64_intdigest(b"132574")
    assert s.vnode_position(3, 17) == xxhash.xxh3_64_intdigest(b"3:17")
    small = make_scheme("ring", slots=1000, virtual_nodes=4)
    assert small.key_position("abc") == xxhash.xxh3_64_intdigest(b"abc") % 1000
    assert small.vnode_position(2, 1) == xxhash.xxh3_64_intdigest(b"2:1") % 1000


def test_positions_are_stable_across_schemes_with_same_params() -> None:
    for name in HASH_NAMES:
        a = make_scheme(name)
        b = make_scheme(name)
        assert a == b
        assert hash(a) == hash(b)
        assert a.key_position("xyz") == b.key_position("xyz")


# --- the default: a Maglev table ---------------------------------------------------------------


def test_default_scheme_is_a_table_of_16411_entries() -> None:
    s = make_scheme("default")
    assert (s.name, s.slots, s.virtual_nodes) == ("default", 16411, 1)
    assert DEFAULT_TABLE_SIZE == 16411
    assert not s.is_ring
    assert make_scheme("default", slots=65537) == HashScheme("default", 65537, 1)


def test_default_key_position_is_xxh3_mod_table_size() -> None:
    s = make_scheme("default")
    assert s.key_position("132574") == xxhash.xxh3_64_intdigest(b"132574") % 16411
    assert s.key_position("\ud800") == xxhash.xxh3_64_intdigest(b"\xed\xa0\x80") % 16411
    positions = {s.key_position(str(k)) for k in range(300_000)}
    # 300,000 keys reach every entry of the table (about 18 each on average).
    assert positions == set(range(16411))


def test_default_has_no_virtual_nodes() -> None:
    with pytest.raises(ValueError, match="virtual_nodes applies to the ring schemes"):
        make_scheme("default", virtual_nodes=100)
    with pytest.raises(ValueError, match="no virtual nodes"):
        make_scheme("default").vnode_position(1, 0)


@pytest.mark.parametrize("slots", [0, 1, MAX_TABLE_SIZE + 1, 1 << 64])
def test_default_table_size_is_bounded(slots: int) -> None:
    with pytest.raises(ValueError, match=r"table size must be 2\.\.1048576"):
        make_scheme("default", slots=slots)


# --- make_scheme --------------------------------------------------------------------------------


def test_make_scheme_returns_named_scheme_for_every_name() -> None:
    assert HASH_NAMES == ("default", "ring", "assignment", "modulo")
    for name in HASH_NAMES:
        s = make_scheme(name)
        assert isinstance(s, HashScheme)
        assert s.name == name


@pytest.mark.parametrize(
    ("slots", "k"), [(512, 9), (1024, 10), (64, 6), (1000, 9), (2, 1), (1, 1), (3, 1)]
)
def test_assignment_k_is_log2_m_when_only_slots_given(slots: int, k: int) -> None:
    s = make_scheme("assignment", slots=slots)
    assert (s.slots, s.virtual_nodes) == (slots, k)
    m = make_scheme("modulo", slots=slots)
    assert (m.slots, m.virtual_nodes) == (slots, k)


def test_make_scheme_overrides() -> None:
    assert make_scheme("assignment", virtual_nodes=3) == HashScheme("assignment", 512, 3)
    assert make_scheme("assignment", 2048, 5) == HashScheme("assignment", 2048, 5)
    assert make_scheme("ring", slots=4096) == HashScheme("ring", 4096, 16384)
    assert make_scheme("ring", virtual_nodes=100) == HashScheme("ring", 1 << 64, 100)


@pytest.mark.parametrize("name", ["", "md5", "Default", "ASSIGNMENT", None])
def test_make_scheme_rejects_unknown_name(name: object) -> None:
    with pytest.raises(ValueError, match="unknown hash function"):
        make_scheme(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "slots", "k"),
    [("ring", 0, None), ("ring", None, 0), ("assignment", 0, None), ("modulo", 512, -1)],
)
def test_make_scheme_rejects_non_positive_sizes(
    name: str, slots: int | None, k: int | None
) -> None:
    with pytest.raises(ValueError, match="positive"):
        make_scheme(name, slots, k)  # type: ignore[arg-type]


def test_scheme_is_frozen() -> None:
    s = make_scheme("assignment")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.slots = 1024  # type: ignore[misc]
