"""Bounded loads simulated: the cap, and where overflow goes (HAProxy's way or Envoy's).

    python -m experiments.bounded_sim [--replicas 3 16] [--requests 20000]

No network and no machine noise: a closed loop of ``--clients`` clients, each sending its
next Zipf-drawn key as soon as its previous answer is in, to N replicas that each take 20 ms
(+-10%) per request however many they hold, routed by lbproxy's own table and caps
(``lbproxy.MaglevTable``, ``lbproxy.LoadBound``). Two orders for a key whose replica is
full: the table's own walk, a stride derived from the key (Envoy's random jump seeded by the
hash; lbproxy's choice), and the next entries of the table (HAProxy's next node on its
tree), which the table's structure correlates. Prints, per order, factor and exponent, the
busiest replica's requests and time-averaged requests in flight against the mean, and the
share of requests answered away from their key's own replica.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from lbproxy import LoadBound, MaglevTable, make_scheme

from ._load import zipf_ids
from ._results import md_table

Order = Callable[[MaglevTable, str], Iterator[int]]


def stride_order(table: MaglevTable, key: str) -> Iterator[int]:
    """lbproxy's: the table's walk (a stride derived from the key's hash)."""
    return table.walk(key)


def next_entry_order(table: MaglevTable, key: str) -> Iterator[int]:
    """HAProxy's way on this table: the owners of the entries that follow the key's."""
    size = table.scheme.slots
    i = table.scheme.key_position(key)
    seen: set[int] = set()
    for step in range(size):
        owner = table.owner_at(i + step)
        if owner is not None and owner not in seen:
            seen.add(owner)
            yield owner
            if len(seen) == len(table.replicas):
                return


ORDERS: dict[str, Order] = {"stride (lbproxy)": stride_order, "next entry": next_entry_order}


@dataclass
class SimResult:
    order: str
    n: int
    factor: float | None
    exponent: float
    counts: list[int]
    busy: list[float]  # time-averaged requests in flight per replica
    away: float

    @property
    def max_over_mean(self) -> float:
        return max(self.counts) * self.n / sum(self.counts)

    @property
    def busy_max_over_mean(self) -> float:
        return max(self.busy) * self.n / sum(self.busy)


def simulate(
    n: int,
    keys: Sequence[str],
    factor: float | None,
    order: Order,
    clients: int = 64,
    delay: float = 0.02,
    seed: int = 0,
) -> tuple[list[int], list[float], float]:
    """(requests per replica, time-averaged in flight per replica, share away from home)."""
    table = MaglevTable(make_scheme("default"), range(1, n + 1))
    bound = None if factor is None else LoadBound(factor, range(1, n + 1))
    rng = random.Random(seed)
    in_flight = dict.fromkeys(range(1, n + 1), 0)
    area = dict.fromkeys(range(1, n + 1), 0.0)
    counts = dict.fromkeys(range(1, n + 1), 0)
    total = 0
    away = 0
    now = last = 0.0
    done: list[tuple[float, int]] = []  # (finish time, slot)
    source = iter(keys)

    def send(key: str) -> None:
        nonlocal total, away
        home = table.lookup(key)
        chosen = home
        if bound is not None:
            chosen = next(
                (s for s in order(table, key) if bound.has_room(s, in_flight[s], total)), home
            )
        assert chosen is not None
        away += chosen != home
        in_flight[chosen] += 1
        counts[chosen] += 1
        total += 1
        heapq.heappush(done, (now + delay * rng.uniform(0.9, 1.1), chosen))

    for key in source:
        send(key)
        if total == clients:
            break
    while done:
        finish, slot = heapq.heappop(done)
        for s, k in in_flight.items():
            area[s] += k * (finish - last)
        now = last = finish
        in_flight[slot] -= 1
        total -= 1
        key = next(source, None)
        if key is not None:
            send(key)
    return (
        [counts[s] for s in range(1, n + 1)],
        [area[s] / now for s in range(1, n + 1)],
        (away / len(keys)),
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, nargs="+", default=[3, 16])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--exponents", type=float, nargs="+", default=[0.0, 1.2])
    p.add_argument("--factors", type=float, nargs="+", default=[1.5, 1.25, 1.1])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    results = []
    for n in args.replicas:
        for a in args.exponents:
            rng = random.Random(f"{args.seed}:zipf-{a}")
            keys = zipf_ids(args.requests, min(10_000, args.requests), a, rng)
            for name, order in ORDERS.items():
                for f in [None, *args.factors]:
                    if f is None and name != next(iter(ORDERS)):
                        continue  # without a cap the order does not matter
                    counts, busy, away = simulate(n, keys, f, order, args.clients)
                    results.append(SimResult(name, n, f, a, counts, busy, away))
    rows = [
        [
            r.n,
            r.exponent,
            "off" if r.factor is None else f"{r.factor:g}",
            "-" if r.factor is None else r.order,
            r.max_over_mean,
            r.busy_max_over_mean,
            f"{r.away:.1%}",
        ]
        for r in results
    ]
    print(
        f"{args.requests:,} requests per run, {args.clients} clients, 20 ms per request, "
        f"seed {args.seed}\n"
    )
    print(
        md_table(
            [
                "N",
                "s",
                "balance_factor",
                "overflow order",
                "requests max/mean",
                "in flight max/mean",
                "away from home",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
