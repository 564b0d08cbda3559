"""Running a coroutine on the fastest available event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, only slower
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
