"""Running a coroutine on the fastest available event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


def loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, only slower
        return None
    return uvloop.new_event_loop


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the soft limit now in force.

    Every client connection and every upstream connection is a file descriptor, and the
    usual soft default (1024) would refuse clients long before memory or CPU run out.
    """
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to raise
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be a soft one: Linux caps descriptors at fs.nr_open.
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def run(main: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
