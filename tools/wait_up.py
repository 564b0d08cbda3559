"""Wait until a balancer serves on its port: what `make up` returns on.

Up means: ``GET /rep`` answers with N >= 1 (``--min-replicas``) and ``GET /home`` is answered
by a replica. N itself is not waited for: a running stack may have any N (after an ``/add``, a
``/rm``, or replicas adopted from an earlier balancer), and a starting balancer opens its port
only once its first replicas answer, so ``make up`` returns at once on a stack that is up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, {}


def replicas(base: str) -> int | None:
    """N as ``/rep`` says it, or None if it does not answer so."""
    status, rep = get_json(f"{base}/rep")
    message = rep.get("message")
    n = message.get("N") if isinstance(message, dict) else None
    return n if status == 200 and isinstance(n, int) else None


def ready(base: str, min_replicas: int = 1) -> tuple[int | None, str | None]:
    """(N, None) when up, else (N or None, what is still missing)."""
    n = None
    try:
        n = replicas(base)
        if n is None or n < min_replicas:
            return n, f"/rep says N={n}, waiting for at least {min_replicas}"
        status, _ = get_json(f"{base}/home")
        if status != 200:
            return n, f"/home answered {status}"
    except (OSError, ValueError) as e:
        return n, f"not answering yet ({e})"
    return n, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--min-replicas", type=int, default=1, help="N to wait for at least")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    waiting: str | None = "nothing tried"
    while time.monotonic() - started < args.timeout:
        n, waiting = ready(args.url, args.min_replicas)
        if waiting is None:
            elapsed = time.monotonic() - started
            print(f"lbproxy is up at {args.url} with {n} replicas ({elapsed:.1f}s)")
            return 0
        time.sleep(0.25)
    print(f"lbproxy is not up at {args.url} after {args.timeout:.0f}s: {waiting}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
