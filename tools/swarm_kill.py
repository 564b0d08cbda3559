"""Measure what the death of a replica task costs on a swarm stack (`make swarm-up`).

Clients keep sending ``GET /home`` with request ids through the balancer while the container
of one task is killed (`docker kill`); it prints, from that moment, when the dead replica's
keys were answered by the others, when the balancer's log says it left the ring and when its
replacement joined it, when the replacement first answered its keys, and how many requests
failed:

    make swarm-up
    .venv/bin/python tools/swarm_kill.py                       # slot 2, 8 clients
    .venv/bin/python tools/swarm_kill.py --slot 1 --clients 16
    .venv/bin/python tools/swarm_kill.py --action update    # a rolling update instead

Bounded: the load ends ``--after`` answers after the replacement's first, or at ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

#: The balancer's log lines this reads (lbproxy.supervisor), with their time.
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


@dataclass
class Answer:
    sent: float
    ended: float
    key: str
    #: The replica that answered, or what went wrong ("503", "ClientOSError", ...).
    outcome: str
    ok: bool


def task_container(service: str, slot: int) -> str:
    out = subprocess.run(
        [
            "docker", "ps", "--no-trunc", "--filter",
            f"label=com.docker.swarm.service.name={service}",
            "--format", '{{.ID}} {{.Label "com.docker.swarm.task.name"}}',
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        cid, task = line.split()
        if task.startswith(f"{service}.{slot}."):
            return cid
    raise SystemExit(f"no running task of {service} in slot {slot}")


def log_times(balancer: str, since: float, patterns: dict[str, str]) -> dict[str, float]:
    """Wall-clock times of the first balancer log line after ``since`` matching each pattern."""
    stamp = datetime.fromtimestamp(since - 5, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    out = subprocess.run(
        ["docker", "service", "logs", "--raw", "--since", stamp, balancer],
        capture_output=True,
        text=True,
    )
    found: dict[str, float] = {}
    for line in (out.stdout + out.stderr).splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
        for name, text in patterns.items():
            if name not in found and text in line and at >= since - 0.01:
                found[name] = at
    return found


async def ask(session: aiohttp.ClientSession, url: str, key: str) -> Answer:
    sent = time.monotonic()
    try:
        async with session.get(f"{url}/home", headers={"X-Request-Id": key}) as r:
            body = await r.json(content_type=None) if r.status == 200 else None
            outcome = body["message"].removeprefix("Hello from Server: ") if body else str(r.status)
            return Answer(sent, time.monotonic(), key, outcome, body is not None)
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        return Answer(sent, time.monotonic(), key, type(e).__name__, False)


async def measure_update(args: argparse.Namespace) -> int:
    """A rolling update of every task (`docker service update --force`) under load."""
    rng = random.Random(7)
    keys = [str(rng.randint(100_000, 999_999)) for _ in range(600)]
    answers: list[Answer] = []
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10), connector=connector
    ) as session:
        before = {
            a.key: a.outcome
            for a in await asyncio.gather(*(ask(session, args.url, k) for k in keys))
        }

        #: The count of answers at which the load ends (a tail after the update).
        until: list[int] = []

        async def client() -> None:
            while not stop.is_set():
                answers.append(await ask(session, args.url, rng.choice(keys)))
                if until and len(answers) >= until[0]:
                    stop.set()

        workers = [asyncio.create_task(client()) for _ in range(args.clients)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        started = time.monotonic()
        update = await asyncio.create_subprocess_exec(
            "docker", "service", "update", "--force", "--detach=false", "--quiet", args.service,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        await update.wait()
        took = time.monotonic() - started
        until.append(len(answers) + args.after)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.timeout)
        stop.set()
        await asyncio.gather(*workers)
        after = {
            a.key: a.outcome
            for a in await asyncio.gather(*(ask(session, args.url, k) for k in keys))
        }
    failed = [a for a in answers if not a.ok]
    moved = sum(before[k] != after[k] for k in keys)
    print(f"rolling update of {args.service} (every task replaced, start-first) took {took:.1f}s")
    print(f"  requests: {len(answers)}, failed: {len(failed)}", end="")
    kinds = sorted({a.outcome for a in failed})
    print(f" ({', '.join(kinds)})" if kinds else "")
    print(f"  keys on another replica afterwards: {moved} of {len(keys)}")
    return 0 if update.returncode == 0 else 1


async def measure(args: argparse.Namespace) -> int:
    victim = f"{args.service}-{args.slot}"
    rng = random.Random(7)
    keys = [str(rng.randint(100_000, 999_999)) for _ in range(3000)]
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=args.clients + 1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        owners = await asyncio.gather(*(ask(session, args.url, k) for k in keys[:600]))
        its = [a.key for a in owners if a.outcome == victim]
        if not its:
            raise SystemExit(f"no key of {victim} among 600: is the stack up, the slot right?")
        answers: list[Answer] = []
        killed_at: float | None = None
        stop = asyncio.Event()

        #: How many answers there were when the replacement first answered.
        back_at: list[int] = []

        async def client(mine: list[str]) -> None:
            while not stop.is_set():
                answer = await ask(session, args.url, rng.choice(mine))
                answers.append(answer)
                if (
                    not back_at
                    and killed_at is not None
                    and answer.outcome == victim
                    and answer.sent > killed_at + 0.5
                ):
                    back_at.append(len(answers))
                if back_at and len(answers) >= back_at[0] + args.after:
                    stop.set()

        # One client asks only for the victim's keys, so its moments are seen closely.
        workers = [asyncio.create_task(client(its))]
        workers += [asyncio.create_task(client(keys)) for _ in range(args.clients - 1)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)  # load running before the kill
        container = task_container(args.service, args.slot)
        wall = time.time()
        killed_at = time.monotonic()
        kill = await asyncio.create_subprocess_exec(
            "docker", "kill", container, stdout=subprocess.DEVNULL
        )
        await kill.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.timeout)
        stop.set()
        await asyncio.gather(*workers)
    after = [a for a in answers if a.sent >= killed_at]
    mine = [a for a in after if a.key in set(its)]
    away = next((a for a in mine if a.ok and a.outcome != victim), None)
    home = next((a for a in mine if a.outcome == victim and a.sent > killed_at + 0.5), None)
    failed = [a for a in answers if not a.ok]
    line = f"replica {victim} (slot {args.slot}) is"
    logs = log_times(args.balancer, wall, {"down": f"{line} down", "up": f"{line} up"})

    def since(t: float | None, wall_clock: bool = False) -> str:
        if t is None:
            return "never"
        return f"+{t - (wall if wall_clock else killed_at):.3f}s"

    print(f"killed {victim} (container {container[:12]}), {len(its)} of 600 sampled keys are its")
    print(f"  its keys answered by others from    {since(away.ended if away else None)}")
    print(f"  out of the ring (balancer log)     {since(logs.get('down'), True)}")
    print(f"  replacement in the ring (log)      {since(logs.get('up'), True)}")
    print(f"  replacement answers its keys from  {since(home.ended if home else None)}")
    print(f"  requests: {len(answers)}, failed: {len(failed)}", end="")
    kinds = sorted({a.outcome for a in failed})
    print(f" ({', '.join(kinds)})" if kinds else "")
    return 0 if home is not None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--balancer", default="lbproxy", help="the balancer's service")
    parser.add_argument("--service", default="lbproxy-replicas", help="the replicas' service")
    parser.add_argument(
        "--action",
        choices=["kill", "update"],
        default="kill",
        help="kill: docker kill of the slot's task; update: a rolling update of every task",
    )
    parser.add_argument("--slot", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--after", type=int, default=200, help="answers after the replacement's")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    return asyncio.run(measure_update(args) if args.action == "update" else measure(args))


if __name__ == "__main__":
    sys.exit(main())
