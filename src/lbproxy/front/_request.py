"""One client request as the application sees it: its head (``HeadView``), its body as it
arrives (a ``ByteQueue``), and the means to answer it (``Answering``). It talks to its
connection only through ``ClientSink``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .._errors import ClientDisconnectedError, MalformedRequestError
from .._flow import ByteQueue
from .._messages import failure
from ._answer import Answering
from ._sink import ClientSink
from ._view import HeadView

log = logging.getLogger("lbproxy.front")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Request(ByteQueue, HeadView, Answering):
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
        # An empty ByteQueue, set here rather than by calling its __init__: 0.4 µs less per
        # request (python -m bench.hotpath).
        self._chunks, self.queued, self.waiter = [], 0, None
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
    def remote(self) -> str | None:
        return self._sink.remote

    @property
    def scheme(self) -> str:
        return self._sink.scheme

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
                self._sink.own_answer(e.status)
        except Exception:
            log.exception("%s %s failed", self.method, self.target)
            if not self.started and not self._sink.lost:
                self.answer(failure("Internal error in the balancer", 500))
        finally:
            self._sink.done(self)

    def done(self) -> None:
        """The answer is out (or the request is given up): on to the next request."""
        self._sink.done(self)
