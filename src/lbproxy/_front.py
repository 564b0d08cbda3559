"""The balancer's HTTP/1.1 server on port 5000: asyncio protocols and httptools' C parser.

Every client connection is one ``_ClientConnection`` protocol. Requests are parsed as bytes
arrive and answered one at a time and in order, so pipelined requests are safe: /rep, /add
and /rm by the admin API in a task; everything else by the proxy, from the parser's callback
when ``Proxy.serve_now`` can (the hot path), else in a task running ``Proxy.handle``.
Request bodies are handed on as they arrive and reading from the client pauses while more
than ``BODY_HIGH_WATER`` bytes wait; answers wait for ``drain`` when the client reads slowly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from email.utils import formatdate
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, unquote

import httptools

from ._admin import MAX_ADMIN_BODY, AdminApi, body_too_large
from ._errors import ClientDisconnectedError, MalformedRequestError
from ._headers import CRLF, REWRITTEN, SEP, decode_wire, encode_headers, only_chunked
from ._messages import JSON, Answer, failure
from ._throttled_log import ThrottledLog

log = logging.getLogger("lbproxy.front")

#: Limits on a request's head; beyond them the client gets 414 or 431 and is disconnected.
MAX_TARGET = 8190
MAX_HEADER_LINE = 8190
MAX_HEADERS = 100
MAX_HEAD = 64 * 1024
#: Reading from a client pauses once this much of its request body waits to be sent on.
BODY_HIGH_WATER = 256 * 1024
#: How long a connection that will be closed keeps reading (and discarding) what the client
#: still sends, so that closing it does not reset the answer the client has yet to read.
LINGER = 2.0

#: Descriptors kept free of clients and of their replica connections: heartbeats, replica
#: processes' pipes, the Docker socket, the config file, the odd one-off.
RESERVED_FDS = 64

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_REWRITTEN = frozenset(h.encode() for h in REWRITTEN)
#: Request headers the connection looks at; the others are passed on untouched.
_NOTED = _REWRITTEN | {b"content-length", b"expect"}
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class _Rejected(Exception):
    """Raised from a parser callback: the request gets this 4xx and the connection ends."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _origin_form(target: bytes, host: bytes | None) -> tuple[bytes, bytes]:
    """(origin-form target, authority) of an absolute-form request target.

    RFC 9112 section 3.2.2: the target's authority is the request's host. Like HAProxy, a Host
    header that names another host is refused rather than have the replica trust a Host that
    the balancer did not route by.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise _Rejected(400, "The request target must be a path or an http(s) URL")
    cut = min(
        (i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0),
        default=len(rest),
    )
    authority, path = rest[:cut], rest[cut:]
    if not authority or b"@" in authority:
        raise _Rejected(400, "The request target's authority must be a host[:port]")
    if host is not None and host.lower() != authority.lower():
        raise _Rejected(400, "The Host header differs from the request target's host")
    if not path.startswith(b"/"):
        path = b"/" + path
    return path, authority


class Headers(Mapping[str, str]):
    """A request's headers as a case-insensitive mapping (first value of a repeated name)."""

    __slots__ = ("_first",)

    def __init__(self, first: dict[bytes, bytes]) -> None:
        self._first = first  # lower-cased name -> value, as parsed

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower().encode("latin-1")].decode("latin-1")

    def get(self, name: str, default: Any = None) -> Any:
        value = self._first.get(name.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower().encode("latin-1") in self._first

    def __iter__(self) -> Iterator[str]:
        return (k.decode("latin-1") for k in self._first)

    def __len__(self) -> int:
        return len(self._first)


class Request:
    """One client request: its head, its body as it arrives, and the means to answer it.

    It is also the ``RequestBody`` the upstream transport streams from, and the
    ``RequestView`` key functions read.
    """

    __slots__ = (
        "_body_waiter",
        "_chunks",
        "_conn",
        "_failure",
        "_task",
        "body_done",
        "buffered",
        "cancel_on_disconnect",
        "chunked",
        "end_to_end",
        "expect_continue",
        "finished",
        "first_values",
        "has_body",
        "header_lines",
        "host",
        "http10",
        "keep_alive",
        "length",
        "method",
        "on_disconnect",
        "prepared",
        "started",
        "target",
    )

    scheme = "http"

    def __init__(
        self,
        conn: _ClientConnection,
        method: str,
        target: str,
        header_lines: list[bytes],
        first: dict[bytes, bytes],
        host: bytes | None,
        keep_alive: bool,
        http10: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.target = target
        #: Wire lines (``_headers.SEP``), passed on as they are when nothing needs rewriting.
        self.header_lines = header_lines
        #: Lower-cased name -> first value, as parsed (what header keys read).
        self.first_values = first
        self.host: str | None = host.decode("latin-1") if host is not None else None
        self.keep_alive = keep_alive
        self.http10 = http10
        self.length: int | None = None
        self.chunked = False
        self.end_to_end = True  # no header that upstream_headers rewrites
        self.has_body = False
        self.expect_continue = False
        self.body_done = False
        self.buffered = 0
        self._chunks: list[bytes] = []
        self._body_waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.cancel_on_disconnect = False
        #: Called if the client goes away while the request is served without a task.
        self.on_disconnect: Callable[[], None] | None = None
        self.started = False  # the answer's head went out
        self.finished = False  # the whole answer went out
        #: The body turned out malformed: ``read`` raises it.
        self._failure: MalformedRequestError | None = None
        #: (routing key, upstream headers) once the proxy made them: a request handed from
        #: the hot path to the general one keeps its key (a random one is drawn only once).
        self.prepared: tuple[str, bytes] | None = None

    # -- what key functions and the proxy read -----------------------------------------------

    @property
    def headers(self) -> Headers:
        return Headers(self.first_values)

    @property
    def header_items(self) -> list[tuple[str, str]]:
        return decode_wire(self.header_lines)

    @property
    def remote(self) -> str | None:
        return self._conn.remote

    @property
    def raw_path(self) -> str:
        """The request target without its query, as sent (not decoded)."""
        return self.target.partition("?")[0]

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    @property
    def query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in parse_qsl(self.target.partition("?")[2], keep_blank_values=True):
            out.setdefault(k, v)
        return out

    @property
    def cookies(self) -> dict[str, str]:
        cookie: SimpleCookie = SimpleCookie()
        for k, v in self.header_items:
            if k.lower() == "cookie":
                with contextlib.suppress(CookieError):
                    cookie.load(v)
        return {k: m.value for k, m in cookie.items()}

    # -- the body (RequestBody) --------------------------------------------------------------

    async def read(self) -> bytes:
        """The next piece of the body; b"" once it is complete."""
        while True:
            if self._failure is not None:
                raise self._failure
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks = []
                self.buffered = 0
                self._conn.update_reading()
                return data
            if self.body_done:
                return b""
            conn = self._conn
            if conn.lost or conn.eof:
                raise ClientDisconnectedError("the client left before sending its whole body")
            if self.expect_continue:
                self.expect_continue = False
                conn.write(_CONTINUE)
            self._body_waiter = waiter = conn.loop.create_future()
            try:
                await waiter
            finally:
                self._body_waiter = None

    async def read_all(self, limit: int) -> bytes | None:
        """The whole body if it is at most ``limit`` bytes, else None (the rest left unread)."""
        if self.length is not None and self.length > limit:
            return None
        data = bytearray()
        while chunk := await self.read():
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self.buffered += len(data)
        self._wake()

    def _wake(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def check(self) -> None:
        """Raise ``MalformedRequestError`` if the body already turned out malformed (before
        anything is sent upstream for it)."""
        if self._failure is not None:
            raise self._failure

    def _fail(self, error: MalformedRequestError) -> None:
        self._failure = error
        self._wake()

    # -- answering ---------------------------------------------------------------------------

    def _head(self, status: int, reason: str, headers: bytes, extra: bytes) -> bytes:
        conn = self._conn
        if self.keep_alive and (
            not self.body_done or (conn.closing and not conn.pending and conn._error is None)
        ):
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
        head = self._head(answer.status, _REASONS.get(answer.status, ""), headers, b"")
        self._conn.write(head if self.method == "HEAD" else head + answer.body)
        self.finished = True

    def send_whole(
        self, status: int, reason: str, headers: bytes, body: bytes, framing: str
    ) -> None:
        """An answer whose body is all at hand, in one write; ``headers`` are encoded header
        lines, ``framing`` as for ``start``."""
        if framing == "chunked" and self.http10:
            head = self._head(status, reason, headers, b"Content-Length: %d\r\n" % len(body))
        elif framing == "chunked":
            head = self._head(status, reason, headers, b"Transfer-Encoding: chunked\r\n")
            body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        else:
            head = self._head(status, reason, headers, b"")
        self._conn.write(head + body if body else head)
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
        extra = b"Transfer-Encoding: chunked\r\n" if framing == "chunked" else b""
        self._conn.chunked = framing == "chunked"
        self._conn.write(self._head(status, reason, headers, extra))

    def write(self, data: bytes) -> None:
        conn = self._conn
        if conn.chunked:
            conn.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            conn.write(data)

    def end(self) -> None:
        conn = self._conn
        if conn.chunked:
            conn.write(b"0\r\n\r\n")
            conn.chunked = False
        self.finished = True

    @property
    def write_paused(self) -> bool:
        return self._conn.write_paused

    async def drain(self) -> None:
        await self._conn.drain()

    def abort(self) -> None:
        """Cut the client's connection: a short answer must not pass for a complete one."""
        self._conn.abort()

    # -- served without a task (Proxy.serve_now) ---------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Go on serving this request in a task running ``work``."""
        conn = self._conn
        if conn.lost:
            work.close()
            conn.finish(self)
            return
        self.cancel_on_disconnect = True
        self._task = conn.loop.create_task(conn.serve(self, work))

    def done(self) -> None:
        """The answer is out (or the request is given up): on to the next request."""
        self._conn.finish(self)


class _ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_chunked",
        "_closed",
        "_discarding",
        "_drain",
        "_end_to_end",
        "_error",
        "_expect",
        "_first",
        "_head_size",
        "_idle_since",
        "_io_since",
        "_length",
        "_lines",
        "_requests",
        "_resumes",
        "_rx",
        "_seen",
        "_target",
        "_te",
        "_timer",
        "chunked",
        "closing",
        "current",
        "eof",
        "front",
        "loop",
        "lost",
        "parser",
        "parsing",
        "pending",
        "read_paused",
        "remote",
        "transport",
        "write_paused",
    )

    def __init__(self, front: Front) -> None:
        self.front = front
        self.loop = front.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.current: Request | None = None
        self.pending: collections.deque[Request] = collections.deque()
        self.parsing: Request | None = None
        self.closing = False  # no more requests: after the current answer, close
        self.lost = False
        self.eof = False  # the client sent EOF: it may still read
        self.write_paused = False
        self.read_paused = False
        self.chunked = False
        self._discarding = False  # input is ignored from now on
        self._closed = False
        self._drain: asyncio.Future[None] | None = None
        self._error: Answer | None = None  # a 400/414/431 to send once the current answer ends
        self._target = b""
        self._lines: list[bytes] = []
        self._first: dict[bytes, bytes] = {}
        self._head_size = 0
        self._length: int | None = None
        self._chunked = False
        self._te: bytes | None = None
        self._expect = False
        self._end_to_end = True
        self._requests = 0
        self._rx = 0  # data_received calls: progress of a client sending a request body
        self._resumes = 0  # resume_writing calls: progress of a client reading an answer
        self._timer: asyncio.TimerHandle | None = None
        self._seen = (0, 0, 0)  # (_requests, _rx, _resumes) at the last tick
        self._io_since = self._idle_since = self.loop.time()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        front = self.front
        if len(front.connections) >= front.max_connections:
            # Out of descriptors soon: a clear answer now, and the rest kept for replica
            # connections and heartbeats (which starve first when clients take them all).
            self.lost = self._discarding = True
            transport.write(_plain_answer(_BUSY))  # type: ignore[attr-defined]
            transport.close()
            front.notes.warning(
                "clients",
                "refused",
                "refusing client connections: %d are open, the most allowed "
                "(proxy.max_client_connections)",
                len(front.connections),
            )
            return
        front.connections.add(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self._rx += 1
        if self._discarding:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades are not offered (Upgrade is hop-by-hop and dropped): the request is
            # answered as a plain one, and what follows its head is not HTTP/1.1, so the
            # connection ends after the answer.
            self._discarding = True
            self.closing = True
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _Rejected):
                self._malformed(cause.message, cause.status)
            else:
                log.error("serving a request failed", exc_info=cause)
                self.abort()
        except httptools.HttpParserError as e:
            self._malformed(f"Malformed HTTP request: {e}", 400)

    def eof_received(self) -> bool | None:
        # The client finished sending; answers to what it asked for still go out.
        self.eof = True
        self.closing = True
        if self.parsing is not None:
            self.parsing._wake()  # a body cut short
        if self.current is None:
            self.transport.close()  # type: ignore[union-attr]
        return True  # keep our side open until the answers are written

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closing = True
        self.front.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for req in (self.parsing, self.current, *self.pending):
            if req is not None:
                req._wake()
        self.pending.clear()
        current = self.current
        if current is not None:
            if current.cancel_on_disconnect and current._task is not None:
                current._task.cancel()
            elif current.on_disconnect is not None:
                current.on_disconnect()  # the upstream exchange is dropped, not finished
                self.finish(current)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ClientDisconnectedError("the client went away"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resumes += 1
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target = b""
        self._lines = []
        self._first = {}
        self._head_size = 0
        self._length = None
        self._chunked = False
        self._te = None
        self._expect = False
        self._end_to_end = True

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > MAX_TARGET:
            raise _Rejected(414, f"Request target is longer than {MAX_TARGET} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head_size += size + 4
        lines = self._lines
        if size > MAX_HEADER_LINE or self._head_size > MAX_HEAD or len(lines) >= 4 * MAX_HEADERS:
            raise _Rejected(
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
            raise _Rejected(400, "A request must have exactly one Host header")
        if low in _NOTED:
            if low in _REWRITTEN:
                self._end_to_end = False
            if low == b"content-length":
                self._length = int(value)  # the parser has checked it is a number, and only one
            elif low == b"transfer-encoding":
                self._te = value if self._te is None else self._te + b"," + value
            elif low == b"expect":
                self._expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        parser = self.parser
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
                    raise _Rejected(505, f"HTTP/{version} is not supported")
                raise _Rejected(400, f"HTTP/{version} is not supported")
            http10 = version == "1.0"
        te = self._te
        if te is not None:
            # The only transfer coding relayed exactly is chunked; anything else would reach
            # the replica with a framing other than the one parsed here (HAProxy: 400 too).
            if http10:  # RFC 9112 section 6.1: the framing of such a message is faulty
                raise _Rejected(400, "An HTTP/1.0 request cannot have a Transfer-Encoding")
            if not only_chunked(te):
                raise _Rejected(400, "Transfer-Encoding other than chunked is not supported")
            self._chunked = True
        first = self._first
        host = first.get(b"host")
        target = self._target
        if host is None and not http10:  # RFC 9112 section 3.2, even in absolute-form
            raise _Rejected(400, "An HTTP/1.1 request must have a Host header")
        # Not "/...": absolute-form (or "*", or CONNECT's authority, answered 405 later).
        if target[0] != 0x2F and target != b"*" and parser.get_method() != b"CONNECT":
            target, authority = _origin_form(target, host)
            if host is None:  # HTTP/1.0: the URL names the host
                host = first[b"host"] = authority
                self._lines += (b"Host", SEP, authority, CRLF)
        if not self._end_to_end and (self._chunked or self._length) and parser.should_upgrade():
            # The parser stops at the end of such a head: the body would be taken for
            # another protocol's bytes. Upgrades are never made here, so no body can follow.
            raise _Rejected(400, "A request that asks to upgrade cannot have a body")
        req = Request(
            self,
            parser.get_method().decode("latin-1"),
            target.decode("latin-1"),
            self._lines,
            first,
            host,
            keep_alive,
            http10,
        )
        if self._chunked:
            req.chunked = req.has_body = True
        elif self._length:
            req.length = self._length
            req.has_body = True
        req.expect_continue = self._expect and req.has_body and not req.http10
        req.end_to_end = self._end_to_end
        self.parsing = req
        if self.current is None:
            self._start(req)
        else:
            self.pending.append(req)  # pipelined: answered after the ones before it
            self.update_reading()

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is not None:
            req._feed(body)
            if req.buffered > BODY_HIGH_WATER and not self.read_paused:
                self.update_reading()

    def on_message_complete(self) -> None:
        req = self.parsing
        if req is not None:
            self.parsing = None
            req.body_done = True
            if req._body_waiter is not None:  # rarely: only a body streamed by a task waits
                req._wake()

    # -- serving -----------------------------------------------------------------------------

    def _start(self, req: Request) -> None:
        self.current = req
        self._requests += 1
        front = self.front
        if req.method == "CONNECT":
            req.answer(failure("CONNECT is not supported", 405, {"Allow": _ALLOW}))
            self.finish(req)
        elif req.raw_path in front.admin.routes:
            req._task = self.loop.create_task(self.serve(req, front.admin_request(req)))
        elif not front.serve_now(req):
            req.cancel_on_disconnect = True
            req._task = self.loop.create_task(self.serve(req, front.proxy(req)))

    async def serve(self, req: Request, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``, which answers ``req``, then go on to the next request."""
        try:
            await work
        except ClientDisconnectedError:
            pass
        except MalformedRequestError as e:
            if not req.started and not self.lost:
                req.answer(failure(e.message, e.status))
                self.front.own_answer(e.status)
        except Exception:
            log.exception("%s %s failed", req.method, req.target)
            if not req.started and not self.lost:
                req.answer(failure("Internal error in the balancer", 500))
        finally:
            self.finish(req)

    def finish(self, req: Request) -> None:
        if self.current is not req:
            return
        self.current = None
        if self.lost:
            return
        if not req.finished:
            self.abort()
        elif self.pending and req.keep_alive:
            self._start(self.pending.popleft())
            self.update_reading()
        elif self._error is not None:
            self._reject(self._error)  # what could not be parsed, after what could
        elif not req.keep_alive or self.closing:
            self._close()
        elif self.read_paused or self.parsing is not None:
            # Nothing is pending here, so reading needs no change unless it is paused or a
            # request body is being read: the usual keep-alive request skips the call.
            self.update_reading()

    def update_reading(self) -> None:
        """Read from the client unless requests or body bytes are piling up unanswered."""
        if self.lost or self.transport is None:
            return
        req = self.parsing
        pause = bool(self.pending) or (req is not None and req.buffered > BODY_HIGH_WATER)
        if pause != self.read_paused:
            self.read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _malformed(self, message: str, status: int) -> None:
        """The parser gave up: on a head (that request gets the 4xx), or on the body or
        trailers of a request whose head was taken already. Either way the connection ends:
        nothing after the error can be framed."""
        req = self.parsing
        if req is None:
            self._reject(failure(message, status))
            return
        self.parsing = None
        self.closing = self._discarding = True
        self.front.notes.info(
            "clients", "malformed", "%s %s: malformed request: %s", req.method, req.target, message
        )
        if req is self.current:
            if req.started:
                self.abort()  # too late for a 400; connection_lost drops the upstream side
            else:
                # Whoever streams the body gets this error at once: the replica's
                # connection is reset (never reused), the client gets the 4xx.
                req._fail(MalformedRequestError(message, status))
        else:  # pipelined, not started: it never goes anywhere; the 4xx after the ones before
            with contextlib.suppress(ValueError):
                self.pending.remove(req)
            self._error = failure(message, status)

    def _reject(self, answer: Answer) -> None:
        """Answer a request that could not be parsed, then hang up."""
        self.closing = True
        self._discarding = True
        self.parsing = None
        if self.current is not None:
            self._error = answer  # after the answers to the requests before it
            return
        self._error = None
        self.write(_plain_answer(answer))
        self.front.own_answer(answer.status)
        self._close()

    def _close(self) -> None:
        """Close after what was written is sent; keep discarding input for a while so the
        kernel does not reset the connection under an answer not yet read."""
        if self.lost or self.transport is None or self._closed:
            return
        self._closed = self._discarding = True
        if self.eof:
            self.transport.close()
            return
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            try:
                self.transport.write_eof()
            except OSError:  # the client is gone already (asyncio's transport says so here)
                self.transport.close()
                return
            self.loop.call_later(LINGER, self._hard_close)
        else:
            self.transport.close()

    def _hard_close(self) -> None:
        if not self.lost and self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def writelines(self, data: tuple[bytes, ...]) -> None:
        if not self.lost and self.transport is not None:
            self.transport.writelines(data)

    async def drain(self) -> None:
        if self.lost:
            raise ClientDisconnectedError("the client went away")
        if self.write_paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- idle and stalled connections ----------------------------------------------------------

    def _arm_timer(self) -> None:
        self._timer = self.loop.call_later(self.front.tick, self._on_timer)

    def _on_timer(self) -> None:
        # One coarse timer per connection, never touched per request: a busy connection
        # costs no timer work. Activity is noticed at the next tick, so a limit is enforced
        # at most two ticks (half the smaller limit) late, never early.
        self._timer = None
        if self.lost:
            return
        now = self.loop.time()
        seen = (self._requests, self._rx, self._resumes)
        if seen[0] != self._seen[0] or self.current is not None:
            self._idle_since = now
        if seen[1:] != self._seen[1:]:
            self._io_since = now
        self._seen = seen
        front = self.front
        if self.current is None and not self.write_paused:
            if now - self._idle_since >= front.idle_timeout:
                self._close()
                return
        elif self._waiting_on_client() and now - self._io_since >= front.client_timeout:
            self._cut_stalled()
            return
        self._arm_timer()

    def _waiting_on_client(self) -> bool:
        """Whether the client holds things up: it does not read the answer, or it does not
        send the rest of a request body that the balancer is ready to read."""
        if self.write_paused:
            return True
        req = self.parsing
        return req is not None and req is self.current and not self.read_paused

    def _cut_stalled(self) -> None:
        """A client stalled mid-request for ``client_timeout``: free the replica's connection
        and the client's; 408 if none of the answer went out yet."""
        req = self.current
        if req is None or req.started:
            self.abort()  # connection_lost drops the upstream exchange
            return
        self.front.notes.info(
            "clients", "stalled", "%s %s: client stalled mid-request; 408", req.method, req.target
        )
        self.closing = True
        self._discarding = True
        req.keep_alive = False
        req.answer(
            failure(
                f"The request was not received in time (nothing for "
                f"{self.front.client_timeout:g}s)",
                408,
            )
        )
        if req._task is not None:
            req._task.cancel()  # its ending (serve's finally) closes the connection
        else:
            self.finish(req)

    def shutdown(self) -> None:
        """Shutting down: no more requests; an idle connection closes now."""
        self.closing = True
        if self.current is None:
            self._close()


_BUSY = failure("The balancer has too many client connections", 503, {"Retry-After": "1"})


def default_max_connections() -> int:
    """Client connections allowed by the open-files limit: each may hold one replica
    connection too (and the replica connections it leaves idle), and ``RESERVED_FDS`` are
    kept for the rest."""
    try:
        import resource
    except ImportError:  # not POSIX: no such limit to read
        return 1 << 20
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, (soft - RESERVED_FDS) // 2)


def _plain_answer(answer: Answer) -> bytes:
    head = encode_headers(
        [
            ("Content-Type", JSON),
            ("Content-Length", str(len(answer.body))),
            *answer.headers,
            ("Connection", "close"),
        ]
    )
    status = f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, '')}\r\n"
    return status.encode("latin-1") + head + b"\r\n" + answer.body


def _ignore(status: int) -> None:
    return None


class Front:
    """The HTTP server on the balancer's port, owned and closed by ``Server``."""

    def __init__(
        self,
        admin: AdminApi,
        proxy: Callable[[Request], Coroutine[Any, Any, None]],
        serve_now: Callable[[Request], bool],
        idle_timeout: float,
        client_timeout: float,
        max_connections: int | None = None,
    ) -> None:
        self.admin = admin
        #: The general path (a coroutine per request) and the hot one (True if it took it).
        self.proxy = proxy
        self.serve_now = serve_now
        self.idle_timeout = idle_timeout
        self.client_timeout = client_timeout
        #: How often each connection checks both limits (see _ClientConnection._on_timer).
        self.tick = min(idle_timeout, client_timeout) / 4
        self.connections: set[_ClientConnection] = set()
        #: Beyond this many client connections, new ones get a 503 and are closed.
        self.max_connections = max_connections or default_max_connections()
        #: Per-request notes (stalled, malformed, refused) said once per event, with counts.
        self.notes = ThrottledLog(log)
        #: Told the status of each answer of the balancer's own to a request it could not
        #: take (malformed: 400, 414, 431, 505), for the metrics (``Stats.own``).
        self.own_answer: Callable[[int], None] = _ignore
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None

    async def start(self, sock: Any, backlog: int = 1024) -> None:
        sock.listen(backlog)
        self._server = await self.loop.create_server(
            lambda: _ClientConnection(self), sock=sock, backlog=backlog
        )

    async def admin_request(self, req: Request) -> None:
        path = req.raw_path
        denied = self.admin.refuse(path, req.method, req.headers.get("Authorization"))
        if denied is not None:
            req.answer(denied)
            return
        body = await req.read_all(MAX_ADMIN_BODY)
        if body is None:
            req.answer(body_too_large())
            return
        req.answer(await self.admin.handle(path, body))

    async def close(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let answers under way finish (up to
        ``timeout``), then cut what is left."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + timeout
        while any(c.current is not None for c in self.connections):
            if time.monotonic() > deadline:
                log.warning("cutting %d answers still under way", len(self.connections))
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        await server.wait_closed()
