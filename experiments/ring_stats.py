"""Balance and key movement of each hash choice, computed on the ring itself (no network).

    python experiments/ring_stats.py [--requests 10000] [--seed 0]

Prints, for N = 2..7 replicas in slots 1..N: per-replica counts of random 6-digit request
ids, max/mean, and the fraction of those ids that move when a replica is added (N -> N+1)
against the ideal 1/(N+1). The experiments issue turns this into plots on a live balancer.
"""

from __future__ import annotations

import argparse
import random

from lbproxy import HashRing, make_scheme
from lbproxy._hashing import HASH_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min", type=int, default=2)
    parser.add_argument("--max", type=int, default=6)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    ids = [str(rnd.randint(100_000, 999_999)) for _ in range(args.requests)]
    print(f"{args.requests} random 6-digit ids, seed {args.seed}")
    print(f"{'hash':<11}{'N':>3}  {'max/mean':>8}  {'moved N->N+1':>12}  {'ideal':>6}  counts")
    for name in HASH_NAMES:
        scheme = make_scheme(name)
        for n in range(args.min, args.max + 1):
            ring = HashRing(scheme, range(1, n + 1))
            bigger = HashRing(scheme, range(1, n + 2))
            owners = [ring.lookup(i) for i in ids]
            counts = [owners.count(s) for s in range(1, n + 1)]
            moved = sum(a != bigger.lookup(i) for a, i in zip(owners, ids, strict=True))
            print(
                f"{name:<11}{n:>3}  {max(counts) * n / len(ids):>8.3f}  "
                f"{moved / len(ids):>12.3f}  {1 / (n + 1):>6.3f}  {counts}"
            )


if __name__ == "__main__":
    main()
