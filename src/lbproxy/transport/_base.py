"""The seam between the proxy and whatever speaks HTTP to replicas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .._errors import UpstreamError
from .._tunnel import TunnelEnd

#: Methods whose request may be sent again when a reused connection turns out to have been
#: closed by the replica before it answered anything (RFC 9110 section 9.2.2: idempotent).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class RequestBody(Protocol):
    """A request body as it arrives from the client, never held whole.

    ``length`` is the declared Content-Length, or None when the body is sent without one
    (chunked). ``read()`` returns the next piece, ``b""`` once the body is complete, and
    raises ``ClientDisconnectedError`` if the client left before sending all of it.
    """

    length: int | None

    async def read(self) -> bytes: ...


class UpstreamResponse(Protocol):
    """A replica's answer whose head is in and whose body may still be arriving."""

    status: int
    reason: str
    #: Headers as the replica sent them, as wire lines (``_headers.SEP``), undecoded.
    header_lines: list[bytes]
    #: True when the headers hold no hop-by-hop one (so they pass on without filtering).
    end_to_end: bool

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers, decoded (for filtering)."""
        ...

    #: The declared Content-Length; None when the body is chunked or ends with the connection.
    length: int | None
    #: False for answers that never have a body (HEAD, 1xx, 204, 304).
    has_body: bool
    #: True once the whole body has arrived (it may still be waiting in the buffer).
    complete: bool
    #: Why the exchange failed (an ``UpstreamError``), or None; see ``Transport.send_nowait``.
    error: UpstreamError | None
    #: The failure is a reused connection the replica had closed: nothing was answered.
    stale: bool

    def take(self) -> bytes:
        """Everything received and not taken yet, without waiting (``b""`` if nothing)."""
        ...

    async def read(self) -> bytes:
        """The next piece of the body, waiting for it; ``b""`` at the end.

        Raises ``UpstreamTimeoutError`` when the replica stalls for longer than the read
        timeout and ``UpstreamProtocolError`` when it breaks off the answer.
        """
        ...

    def detach(self) -> TunnelEnd:
        """A 101 answer to a request sent with ``upgrade``: the connection leaves HTTP and
        becomes one end of a tunnel (``_tunnel.Tunnel``); ``release`` is then a no-op."""
        ...

    def release(self) -> None:
        """Done with the answer: the connection is reused if the body was read to its end,
        closed otherwise. Safe to call more than once."""
        ...


class Transport(Protocol):
    """Sends one request to one replica and returns as soon as the answer's head is in.

    ``headers`` are the request's header lines, encoded (``_headers.encode_headers``).

    Raises ``UpstreamConnectError`` when nothing was sent (the caller may try another replica),
    ``UpstreamTimeoutError`` when the replica is too slow, ``UpstreamProtocolError`` otherwise;
    ``ClientDisconnectedError`` from the body passes through (the replica's connection is
    closed, so it never takes a cut body for a complete one).
    """

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: bytes,
        body: RequestBody | None,
        upgrade: bool = False,
    ) -> UpstreamResponse:
        """``upgrade``: the request asks to switch protocols (its headers say to which), so
        a 101 answer is taken rather than failed."""
        ...

    def send_nowait(
        self,
        address: str,
        method: str,
        target: str,
        headers: bytes,
        on_answer: Callable[[UpstreamResponse], None],
    ) -> UpstreamResponse | None:
        """The hot path for a bodiless request: sent at once on an idle kept-alive connection,
        with no task and no waiting; None when there is no idle connection to ``address``.

        ``on_answer(response)`` is called once: when the answer's head is in (``complete``
        tells whether its body is too), or when the exchange failed (``error`` is set, and
        ``stale`` when the request may simply be sent again).
        """
        ...

    def abandon(self, address: str, reason: str) -> int:
        """The replica at ``address`` was taken out (it failed): its idle connections are
        closed, and each request in flight there that is bodiless and idempotent and has had
        nothing back fails now with ``UpstreamProtocolError`` (``reason`` says why), so it can
        go to another replica at once. Returns how many were failed."""
        ...

    async def close(self) -> None: ...
