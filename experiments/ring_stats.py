"""Balance and key movement of each hash choice, computed on the ring itself (no network).

    python -m experiments.ring_stats [--requests 10000] [--seed 0]

Prints, for N = 2..6 replicas in slots 1..N: per-replica counts of random 6-digit request
ids, max/mean, and the fraction of those ids that move when a replica is added (N -> N+1)
against the ideal 1/(N+1). ``python -m experiments`` measures the same through a live
balancer; its experiment 1 checks that the balancer routes exactly as this predicts.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence

from lbproxy import build_ring, make_scheme
from lbproxy._hashing import HASH_NAMES, HashName

from ._load import uniform_ids


def ring_owners(hash_name: HashName, slots: Sequence[int], ids: Sequence[str]) -> list[int]:
    """The replica slot the ring gives each id."""
    ring = build_ring(make_scheme(hash_name), slots)
    return [ring.lookup(i) or 0 for i in ids]


def ring_counts(hash_name: HashName, n: int, ids: Sequence[str]) -> list[int]:
    """How many of ``ids`` the ring gives each of the replicas in slots 1..n."""
    owners = ring_owners(hash_name, range(1, n + 1), ids)
    return [owners.count(s) for s in range(1, n + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min", type=int, default=2)
    parser.add_argument("--max", type=int, default=6)
    args = parser.parse_args()
    ids = uniform_ids(args.requests, random.Random(args.seed))
    print(f"{args.requests} random 6-digit ids, seed {args.seed}")
    print(f"{'hash':<11}{'N':>3}  {'max/mean':>8}  {'moved N->N+1':>12}  {'ideal':>6}  counts")
    for name in HASH_NAMES:
        for n in range(args.min, args.max + 1):
            owners = ring_owners(name, range(1, n + 1), ids)
            bigger = ring_owners(name, range(1, n + 2), ids)
            counts = [owners.count(s) for s in range(1, n + 1)]
            moved = sum(a != b for a, b in zip(owners, bigger, strict=True))
            print(
                f"{name:<11}{n:>3}  {max(counts) * n / len(ids):>8.3f}  "
                f"{moved / len(ids):>12.3f}  {1 / (n + 1):>6.3f}  {counts}"
            )


if __name__ == "__main__":
    main()
