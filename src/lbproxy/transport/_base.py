"""The seam between the proxy and whatever speaks HTTP to replicas."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol


class UpstreamResponse(Protocol):
    """A replica's answer whose body has not been read yet."""

    status: int
    reason: str
    headers: list[tuple[str, str]]

    def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises UpstreamError subclasses if the replica breaks off."""
        ...

    async def aclose(self) -> None:
        """Give the connection back (when the body was read to the end) or close it."""
        ...


class Transport(Protocol):
    """Sends one request to one replica and returns as soon as the answer's headers are in.

    Raises ``UpstreamConnectError`` when nothing was sent (the caller may try another replica),
    ``UpstreamTimeoutError`` when the replica is too slow, ``UpstreamProtocolError`` otherwise.
    """

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: AsyncIterable[bytes] | None,
    ) -> UpstreamResponse: ...

    async def close(self) -> None: ...
