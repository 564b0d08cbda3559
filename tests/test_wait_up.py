"""tools/wait_up.py (what `make up` returns on) against a real balancer on loopback."""

from __future__ import annotations

import asyncio

import aiohttp

from conftest import BalancerFactory, free_port, load_tool, url

wait_up = load_tool("wait_up")


async def test_up_whatever_n_is_and_not_up_without_replicas(
    balancer: BalancerFactory, http: aiohttp.ClientSession
) -> None:
    server = await balancer({"replicas": {"count": 2}})
    base = url(server, "")
    # N differs from the configured count after an /add: a stack that serves is up.
    async with http.post(url(server, "/add"), json={"n": 1}) as resp:
        assert resp.status == 200
    assert await asyncio.to_thread(wait_up.ready, base) == (3, None)
    code = await asyncio.to_thread(wait_up.main, ["--url", base, "--timeout", "10"])
    assert code == 0

    # A balancer with no replica left serves nothing: not up.
    async with http.delete(url(server, "/rm"), json={"n": 3}) as resp:
        assert resp.status == 200
    n, missing = await asyncio.to_thread(wait_up.ready, base)
    assert n == 0
    assert missing is not None and "N=0" in missing
    code = await asyncio.to_thread(wait_up.main, ["--url", base, "--timeout", "1"])
    assert code == 1


def test_nothing_listening_is_not_up() -> None:
    n, missing = wait_up.ready(f"http://127.0.0.1:{free_port()}")
    assert n is None
    assert missing is not None and "not answering" in missing
