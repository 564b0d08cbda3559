"""Watching config.yaml: a changed file is parsed and, when valid, applied to the running balancer.

Polling the file's identity and content (rather than inotify) keeps working across editors that
replace the file, bind mounts into containers, and Kubernetes ConfigMap symlink swaps.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ._config import Config, load_config
from ._errors import ConfigError

log = logging.getLogger("lbproxy.reload")


def fingerprint(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


async def watch_config(
    path: Path,
    interval: Callable[[], float],
    apply: Callable[[Config], Awaitable[None]],
    last: bytes | None = None,
) -> None:
    """Run forever: every ``interval()`` seconds, apply config.yaml if its content changed.

    ``last`` is the fingerprint of the file the running configuration was read from, taken
    when it was read: an edit made while the balancer was still starting is then applied
    instead of becoming the baseline. None: the file as it is when watching starts.
    """
    if last is None:
        last = await asyncio.to_thread(fingerprint, path)
    while True:
        await asyncio.sleep(interval())
        current = await asyncio.to_thread(fingerprint, path)
        if current is None or current == last:
            continue
        last = current
        try:
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as e:
            log.error("config reload rejected, keeping the running configuration: %s", e)
            continue
        log.info("config file %s changed; applying", path)
        await apply(config)
