"""What the proxy needs of a client's request: the seam between the HTTP server and the proxy.

``Proxy`` is typed against ``Exchange`` alone, never against the front's concrete request,
so that the server and the proxy can change apart (and be tested apart). An exchange is one
request of a client together with the means to send its response: its head, its body as it
arrives, and the writing of the response, relayed or the balancer's own ``Answer``
(docs/design.md, vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ._keys import RequestView
from ._messages import Answer

if TYPE_CHECKING:
    from ._tunnel import TunnelEnd

#: How a relayed response's body is delimited on the client's connection (``start``):
#: "none" (no body), "length" (its headers carry Content-Length), "chunked" (chunked by the
#: server), "close" (ends when the connection does; for HTTP/1.0 clients).
Framing = str


class RequestHead(RequestView, Protocol):
    """The request line and headers as the client sent them (``RequestView``: what a
    routing key can come from)."""

    @property
    def method(self) -> str: ...
    @property
    def target(self) -> str:
        """The request target as sent (origin form: path and query)."""
        ...

    @property
    def host(self) -> str | None:
        """The Host header; None when the client sent none (HTTP/1.0)."""
        ...

    @property
    def remote(self) -> str | None:
        """The client's address (the access log's)."""
        ...

    @property
    def scheme(self) -> str:
        """ "http" or "https": how the client reached the balancer (X-Forwarded-Proto)."""
        ...

    @property
    def header_lines(self) -> list[bytes]:
        """The headers as wire lines (``_headers.SEP``), passed on as they are."""
        ...

    @property
    def header_items(self) -> list[tuple[str, str]]:
        """The headers decoded, for rewriting."""
        ...

    @property
    def end_to_end(self) -> bool:
        """True when no header needs rewriting (none is hop-by-hop or X-Forwarded-*)."""
        ...


class RequestBodyReader(Protocol):
    """The request body as it arrives (the transport's ``RequestBody``), never held whole."""

    #: The declared Content-Length; None for a chunked body.
    length: int | None

    @property
    def has_body(self) -> bool: ...

    async def read(self) -> bytes:
        """The next piece; ``b""`` at the end. Raises ``ClientDisconnectedError`` if the
        client left mid-body, ``MalformedRequestError`` if the body turned out malformed."""
        ...

    def check(self) -> None:
        """Raise ``MalformedRequestError`` if the body already turned out malformed."""
        ...


class ResponseWriter(Protocol):
    """Sending the response: the balancer's own ``Answer`` whole, or a replica's relayed."""

    def answer(self, answer: Answer) -> None:
        """Send one of the balancer's own answers, whole."""
        ...

    def send_whole(
        self, status: int, reason: str, headers: bytes, body: bytes, framing: Framing
    ) -> None:
        """A relayed response whose body is all at hand, in one write (``headers``: encoded
        header lines)."""
        ...

    def start(self, status: int, reason: str, headers: bytes, framing: Framing) -> None:
        """Send a relayed response's head; ``write`` and ``end`` send its body."""
        ...

    def write(self, data: bytes) -> None: ...
    def end(self) -> None:
        """The body's end (its last chunk, when chunked)."""
        ...

    @property
    def write_paused(self) -> bool:
        """True while the client reads too slowly: ``drain`` before writing more."""
        ...

    async def drain(self) -> None: ...
    def abort(self) -> None:
        """Cut the client's connection: a short response must not pass for a whole one."""
        ...


class Exchange(RequestHead, RequestBodyReader, ResponseWriter, Protocol):
    """One client request being served: its head, its body and its response, and how the
    proxy serves it outside a task (``Proxy.dispatch``) or hands it to one."""

    #: (routing key, upstream header lines) once the proxy made them, so a request handed
    #: from the hot path to a task keeps its key (a random one is drawn once).
    prepared: tuple[str, bytes] | None
    #: Called if the client leaves while the request is served without a task.
    on_disconnect: Callable[[], None] | None
    #: The protocol the client asks to switch to (its Upgrade header), or None.
    upgrade: str | None

    def switch(self, status: int, reason: str, headers: bytes) -> TunnelEnd:
        """Send a 101 response and hand the connection over to a tunnel (raises
        ``ClientDisconnectedError`` if the client is gone)."""
        ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Go on serving this request in a task running ``work``."""
        ...

    def done(self) -> None:
        """The exchange is finished (the response is out, or given up): on to the client's
        next request. (To be named ``finish`` with the front's split: docs/design.md.)"""
        ...
