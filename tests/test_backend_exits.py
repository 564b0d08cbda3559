"""backends/_exits.py: how a backend tells ``wait_exit`` callers that a replica ended."""

from __future__ import annotations

import asyncio

from lbproxy.backends._exits import Exits


async def test_a_death_wakes_the_waiter_with_its_reason_once() -> None:
    exits = Exits()
    exits.track("a")
    waiter = asyncio.ensure_future(exits.wait("a", "stopped"))
    await asyncio.sleep(0)
    assert not waiter.done()
    exits.died("a", "exited with status 137")
    exits.died("a", "a later, second report")  # the first word stands
    assert await waiter == "exited with status 137"


async def test_forgetting_wakes_the_waiter_and_untracked_is_not_running() -> None:
    exits = Exits()
    exits.track("a")
    waiter = asyncio.ensure_future(exits.wait("a", "stopped"))
    await asyncio.sleep(0)
    exits.forget("a")
    assert await waiter == "stopped"
    assert await exits.wait("a", "stopped") == "not running"
    exits.died("never-tracked", "x")  # ignored
    assert await exits.wait("never-tracked", "stopped") == "not running"


async def test_a_death_before_anyone_waits_is_kept() -> None:
    exits = Exits()
    exits.track("a")
    exits.died("a", "oom")
    exits.track("a")  # tracked again (adopted twice): the death is not forgotten
    assert await exits.wait("a", "stopped") == "oom"
