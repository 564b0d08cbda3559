"""What a request may do to its client's connection, and all it may know of it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from .._tunnel import TunnelEnd

if TYPE_CHECKING:
    from ._request import Request


class ClientSink(Protocol):
    """What a request may do to the client's connection, and all it may know of it."""

    loop: asyncio.AbstractEventLoop
    #: The client's address and the scheme it came in with ("http" or "https").
    remote: str | None
    scheme: str
    #: The connection is gone: nothing written reaches the client.
    lost: bool
    #: No more requests will be read after the current one (``last_answer`` says more).
    closing: bool

    def write(self, data: bytes) -> None: ...
    def write_chunk(self, data: bytes) -> None: ...
    @property
    def write_paused(self) -> bool: ...
    async def drain(self) -> None: ...
    def abort(self) -> None: ...

    @property
    def last_answer(self) -> bool:
        """No request will be read after this one, and no error answer follows it."""
        ...

    @property
    def body_gone(self) -> bool:
        """The client can no longer send the rest of a body (it left or sent EOF)."""
        ...

    def body_taken(self) -> None:
        """The queued body was taken: reading from the client may resume."""
        ...

    def done(self, request: Request) -> None:
        """The answer is out (or the request given up): on to the next request."""
        ...

    def own_answer(self, status: int) -> None:
        """The balancer answered a request it could not take with ``status`` (metrics)."""
        ...

    def switch(self, head: bytes) -> TunnelEnd:
        """Send ``head`` (a 101's) and hand the connection over to a tunnel; raises
        ``ClientDisconnectedError`` if the client is gone."""
        ...
