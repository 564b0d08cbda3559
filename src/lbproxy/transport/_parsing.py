"""httptools' callbacks for a replica connection: an answer's head and body as they arrive,
checked for a framing the balancer relays exactly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools
from mypy_extensions import trait

from .._errors import UpstreamProtocolError
from .._flow import FlowControl
from .._framing import BodyFraming
from .._headers import CRLF, HOP_BY_HOP, SEP

if TYPE_CHECKING:
    from ._httptools import _HostPool, _Response

#: Reading from a replica pauses once this much of its answer waits for the client.
HIGH_WATER = 256 * 1024

_HOP_BY_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
#: Answer headers the connection looks at; the others are passed on untouched.
_NOTED = _HOP_BY_HOP | {b"content-length"}
#: No slots of its own (``_Connection`` has them), named rather than spelled ``()`` so that
#: mypy (and so mypyc) does not take the mixin's attributes for undeclared ones.
_MIXIN_SLOTS: tuple[str, ...] = ()


@trait  # compiled (mypyc): ``_Connection`` stays a native class with it as a base
class AnswerParsing:
    """The parser callbacks of ``_Connection`` (a mixin: the hot path costs no extra hop)."""

    __slots__ = _MIXIN_SLOTS

    _exchange: _Response | None
    _status: bytes
    _interim: bool
    _framing: BodyFraming
    parser: httptools.HttpResponseParser
    pool: _HostPool
    keep_alive: bool
    flow: FlowControl | None

    def _complete(self, ex: _Response) -> None:
        ex.complete = True
        if ex.waiter is not None:
            ex.wake()

    def abort(self) -> None:
        raise NotImplementedError

    def on_message_begin(self) -> None:
        self._status = b""
        framing = self._framing  # reset inline: once per answer
        framing.length = framing.te = None
        ex = self._exchange
        if ex is not None:
            ex.header_lines = []
            ex.length = None
            ex.end_to_end = True

    def on_status(self, status: bytes) -> None:
        self._status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.head_done:
            # After the head: a trailer field of a chunked answer. Dropped, never made a
            # head field (the client gets the balancer's own chunked framing, without them).
            return
        ex.header_lines += (name, SEP, value, CRLF)
        low = name.lower()
        if low in _NOTED:
            if low == b"content-length":  # the usual one, set here: a call saved per answer
                self._framing.length = int(value)  # the parser has checked it
            else:
                self._framing.note(low, value)
            if low in _HOP_BY_HOP:
                ex.end_to_end = False

    def on_headers_complete(self) -> None:
        ex = self._exchange
        if ex is None:
            return
        status = self.parser.get_status_code()
        if status == 101 and ex.upgrade:
            # Switched: no body, and the connection is never HTTP again (``detach``).
            ex.status = status
            ex.reason = self._status.decode("latin-1")
            ex.head_done = True
            ex.has_body = False
            self.keep_alive = False
            self._complete(ex)
            return
        if 100 <= status < 200:
            if status == 101:
                ex.fail(UpstreamProtocolError(f"{self.pool.address} switched protocols"))
                self.abort()
            self._interim = True  # an interim answer (103 Early Hints...): wait for the final
            return
        framing = self._framing
        refusal = (
            framing.refusal(self.parser.get_http_version() == "1.0")
            if framing.te is not None
            else None
        )
        if refusal is not None:
            # The body is relayed chunked as the balancer parsed it: a coding on top of
            # chunked (gzip, chunked) would be lost on the way.
            ex.fail(UpstreamProtocolError(f"{self.pool.address} sent an answer with {refusal}"))
            self.abort()
            return
        ex.length = framing.length
        ex.status = status
        ex.reason = self._status.decode("latin-1")
        ex.head_done = True
        self.keep_alive = self.parser.should_keep_alive()
        if ex.head_only or status == 204 or status == 304:
            ex.has_body = False
        if ex.head_only:
            # httptools cannot be told that a HEAD answer has no body: the answer ends here,
            # and the next exchange on this connection gets a fresh parser.
            self.parser = httptools.HttpResponseParser(self)
            self._complete(ex)
        elif ex.has_body and framing.length is None and framing.te is None:
            ex.close_delimited = True
            self.keep_alive = False
        # Checked here rather than by calling wake/wake_writer: on the hot path nobody waits.
        if ex.waiter is not None:
            ex.wake()
        if self.flow.drain_waiter is not None:  # type: ignore[union-attr]
            self.flow.wake_writer()  # type: ignore[union-attr]  # the replica answered: stop

    def on_body(self, body: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.complete:
            self.keep_alive = False  # more than the answer said it would be
            return
        # ByteQueue.push inlined: once per answer on the hot path.
        ex._chunks.append(body)
        ex.queued += len(body)
        if ex.waiter is not None:
            ex.wake()
        if ex.queued > HIGH_WATER:
            self.flow.pause_reading()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        ex = self._exchange
        if ex is not None and not ex.complete:
            self._complete(ex)
