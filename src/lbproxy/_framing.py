"""HTTP/1.1 message body framing (RFC 9112 section 6), one implementation for both sides.

Reading: the parser (httptools) undoes the framing; ``BodyFraming`` collects the two header
fields that decide it as a head is parsed and says whether the balancer relays that framing
(only ``chunked`` as a transfer coding, never one on an HTTP/1.0 message). Writing:
``write_chunk`` and ``chunked_whole`` frame a body as the balancer sends it on, whatever it
came in with, so the framing parsed is the framing relayed (no smuggling through a
disagreement between two parsers).
"""

from __future__ import annotations

import asyncio

from ._headers import only_chunked

#: The chunk that ends a chunked body (no trailers are ever sent).
LAST_CHUNK = b"0\r\n\r\n"
CHUNKED_LINE = b"Transfer-Encoding: chunked\r\n"


class BodyFraming:
    """What a message's head says about its body: Content-Length and Transfer-Encoding."""

    __slots__ = ("length", "te")

    def __init__(self) -> None:
        self.length: int | None = None
        #: Every Transfer-Encoding line, joined by commas.
        self.te: bytes | None = None

    def note(self, low: bytes, value: bytes) -> None:
        """A header field of the head, lower-cased name; only the two framing ones count."""
        if low == b"content-length":
            self.length = int(value)  # the parser has checked it is a number, and only one
        elif low == b"transfer-encoding":
            self.te = value if self.te is None else self.te + b"," + value

    def refusal(self, http10: bool) -> str | None:
        """Why the body cannot be relayed as parsed, or None (then a Transfer-Encoding,
        if any, is exactly chunked).

        The one transfer coding relayed exactly is chunked: any other would reach the next
        hop with a framing other than the one parsed here, and on HTTP/1.0 a
        Transfer-Encoding makes the framing faulty (RFC 9112 section 6.1)."""
        te = self.te
        if te is None:
            return None
        if http10:
            return "HTTP/1.0 with a Transfer-Encoding"
        if not only_chunked(te):
            return f"Transfer-Encoding: {te.decode('latin-1')} (only chunked is relayed)"
        return None


def write_chunk(transport: asyncio.WriteTransport, data: bytes) -> None:
    """One chunk of a chunked body; ``b""`` is the last one."""
    transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))


def chunked_whole(body: bytes) -> bytes:
    """A body that is all at hand, chunked: one chunk and the last."""
    return b"%x\r\n%b\r\n%b" % (len(body), body, LAST_CHUNK) if body else LAST_CHUNK
