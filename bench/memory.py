"""lbproxy's memory while it streams big bodies and while it holds many idle connections.

Each scenario runs against a fresh balancer process (static backend -> ``bench.upstream``),
warmed up first. Growth = the peak RSS during the scenario minus the RSS just before it; the
peak is VmHWM reset right before the scenario (``/proc/<pid>/clear_refs``) and, as a check,
the largest VmRSS sampled every 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from .procs import BenchError, memory_kib, open_fds, reset_peak_rss

MiB = 1 << 20
CHUNK = bytes(range(256)) * 4096  # 1 MiB
TRANSFER_TIMEOUT = 300.0
IDLE_TIMEOUT = 180.0
CONNECT_CONCURRENCY = 200


@dataclass(frozen=True)
class MemoryResult:
    scenario: str
    baseline_kib: int
    peak_kib: int
    detail: str

    @property
    def growth_kib(self) -> int:
        return max(0, self.peak_kib - self.baseline_kib)


class _Sampler:
    """The largest VmRSS of ``pid`` seen while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_kib = 0

    async def run(self) -> None:
        while True:
            self.max_kib = max(self.max_kib, memory_kib(self.pid, "VmRSS"))
            await asyncio.sleep(0.02)


async def measure(pid: int, scenario: str, work: Callable[[], Awaitable[str]]) -> MemoryResult:
    baseline = memory_kib(pid, "VmRSS")
    hwm_reset = reset_peak_rss(pid)
    sampler = _Sampler(pid)
    task = asyncio.create_task(sampler.run())
    try:
        detail = await work()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    peak = max(sampler.max_kib, memory_kib(pid, "VmRSS"))
    if hwm_reset:
        peak = max(peak, memory_kib(pid, "VmHWM"))
    else:
        detail += "; VmHWM could not be reset, peak from sampling only"
    # The baseline is itself an RSS sample of the window: the peak is never below it, though
    # VmHWM (reset a moment later) is when memory was given back in between.
    return MemoryResult(scenario, baseline, max(peak, baseline), detail)


async def _body(size: int) -> AsyncIterator[bytes]:
    left = size
    while left > 0:
        n = min(left, len(CHUNK))
        yield CHUNK if n == len(CHUNK) else CHUNK[:n]
        left -= n


async def warm_up(base: str) -> None:
    """A few requests of each kind, so lazily made pools and imports are in the baseline."""
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for i in range(20):
            async with http.get(f"{base}/home", headers={"X-Request-Id": str(i)}) as r:
                await r.read()
        async with http.post(
            f"{base}/upload", data=_body(4 * MiB), headers={"Content-Length": str(4 * MiB)}
        ) as r:
            await r.read()
        async with http.get(f"{base}/download?bytes={4 * MiB}") as r:
            await r.read()


async def upload(base: str, size: int) -> str:
    t = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT)
    headers = {"Content-Length": str(size), "X-Request-Id": "1"}
    async with (
        aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as http,
        http.post(f"{base}/upload", data=_body(size), headers=headers) as r,
    ):
        if r.status != 200:
            raise BenchError(f"upload through lbproxy: status {r.status}")
        got = (await r.json())["bytes"]
    if got != size:
        raise BenchError(f"upload through lbproxy: the upstream got {got} of {size} bytes")
    return f"{size} bytes received upstream in {time.monotonic() - t:.1f}s"


async def download(base: str, size: int) -> str:
    t = time.monotonic()
    n = 0
    timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT)
    async with (
        aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as http,
        http.get(f"{base}/download?bytes={size}", headers={"X-Request-Id": "1"}) as r,
    ):
        if r.status != 200:
            raise BenchError(f"download through lbproxy: status {r.status}")
        async for chunk in r.content.iter_any():
            n += len(chunk)
    if n != size:
        raise BenchError(f"download through lbproxy: got {n} of {size} bytes")
    return f"{size} bytes received in {time.monotonic() - t:.1f}s"


async def _one_request(port: int, i: int) -> asyncio.StreamWriter:
    """A keep-alive connection that has made one request and been answered, left open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /home HTTP/1.1\r\nHost: bench\r\nX-Request-Id: {i}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise BenchError(f"idle connection {i}: {head[:40]!r}")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    if length is None:
        writer.close()
        raise BenchError("idle connection: answer without Content-Length")
    await reader.readexactly(length)
    return writer


async def idle_connections(pid: int, base: str, count: int) -> str:
    port = int(base.rsplit(":", 1)[1])
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failures = 0

    async def open_one(i: int) -> None:
        nonlocal failures
        async with gate:
            try:
                writers.append(await _one_request(port, i))
            except (OSError, asyncio.IncompleteReadError, BenchError):
                failures += 1

    t = time.monotonic()
    try:
        async with asyncio.timeout(IDLE_TIMEOUT):
            await asyncio.gather(*(open_one(i) for i in range(count)))
        await asyncio.sleep(1.0)  # let the balancer settle with all of them idle
        held = sum(1 for w in writers if not w.is_closing())
        fds = open_fds(pid)
    finally:
        for w in writers:
            w.close()
    if failures:
        raise BenchError(f"{failures} of {count} idle connections failed")
    return (
        f"{held} connections held open after one request each "
        f"(balancer has {fds} open fds), opened in {time.monotonic() - t:.1f}s"
    )
