"""httptools' callbacks for one client connection: a request head becomes a ``Request``
(or a refusal, ``Rejected``), its body is queued on it as it arrives."""

from __future__ import annotations

from typing import Protocol

import httptools

from .._framing import BodyFraming
from .._headers import CRLF, REWRITTEN, SEP
from ._request import Request
from ._sink import ClientSink

#: Limits on a request's head; beyond them the client gets 414 or 431 and is disconnected.
MAX_TARGET = 8190
MAX_HEADER_LINE = 8190
MAX_HEADERS = 100
MAX_HEAD = 64 * 1024

_REWRITTEN = frozenset(h.encode() for h in REWRITTEN)
#: Request headers the parser looks at; the others are passed on untouched.
_NOTED = _REWRITTEN | {b"content-length", b"expect"}


class Rejected(Exception):
    """Raised from a parser callback: the request gets this 4xx and the connection ends."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class HeadReceiver(ClientSink, Protocol):
    """The connection, as the parser hands it what it parsed."""

    #: The request being answered, if any.
    current: Request | None

    def start(self, request: Request) -> None:
        """A request's head is in (its body may follow), and nothing is being answered."""
        ...

    def queue(self, request: Request) -> None:
        """A request's head is in, behind the one being answered (pipelined)."""
        ...

    def body_queued(self, request: Request) -> None:
        """More of ``request``'s body is queued (reading may have to pause)."""
        ...


def origin_form(target: bytes, host: bytes | None) -> tuple[bytes, bytes]:
    """(origin-form target, authority) of an absolute-form request target.

    RFC 9112 section 3.2.2: the target's authority is the request's host. Like HAProxy, a Host
    header that names another host is refused rather than have the replica trust a Host that
    the balancer did not route by.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise Rejected(400, "The request target must be a path or an http(s) URL")
    cut = min(
        (i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0),
        default=len(rest),
    )
    authority, path = rest[:cut], rest[cut:]
    if not authority or b"@" in authority:
        raise Rejected(400, "The request target's authority must be a host[:port]")
    if host is not None and host.lower() != authority.lower():
        raise Rejected(400, "The Host header differs from the request target's host")
    if not path.startswith(b"/"):
        path = b"/" + path
    return path, authority


class RequestParser:
    """Parses one connection's requests; ``parsing`` is the one whose body is coming in."""

    __slots__ = (
        "_end_to_end",
        "_expect",
        "_first",
        "_framing",
        "_head_size",
        "_lines",
        "_parser",
        "_receiver",
        "_target",
        "feed",
        "parsing",
    )

    def __init__(self, receiver: HeadReceiver) -> None:
        self._receiver = receiver
        self._parser = httptools.HttpRequestParser(self)
        #: ``feed(data)`` parses what arrived (the C method itself: no Python frame). It
        #: raises httptools' errors: ``HttpParserUpgrade`` (its offset: where the other
        #: protocol's bytes start), ``HttpParserCallbackError`` (from ``Rejected``, its
        #: ``__context__``), ``HttpParserError`` (malformed).
        self.feed = self._parser.feed_data
        self.parsing: Request | None = None
        self._target = b""
        self._lines: list[bytes] = []
        self._first: dict[bytes, bytes] = {}
        self._head_size = 0
        self._framing = BodyFraming()
        self._expect = False
        self._end_to_end = True

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target = b""
        self._lines = []
        self._first = {}
        self._head_size = 0
        framing = self._framing  # reset inline: once per request
        framing.length = framing.te = None
        self._expect = False
        self._end_to_end = True

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > MAX_TARGET:
            raise Rejected(414, f"Request target is longer than {MAX_TARGET} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head_size += size + 4
        lines = self._lines
        if size > MAX_HEADER_LINE or self._head_size > MAX_HEAD or len(lines) >= 4 * MAX_HEADERS:
            raise Rejected(
                431,
                f"Request headers are too large (at most {MAX_HEADERS} headers, "
                f"{MAX_HEADER_LINE} bytes each, {MAX_HEAD} bytes in all)",
            )
        if self.parsing is not None:
            # A trailer field of a chunked body (the head went on already): dropped, never
            # made a head field. The replica gets the body's framing from the balancer,
            # which ends it without trailers (as Envoy does by default).
            return
        lines += (name, SEP, value, CRLF)
        low = name.lower()
        first = self._first
        if low not in first:
            first[low] = value
        elif low == b"host":  # RFC 9112 section 3.2: which one would the replica believe?
            raise Rejected(400, "A request must have exactly one Host header")
        if low in _NOTED:
            if low in _REWRITTEN:
                self._end_to_end = False
            if low == b"expect":
                self._expect = value.lower() == b"100-continue"
            else:
                self._framing.note(low, value)

    def on_headers_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        # get_http_version formats a string (~0.1 us). Without a Connection (or
        # Proxy-Connection) header, only HTTP/1.1 keeps a connection alive, so the usual
        # request needs no version check.
        if keep_alive and self._end_to_end:
            http10 = False
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":  # the parser knows 0.9 and 2.0 too
                if version > "2":
                    raise Rejected(505, f"HTTP/{version} is not supported")
                raise Rejected(400, f"HTTP/{version} is not supported")
            http10 = version == "1.0"
        framing = self._framing
        refusal = framing.refusal(http10) if framing.te is not None else None
        if refusal is not None:  # HAProxy refuses these with a 400 too
            raise Rejected(400, f"A request's body framing is not relayed: {refusal}")
        first = self._first
        host = first.get(b"host")
        target = self._target
        if host is None and not http10:  # RFC 9112 section 3.2, even in absolute-form
            raise Rejected(400, "An HTTP/1.1 request must have a Host header")
        method = parser.get_method()
        # Not "/...": absolute-form (or "*", or CONNECT's authority, answered 405 later).
        if target[0] != 0x2F and target != b"*" and method != b"CONNECT":
            target, authority = origin_form(target, host)
            if host is None:  # HTTP/1.0: the URL names the host
                host = first[b"host"] = authority
                self._lines += (b"Host", SEP, authority, CRLF)
        upgrade = not self._end_to_end and parser.should_upgrade()
        if upgrade and (framing.te is not None or framing.length):
            # The parser stops at the end of such a head: the body would be taken for
            # another protocol's bytes, so no body can come with an upgrade.
            raise Rejected(400, "A request that asks to upgrade cannot have a body")
        req = Request(
            self._receiver,
            method.decode("latin-1"),
            target.decode("latin-1"),
            self._lines,
            first,
            host,
            keep_alive,
            http10,
        )
        if framing.te is not None:  # chunked: refusal let nothing else through
            req.chunked = req.has_body = True
        elif framing.length:
            req.length = framing.length
            req.has_body = True
        req.expect_continue = self._expect and req.has_body and not http10
        req.end_to_end = self._end_to_end
        if upgrade and method != b"CONNECT":
            value = first.get(b"upgrade")
            req.upgrade = value.decode("latin-1") if value is not None else None
        self.parsing = req
        receiver = self._receiver
        if receiver.current is None:
            receiver.start(req)
        else:
            receiver.queue(req)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is not None:
            req.push(body)
            self._receiver.body_queued(req)

    def on_message_complete(self) -> None:
        req = self.parsing
        if req is not None:
            self.parsing = None
            req.body_done = True  # Request.end_body inlined: once per request
            if req.waiter is not None:  # rarely: only a body streamed by a task waits
                req.wake()
