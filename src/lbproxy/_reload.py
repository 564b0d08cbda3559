"""Watching config.yaml: a changed file is parsed and, when valid, applied to the running balancer.

Polling the file's identity and content (rather than inotify) keeps working across editors that
replace the file, bind mounts into containers, and Kubernetes ConfigMap symlink swaps.

A file is read while someone may be writing it: an editor that saves in place truncates it
and writes it again, and in between it is empty or holds only its first lines, which may well
be valid YAML. So a changed file is applied only once two reads ``SETTLE`` seconds apart find
the same content, and a file with no YAML document (empty) is rejected like any invalid edit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ._config import Config, parse_config_file
from ._errors import ConfigError

log = logging.getLogger("lbproxy.reload")

#: Seconds between the two reads that must agree before a changed file is applied: far
#: longer than any save takes, short enough that an edit still applies within a second.
SETTLE = 0.25


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _digest(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def fingerprint(path: Path) -> bytes | None:
    content = _read(path)
    return None if content is None else _digest(content)


async def _settled(path: Path, content: bytes) -> bytes | None:
    """The file's content once two reads ``SETTLE`` apart agree; None if it went away."""
    while True:
        await asyncio.sleep(SETTLE)
        again = await asyncio.to_thread(_read, path)
        if again is None or again == content:
            return again
        content = again  # still being written


async def watch_config(
    path: Path,
    interval: Callable[[], float],
    apply: Callable[[Config], Awaitable[None]],
    last: bytes | None = None,
    rejected: Callable[[str], None] | None = None,
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
        content = await asyncio.to_thread(_read, path)
        if content is None or _digest(content) == last:
            continue  # unchanged, or gone for now (being replaced): not an edit
        content = await _settled(path, content)
        if content is None or _digest(content) == last:
            continue
        last = _digest(content)
        try:
            # The very bytes that were found stable, not a third read.
            config = parse_config_file(content, str(path))
        except ConfigError as e:
            log.error("config reload rejected, keeping the running configuration: %s", e)
            if rejected is not None:
                rejected(str(e))
            continue
        log.info("config file %s changed; applying", path)
        try:
            await apply(config)
        except Exception:
            # The watcher must outlive any one bad reload, or later edits would go unseen.
            log.exception("applying the changed config file %s failed", path)
