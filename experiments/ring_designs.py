"""Ring designs compared: the vnode ring, Maglev tables and a precomputed rendezvous table.

    python -m experiments.ring_designs [--sizes 3 16 32 64] [--keys 200000] [--rounds 3]

Pure computation (no network): for each design and N, the time to build the structure (and
how long it held up an event loop that built it in a thread, as the balancer does), each
replica's share of the key space against the ideal, the keys that move when a replica is
added (slot N+1) or removed (slot 2), and what one lookup costs. A second table shows where
the keys of one replica go when it cannot take them (retries, bounded-load overflow): the
next node clockwise on the ring (HAProxy), the next entries of a Maglev table, the table
walked by a stride taken from the key (Envoy's jump seeded by the hash; lbproxy's), and the
rendezvous ranking. Prints Markdown tables; docs/ring.md explains them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import timeit
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import xxhash

from lbproxy import HashRing, MaglevTable, make_scheme
from lbproxy._hashing import key_hash
from lbproxy._ring import _packed_positions


class RendezvousTable:
    """Highest random weight (Thaler and Ravishankar), precomputed over ``size`` buckets:
    a key's bucket goes to the slot with the highest hash of (bucket, slot)."""

    def __init__(self, size: int, slots: Iterable[int]) -> None:
        self.size = size
        self.replicas = frozenset(slots)
        best = [-1] * size
        owners = [0] * size
        buckets = [b"%d" % b for b in range(size)]
        for slot in sorted(self.replicas):
            scores = [xxhash.xxh3_64_intdigest(b, seed=slot) for b in buckets]
            for b, score in enumerate(scores):
                if score > best[b]:
                    best[b], owners[b] = score, slot
        self._owners = owners

    def lookup(self, key: str) -> int | None:
        return self._owners[key_hash(key) % self.size] if self.replicas else None

    def walk(self, key: str) -> Iterator[int]:
        b = b"%d" % (key_hash(key) % self.size)
        yield from sorted(self.replicas, key=lambda s: -xxhash.xxh3_64_intdigest(b, seed=s))

    def shares(self) -> dict[int, float]:
        out = dict.fromkeys(self.replicas, 0.0)
        for o in self._owners:
            out[o] += 1 / self.size
        return out


Structure = HashRing | MaglevTable | RendezvousTable


@dataclass(frozen=True)
class Design:
    name: str
    build: Callable[[Sequence[int]], Structure]
    #: Forget what earlier builds cached (the ring caches each replica's virtual nodes).
    cold: Callable[[], None] = lambda: None


def designs() -> list[Design]:
    return [
        Design(
            "ring (16384 vnodes/replica)",
            lambda slots: HashRing(make_scheme("ring"), slots),
            _packed_positions.cache_clear,
        ),
        Design(
            "maglev 65537", lambda slots: MaglevTable(make_scheme("default", slots=65537), slots)
        ),
        Design("maglev 16411 (default)", lambda slots: MaglevTable(make_scheme("default"), slots)),
        Design("rendezvous table 65536", lambda slots: RendezvousTable(65536, slots)),
    ]


@dataclass
class Row:
    design: str
    n: int
    build_ms: float
    build_cpu_ms: float
    loop_blocked_ms: float
    share_error: float  # max |share - 1/N| / (1/N)
    add_moved: float
    add_extra: float  # moved between replicas that stayed
    rm_moved: float
    rm_extra: float
    replaced_moved: float
    lookup_ns: float


async def _build_in_thread(build: Callable[[], object]) -> tuple[float, float, float]:
    """(seconds, CPU seconds of the building thread, longest the event loop went without
    running) for a build in a thread, as ``Pool.refresh_ring`` does it. On a machine shared
    with other work the CPU seconds are the steadier figure."""
    lag = 0.0
    done = False
    cpu = 0.0

    def timed() -> None:
        nonlocal cpu
        t = time.thread_time()
        build()
        cpu = time.thread_time() - t

    async def ticker() -> None:
        nonlocal lag
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - t - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    await asyncio.to_thread(timed)
    elapsed = time.perf_counter() - t0
    done = True
    await task
    return elapsed, cpu, lag


def _best(run: Callable[[], object], loops: int = 10) -> float:
    """CPU seconds of one ``run``: the best of 5 timings of ``loops`` runs each (the usual
    way to time a small thing on a machine doing other work)."""
    return min(timeit.repeat(run, repeat=5, number=loops, timer=time.process_time)) / loops


def _moved(
    a: Sequence[int | None], b: Sequence[int | None], stayed: set[int]
) -> tuple[float, float]:
    moved = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    extra = sum(x in stayed and y in stayed for x, y in moved)
    return len(moved) / len(a), extra / len(a)


def measure(design: Design, n: int, keys: Sequence[str], rounds: int) -> Row:
    slots = list(range(1, n + 1))
    timings = []
    for _ in range(rounds):
        design.cold()
        timings.append(asyncio.run(_build_in_thread(lambda: design.build(slots))))
    build_s = statistics.median(t for t, _, _ in timings)
    build_cpu = statistics.median(c for _, c, _ in timings)
    blocked = max(lag for _, _, lag in timings)
    s = design.build(slots)
    shares = s.shares()
    error = max(abs(v - 1 / n) * n for v in shares.values())
    owners = [s.lookup(k) for k in keys]
    grown = design.build([*slots, n + 1])
    add = _moved(owners, [grown.lookup(k) for k in keys], set(slots))
    gone = 2 if n > 2 else 1
    shrunk = design.build([x for x in slots if x != gone])
    rm = _moved(owners, [shrunk.lookup(k) for k in keys], set(slots) - {gone})
    again = design.build(list(reversed(slots)))
    replaced = _moved(owners, [again.lookup(k) for k in keys], set(slots))[0]
    sample = keys[:2000]
    t = _best(lambda: [s.lookup(k) for k in sample])
    return Row(
        design.name,
        n,
        build_s * 1000,
        build_cpu * 1000,
        blocked * 1000,
        error,
        *add,
        *rm,
        replaced,
        t / len(sample) * 1e9,
    )


def table(rows: Sequence[Row]) -> str:
    head = (
        "| design | N | build ms | of it CPU ms | loop held up ms | worst share error | +1 moved "
        "(ideal) | of which between others | -1 moved (ideal) | of which between others | "
        "same slots rebuilt: moved | lookup ns |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        lines.append(
            f"| {r.design} | {r.n} | {r.build_ms:.1f} | {r.build_cpu_ms:.1f} | "
            f"{r.loop_blocked_ms:.1f} | "
            f"{r.share_error:.2%} | {r.add_moved:.4f} ({1 / (r.n + 1):.4f}) | {r.add_extra:.4f} | "
            f"{r.rm_moved:.4f} ({1 / r.n:.4f}) | {r.rm_extra:.4f} | {r.replaced_moved:.0f} | "
            f"{r.lookup_ns:.0f} |"
        )
    return "\n".join(lines)


def _next_entries(t: MaglevTable, key: str) -> Iterator[int]:
    """The owners of the entries that follow the key's (HAProxy's next node, on a table)."""
    i = t.scheme.key_position(key)
    seen: set[int] = set()
    for step in range(t.scheme.slots):
        owner = t.owner_at(i + step)
        if owner is not None and owner not in seen:
            seen.add(owner)
            yield owner


#: How a structure orders the replicas after a key's own.
FALLBACKS: dict[str, tuple[Callable[[Sequence[int]], Structure], Callable[..., Iterator[int]]]] = {
    "ring: next node clockwise (HAProxy)": (
        lambda slots: HashRing(make_scheme("ring"), slots),
        lambda s, k: s.walk(k),
    ),
    "maglev: next entries": (
        lambda slots: MaglevTable(make_scheme("default"), slots),
        _next_entries,
    ),
    "maglev: stride from the key (lbproxy)": (
        lambda slots: MaglevTable(make_scheme("default"), slots),
        lambda s, k: s.walk(k),
    ),
    "rendezvous: ranking": (lambda slots: RendezvousTable(65536, slots), lambda s, k: s.walk(k)),
}


def second_choice_spread(
    build: Callable[[Sequence[int]], Structure],
    order: Callable[..., Iterator[int]],
    n: int,
    keys: Sequence[str],
) -> float:
    """Worst, over the replicas, of max/mean of where its keys go second: 1 = evenly."""
    s = build(list(range(1, n + 1)))
    seconds: dict[int, dict[int, int]] = {r: dict.fromkeys(range(1, n + 1), 0) for r in s.replicas}
    for k in keys:
        walk = order(s, k)
        first, second = next(walk), next(walk)
        seconds[first][second] += 1
    worst = 1.0
    for first, counts in seconds.items():
        others = [c for r, c in counts.items() if r != first]
        worst = max(worst, max(others) * len(others) / sum(others))
    return worst


#: N of the second-choice table (beyond 16, the noise of 200,000 keys hides the differences).
SPREAD_SIZES = (3, 8, 16)


def spread_table(sizes: Sequence[int], keys: Sequence[str]) -> str:
    head = "| order after the key's own | " + " | ".join(f"N={n}" for n in sizes) + " |"
    lines = [head, "|" + " --- |" * (len(sizes) + 1)]
    for name, (build, order) in FALLBACKS.items():
        cells = [f"{second_choice_spread(build, order, n, keys):.2f}" for n in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pick_costs(keys: Sequence[str], n: int = 3) -> str:
    """ns per ``Pool.pick`` (the hot path's routing call) against what it replaced."""
    from lbproxy._pool import Pool, State

    async def build(scheme_name: str, factor: float | None) -> Pool:
        pool = Pool(make_scheme(scheme_name), balance_factor=factor)  # type: ignore[arg-type]
        for slot in range(1, n + 1):
            pool.add(slot, f"r{slot}").state = State.UP
        await pool.refresh_ring()
        return pool

    sample = list(keys[:5000])
    lines = ["| routing call | ns per request |", "| --- | --- |"]

    def cost(label: str, call: Callable[[str], object], keys: Sequence[str] = sample) -> None:
        t = _best(lambda: [call(k) for k in keys])
        lines.append(f"| {label} | {t / len(keys) * 1e9:.0f} |")

    old = asyncio.run(build("ring", None))
    cost(
        "before: ring lookup, replica, state check (16384-vnode ring)",
        lambda k: (r := old.replicas.get(old.ring.lookup(k))) and r.state is State.UP,  # type: ignore[arg-type]
    )
    off = asyncio.run(build("default", None))
    cost("Pool.pick, bounded loads off", off.pick)
    on = asyncio.run(build("default", 1.25))
    for r in on.replicas.values():
        for _ in range(10):
            r.begin()  # 30 in flight, 10 each: every replica has room (cap 13)
    cost("Pool.pick, balance_factor 1.25, room at home", on.pick)
    full = asyncio.run(build("default", 1.25))
    for _ in range(30):
        full.replicas[1].begin()  # replica 1 has all 30: its keys walk on
    mine = [k for k in sample if full.ring.lookup(k) == 1]
    cost("Pool.pick, balance_factor 1.25, home full (walks on)", full.pick, mine)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 16, 32, 64])
    p.add_argument("--keys", type=int, default=200_000, help="random keys for movement")
    p.add_argument("--rounds", type=int, default=3, help="builds timed per cell (median)")
    p.add_argument("--designs", nargs="+", help="only designs whose name starts so")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    keys = [f"{rng.getrandbits(64):x}" for _ in range(args.keys)]
    chosen = [
        d for d in designs() if not args.designs or any(d.name.startswith(x) for x in args.designs)
    ]
    rows = []
    for d in chosen:
        for n in args.sizes:
            rows.append(measure(d, n, keys, args.rounds))
            print(f"  measured {d.name} N={n}", flush=True)
    print(f"\n{args.keys:,} random keys, seed {args.seed}; build: median of {args.rounds}\n")
    print(table(rows))
    print(
        "\nWhere one replica's keys go second (retries, overflow): worst max/mean over the "
        "replicas (1 = evenly over the others; the rendezvous ranking is uniform, so its row "
        "is the sampling noise of this many keys)\n"
    )
    print(spread_table(SPREAD_SIZES, keys))
    print(f"\nThe hot path's routing call (CPU time), N = 3, {min(len(keys), 5000):,} keys\n")
    print(pick_costs(keys))


if __name__ == "__main__":
    main()
