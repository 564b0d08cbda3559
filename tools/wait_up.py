"""Wait until a balancer answers on its port with all its replicas: what `make up` returns on.

Polls ``GET /rep`` until N equals the expected count and ``GET /home`` is answered by a
replica.
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


def ready(base: str, replicas: int) -> str | None:
    """None when ready, else what is still missing."""
    try:
        status, rep = get_json(f"{base}/rep")
        message = rep.get("message")
        n = message.get("N") if isinstance(message, dict) else None
        if status != 200 or n != replicas:
            return f"/rep says N={n}, waiting for {replicas}"
        status, _ = get_json(f"{base}/home")
        if status != 200:
            return f"/home answered {status}"
    except (OSError, ValueError) as e:
        return f"not answering yet ({e})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--replicas", type=int, help="N to wait for")
    which.add_argument("--config", help="wait for this config.yaml's replicas.count")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    if args.config:
        from lbproxy import load_config

        args.replicas = load_config(args.config).replicas.count
    started = time.monotonic()
    waiting = "nothing tried"
    while time.monotonic() - started < args.timeout:
        waiting = ready(args.url, args.replicas)
        if waiting is None:
            print(
                f"lbproxy is up at {args.url} with {args.replicas} replicas "
                f"({time.monotonic() - started:.1f}s)"
            )
            return 0
        time.sleep(0.25)
    print(f"lbproxy is not up at {args.url} after {args.timeout:.0f}s: {waiting}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
