"""The load generator: asyncio + aiohttp, bounded concurrency, bounded in count and time.

Every request carries its key in ``X-Request-Id``; which replica served it is read from the
answer itself (``"Hello from Server: <id>"``), never from the balancer's own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate

import aiohttp
from tqdm import tqdm

HELLO = "Hello from Server: "
REQUEST_ID_HEADER = "X-Request-Id"
#: Set by the bounded-load experiment's replicas: their requests under way when one arrived.
IN_FLIGHT_HEADER = "X-In-Flight"


def uniform_ids(count: int, rng: random.Random) -> list[str]:
    """``count`` random 6-digit request ids, as the assignment's clients send."""
    return [str(rng.randint(100_000, 999_999)) for _ in range(count)]


def zipf_ids(count: int, universe: int, exponent: float, rng: random.Random) -> list[str]:
    """``count`` ids drawn from ``universe`` distinct 6-digit ids with Zipf popularity.

    The id of rank r (1 = hottest) is drawn with probability proportional to r^-exponent;
    which id gets which rank is random.
    """
    keys = rng.sample(range(100_000, 1_000_000), universe)
    cum = list(accumulate(r**-exponent for r in range(1, universe + 1)))
    return [str(k) for k in rng.choices(keys, cum_weights=cum, k=count)]


@dataclass(frozen=True, slots=True)
class Answer:
    """One request: when it ran (seconds from the load's start), what came back."""

    key: str
    start: float
    end: float
    status: int | None  # None: no HTTP answer at all
    replica: str | None  # from the body of a 200 answer
    error: str | None  # None for a 200 "Hello from Server" answer
    #: The replica's requests under way when this one arrived (if it says: X-In-Flight).
    in_flight: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class LoadResult:
    answers: list[Answer] = field(default_factory=list)
    #: Requests the caller asked for that were never sent (the time limit came first).
    not_sent: int = 0
    #: Requests cut off in flight by the time limit.
    cut: int = 0
    elapsed: float = 0.0
    #: The time.monotonic() that answers' times are relative to.
    t0: float = 0.0

    @property
    def counts(self) -> Counter[str]:
        """Answers per replica, from the answers' bodies."""
        return Counter(a.replica for a in self.answers if a.replica is not None)

    @property
    def errors(self) -> Counter[str]:
        return Counter(a.error for a in self.answers if a.error is not None)

    @property
    def failed(self) -> int:
        return sum(not a.ok for a in self.answers)

    def owners(self) -> dict[str, str]:
        """key -> the replica that answered it (the last answer, if a key was sent twice)."""
        return {a.key: a.replica for a in self.answers if a.replica is not None}

    @property
    def rate(self) -> float:
        return len(self.answers) / self.elapsed if self.elapsed else 0.0


def replica_of(status: int, body: bytes) -> tuple[str | None, str | None]:
    """(replica, error) from one answer."""
    if status != 200:
        return None, f"HTTP {status}"
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        return None, "not a replica's answer"
    if not isinstance(message, str) or not message.startswith(HELLO):
        return None, "not a replica's answer"
    return message.removeprefix(HELLO), None


async def run_load(
    url: str,
    keys: Iterable[str],
    *,
    concurrency: int = 64,
    time_limit: float = 300.0,
    total: int | None = None,
    label: str | None = None,
    progress: bool = True,
    on_answer: Callable[[Answer], None] | None = None,
    stop: asyncio.Event | None = None,
    request_timeout: float = 30.0,
    t0: float | None = None,
) -> LoadResult:
    """Send GET ``url`` once per key with at most ``concurrency`` in flight.

    Stops when the keys run out, when ``stop`` is set, or after ``time_limit`` seconds,
    whichever comes first; failures (an HTTP error, no answer) are recorded, never raised.
    Answers' times are seconds from ``t0`` (a ``time.monotonic()``; default: now).
    """
    if total is None:
        keys = list(keys)
        total = len(keys)
    result = LoadResult(t0=time.monotonic() if t0 is None else t0)
    started = time.monotonic()
    source = iter(keys)
    bar = tqdm(
        total=total, desc=label, unit="req", disable=not progress, mininterval=0.5, leave=True
    )
    timeout = aiohttp.ClientTimeout(total=request_timeout)

    async def worker(session: aiohttp.ClientSession) -> None:
        for key in source:
            if stop is not None and stop.is_set():
                return
            start = time.monotonic() - result.t0
            try:
                async with session.get(
                    url, headers={REQUEST_ID_HEADER: key}, timeout=timeout
                ) as resp:
                    body = await resp.read()
                replica, error = replica_of(resp.status, body)
                status: int | None = resp.status
                busy = resp.headers.get(IN_FLIGHT_HEADER, "")
                in_flight = int(busy) if busy.isdigit() else None
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                replica, error, status, in_flight = None, type(e).__name__, None, None
            except asyncio.CancelledError:
                result.cut += 1  # the time limit came while it was in flight
                raise
            answer = Answer(
                key, start, time.monotonic() - result.t0, status, replica, error, in_flight
            )
            result.answers.append(answer)
            bar.update()
            if on_answer is not None:
                on_answer(answer)

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    try:
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(time_limit):
                    await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    finally:
        bar.close()
    result.elapsed = time.monotonic() - started
    result.not_sent = max(0, total - len(result.answers) - result.cut)
    return result
