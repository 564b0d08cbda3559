"""One client request as the application sees it: its head, its body as it arrives, and the
means to answer it. It talks to its connection only through ``ClientSink``."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections.abc import Callable, Coroutine, Iterator, Mapping
from email.utils import formatdate
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

from .._errors import ClientDisconnectedError, MalformedRequestError
from .._flow import ByteQueue
from .._framing import CHUNKED_LINE, LAST_CHUNK, chunked_whole
from .._headers import decode_wire, encode_headers
from .._messages import JSON, Answer, failure
from .._tunnel import TunnelEnd

log = logging.getLogger("lbproxy.front")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class ClientSink(Protocol):
    """What a request may do to the client's connection, and all it may know of it."""

    loop: asyncio.AbstractEventLoop
    #: The client's address and the scheme it came in with ("http" or "https").
    remote: str | None
    scheme: str
    #: The connection is gone: nothing written reaches the client.
    lost: bool

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

    def switch(self, head: bytes) -> TunnelEnd:
        """Send ``head`` (a 101's) and hand the connection over to a tunnel; raises
        ``ClientDisconnectedError`` if the client is gone."""
        ...


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


class Request(ByteQueue):
    """One client request: its head, its body as it arrives (a ``ByteQueue``), and the means
    to answer it. It is also the ``RequestBody`` the transport streams from, and the
    ``RequestView`` key functions read."""

    __slots__ = (
        "_chunked_out",
        "_failure",
        "_sink",
        "_task",
        "body_done",
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
        "upgrade",
    )

    def __init__(
        self,
        sink: ClientSink,
        method: str,
        target: str,
        header_lines: list[bytes],
        first: dict[bytes, bytes],
        host: bytes | None,
        keep_alive: bool,
        http10: bool,
    ) -> None:
        ByteQueue.__init__(self)
        self._sink = sink
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
        #: The protocol asked for (Upgrade) when the request asks to switch (Connection:
        #: upgrade): a 101 answer turns the connection into a tunnel (``switch``).
        self.upgrade: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.cancel_on_disconnect = False
        #: Called if the client goes away while the request is served without a task.
        self.on_disconnect: Callable[[], None] | None = None
        self.started = False  # the answer's head went out
        self.finished = False  # the whole answer went out
        self._chunked_out = False  # the answer's body is being chunked here
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
        return self._sink.remote

    @property
    def scheme(self) -> str:
        return self._sink.scheme

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
        sink = self._sink
        while True:
            if self._failure is not None:
                raise self._failure
            if self._chunks:
                data = self.take()
                sink.body_taken()
                return data
            if self.body_done:
                return b""
            if sink.body_gone:
                raise ClientDisconnectedError("the client left before sending its whole body")
            if self.expect_continue:
                self.expect_continue = False
                sink.write(_CONTINUE)
            await self.wait(sink.loop)

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

    def check(self) -> None:
        """Raise ``MalformedRequestError`` if the body already turned out malformed (before
        anything is sent upstream for it)."""
        if self._failure is not None:
            raise self._failure

    # -- for the connection ------------------------------------------------------------------

    def end_body(self) -> None:
        self.body_done = True
        if self._waiter is not None:  # rarely: only a body streamed by a task waits
            self.wake()

    def fail(self, error: MalformedRequestError) -> None:
        """The body turned out malformed: whoever streams it gets ``error`` at once."""
        self._failure = error
        self.wake()

    def client_left(self) -> bool:
        """The client went away while this request was served; True if the request ends
        here (its task is cancelled instead, and ends it)."""
        self.wake()
        if self.cancel_on_disconnect and self._task is not None:
            self._task.cancel()
            return False
        if self.on_disconnect is not None:
            self.on_disconnect()  # the upstream exchange is dropped, not finished
            return True
        return False

    def cut(self) -> bool:
        """Stop serving (the client stalled); True if a task was cancelled (and its end
        ends the request)."""
        if self._task is not None:
            self._task.cancel()
            return True
        return False

    # -- answering ---------------------------------------------------------------------------

    def _head(self, status: int, reason: str, headers: bytes, extra: bytes) -> bytes:
        if self.keep_alive and (not self.body_done or self._sink.last_answer):
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

    # -- served in a task or without one ----------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None], cancel_on_disconnect: bool = True) -> None:
        """Go on serving this request in a task running ``work``, which answers it; the
        task is cancelled if the client leaves (unless ``cancel_on_disconnect`` is False:
        the admin API's changes are carried out whoever waits for them)."""
        sink = self._sink
        if sink.lost:
            work.close()
            sink.done(self)
            return
        self.cancel_on_disconnect = cancel_on_disconnect
        self._task = sink.loop.create_task(self._serve(work))

    async def _serve(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ClientDisconnectedError:
            pass
        except MalformedRequestError as e:
            if not self.started and not self._sink.lost:
                self.answer(failure(e.message, e.status))
        except Exception:
            log.exception("%s %s failed", self.method, self.target)
            if not self.started and not self._sink.lost:
                self.answer(failure("Internal error in the balancer", 500))
        finally:
            self._sink.done(self)

    def done(self) -> None:
        """The answer is out (or the request is given up): on to the next request."""
        self._sink.done(self)
