"""Writing a request's answer: a whole one of the balancer's own, a relayed one whole or
streamed, or a 101 that turns the connection into a tunnel."""

from __future__ import annotations

import http
from email.utils import formatdate

from mypy_extensions import trait

from .._framing import CHUNKED_LINE, LAST_CHUNK, chunked_whole
from .._headers import encode_headers
from .._messages import JSON, Answer
from .._tunnel import TunnelEnd
from ._sink import ClientSink

REASONS = {s.value: s.phrase for s in http.HTTPStatus}
#: No slots of its own (the class using the mixin has them), named rather than spelled ``()``
#: so that mypy (and so mypyc) does not take the mixin's attributes for undeclared ones.
_MIXIN_SLOTS: tuple[str, ...] = ()


@trait  # compiled (mypyc), ``Request`` may have only one base that is not a trait
class Answering:
    """The answer side of ``Request``: one answer per request, its head framed here."""

    __slots__ = _MIXIN_SLOTS

    _sink: ClientSink
    method: str
    keep_alive: bool
    http10: bool
    body_done: bool
    started: bool  # the answer's head went out
    finished: bool  # the whole answer went out
    _chunked_out: bool  # the answer's body is being chunked here

    def _head(self, status: int, reason: str, headers: bytes, extra: bytes) -> bytes:
        sink = self._sink
        if self.keep_alive and (not self.body_done or (sink.closing and sink.last_answer)):
            # The body was not read to its end, or no more requests will be read (an error
            # answer still to come says "close" itself: nothing may follow a "close").
            self.keep_alive = False
        if not self.keep_alive:
            extra += b"Connection: close\r\n"
        elif self.http10:
            extra += b"Connection: keep-alive\r\n"
        self.started = True
        return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, reason.encode("latin-1"), headers, extra)

    def answer(self, answer: Answer) -> None:
        """Send one of the balancer's own (JSON) answers, whole."""
        headers = encode_headers(
            [
                ("Content-Type", JSON),
                ("Content-Length", str(len(answer.body))),
                ("Date", formatdate(usegmt=True)),
                *answer.headers,
            ]
        )
        head = self._head(answer.status, REASONS.get(answer.status, ""), headers, b"")
        self._sink.write(head if self.method == "HEAD" else head + answer.body)
        self.finished = True

    def send_whole(
        self, status: int, reason: str, headers: bytes, body: bytes, framing: str
    ) -> None:
        """An answer whose body is all at hand, in one write; ``headers`` are encoded header
        lines, ``framing`` as for ``start``."""
        if framing == "chunked" and self.http10:
            head = self._head(status, reason, headers, b"Content-Length: %d\r\n" % len(body))
        elif framing == "chunked":
            head = self._head(status, reason, headers, CHUNKED_LINE)
            body = chunked_whole(body)
        else:
            head = self._head(status, reason, headers, b"")
        self._sink.write(head + body if body else head)
        self.finished = True

    def start(self, status: int, reason: str, headers: bytes, framing: str) -> None:
        """Send an answer's head (``headers``: encoded lines); ``write`` and ``end`` send its
        body.

        ``framing``: "none" (no body), "length" (the headers carry Content-Length), "chunked"
        (to be chunked here), "close" (ends when the connection does; for HTTP/1.0 clients).
        """
        if framing == "chunked" and self.http10:
            framing = "close"
        if framing == "close":
            self.keep_alive = False
        self._chunked_out = framing == "chunked"
        extra = CHUNKED_LINE if self._chunked_out else b""
        self._sink.write(self._head(status, reason, headers, extra))

    def write(self, data: bytes) -> None:
        if self._chunked_out:
            self._sink.write_chunk(data)
        else:
            self._sink.write(data)

    def end(self) -> None:
        if self._chunked_out:
            self._sink.write(LAST_CHUNK)
            self._chunked_out = False
        self.finished = True

    def switch(self, status: int, reason: str, headers: bytes) -> TunnelEnd:
        """Send a 101 answer (``headers``: encoded lines, with its Connection and Upgrade):
        from now on the connection is one end of a tunnel, never HTTP again."""
        self.keep_alive = False
        self.started = self.finished = True
        head = b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason.encode("latin-1"), headers)
        return self._sink.switch(head)

    @property
    def write_paused(self) -> bool:
        return self._sink.write_paused

    async def drain(self) -> None:
        await self._sink.drain()

    def abort(self) -> None:
        """Cut the client's connection: a short answer must not pass for a complete one."""
        self._sink.abort()
