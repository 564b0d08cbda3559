"""What a client connection does when its parser stops: a request that asks to upgrade, a
head refused (4xx), a body found malformed after its head went on."""

from __future__ import annotations

import collections
import contextlib
import logging
from typing import TYPE_CHECKING

import httptools
from mypy_extensions import trait

from .._errors import MalformedRequestError
from .._flow import FlowControl
from .._messages import Answer, failure
from ._parser import Rejected, RequestParser
from ._request import Request
from ._wire import plain_answer

if TYPE_CHECKING:
    from ._server import Front

log = logging.getLogger("lbproxy.front")


#: No slots of its own (``ClientConnection`` has them), named rather than spelled ``()`` so
#: that mypy (and so mypyc) does not take the mixin's attributes for undeclared ones.
_MIXIN_SLOTS: tuple[str, ...] = ()


@trait  # compiled (mypyc): ``ClientConnection`` stays a native class with it as a base
class Refusals:
    """The parse-failure side of ``ClientConnection`` (a mixin)."""

    __slots__ = _MIXIN_SLOTS

    front: Front
    parser: RequestParser
    flow: FlowControl | None
    current: Request | None
    pending: collections.deque[Request]
    _early: bytes | None
    _error: Answer | None

    def stop_reading(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _parse_stopped(self, e: Exception, data: bytes) -> None:
        if isinstance(e, httptools.HttpParserUpgrade):
            # What follows the head is not HTTP/1.1: no more requests are read. A request
            # asking to upgrade keeps those bytes (and reading pauses) for the tunnel a 101
            # answer makes; if it gets another answer, the connection ends after it.
            self.stop_reading()
            last = self.pending[-1] if self.pending else self.current
            if last is not None and last.upgrade is not None:
                self._early = data[e.args[0] :]
                self.flow.pause_reading()  # type: ignore[union-attr]
        elif isinstance(e, httptools.HttpParserCallbackError):
            cause = e.__context__
            if isinstance(cause, Rejected):
                self._malformed(cause.message, cause.status)
            else:
                log.error("serving a request failed", exc_info=cause)
                self.abort()
        else:
            self._malformed(f"Malformed HTTP request: {e}", 400)

    def _malformed(self, message: str, status: int) -> None:
        """The parser gave up: on a head (that request gets the 4xx), or on the body or
        trailers of a request whose head was taken already. Either way the connection ends:
        nothing after the error can be framed."""
        req = self.parser.parsing
        if req is None:
            self._reject(failure(message, status))
            return
        self.parser.parsing = None
        self.stop_reading()
        self.front.notes.info(
            "clients", "malformed", "%s %s: malformed request: %s", req.method, req.target, message
        )
        if req is self.current:
            if req.started:
                self.abort()  # too late for a 400; connection_lost drops the upstream side
            else:
                # Whoever streams the body gets this error at once: the replica's
                # connection is reset (never reused), the client gets the 4xx.
                req.fail(MalformedRequestError(message, status))
        else:  # pipelined, not started: it never goes anywhere; the 4xx after the ones before
            with contextlib.suppress(ValueError):
                self.pending.remove(req)
            self._error = failure(message, status)

    def _reject(self, answer: Answer) -> None:
        """Answer a request that could not be parsed, then hang up."""
        self.stop_reading()
        self.parser.parsing = None
        if self.current is not None:
            self._error = answer  # after the answers to the requests before it
            return
        self._error = None
        self.write(plain_answer(answer))
        self.front.own_answer(answer.status)
        self.close()
