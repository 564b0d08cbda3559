"""``proxy.read_timeout`` on a replica connection: the longest the replica may stay quiet
while the balancer waits for its answer (not while the client holds things up)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mypy_extensions import trait

from .._errors import UpstreamTimeoutError
from .._flow import FlowControl

if TYPE_CHECKING:
    from ._httptools import _HostPool, _Response


#: No slots of its own (``_Connection`` has them), named rather than spelled ``()`` so that
#: mypy (and so mypyc) does not take the mixin's attributes for undeclared ones.
_MIXIN_SLOTS: tuple[str, ...] = ()


@trait  # compiled (mypyc): ``_Connection`` stays a native class with it as a base
class ReadTimeout:
    """The read-timeout side of ``_Connection`` (a mixin)."""

    __slots__ = _MIXIN_SLOTS

    _timer: asyncio.TimerHandle | None
    _exchange: _Response | None
    _last_activity: float
    _waiting_on_client: bool
    closed: bool
    flow: FlowControl | None
    loop: asyncio.AbstractEventLoop
    pool: _HostPool

    def abort(self) -> None:
        raise NotImplementedError

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        # One timer per connection, left armed between exchanges rather than set and
        # cancelled for each: it checks when it fires whether the replica was quiet too long.
        self._timer = None
        ex = self._exchange
        if self.closed or ex is None:
            return  # idle: re-armed by the next exchange
        if ex.complete or ex._error is not None:
            self._arm(self.pool.read_timeout)
            return
        timeout = self.pool.read_timeout
        if self.flow.read_paused or self._waiting_on_client:  # type: ignore[union-attr]
            self._arm(timeout)  # waiting for the client, not for the replica
            return
        quiet = self.loop.time() - self._last_activity
        if quiet < timeout * 0.999:
            self._arm(timeout - quiet)
            return
        ex.fail(UpstreamTimeoutError(f"{self.pool.address} sent nothing for {timeout:g}s"))
        self.abort()
