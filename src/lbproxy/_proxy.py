"""The data path: pick replicas on the ring, stream the request there and the answer back.

Two ways through it, with the same rules:
- ``serve_now``, the hot path: a bodiless, idempotent request whose replica has an idle
  kept-alive connection is sent at once from the front's parser callback, and an answer
  that arrives whole is relayed from the transport's; no task, no future. Anything else
  that turns up on the way (a stale connection, a failure, a body still streaming) is
  handed to a task running the general path.
- ``handle``, the general path, a coroutine: connects, streams request bodies, retries
  on the next replica, waits for slow answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import islice

from ._config import Config
from ._errors import (
    ClientDisconnectedError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeoutError,
)
from ._front import Request
from ._headers import downstream_headers, encode_headers, upstream_headers
from ._keys import REQUEST_ID_HEADER, KeyFunction
from ._messages import Answer, failure, missing_endpoint
from ._pool import Pool, Replica
from .transport import IDEMPOTENT, Transport, UpstreamResponse

log = logging.getLogger("lbproxy.proxy")


class Proxy:
    def __init__(
        self,
        pool: Pool,
        transport: Transport,
        config: Callable[[], Config],
        key_function: Callable[[], KeyFunction],
    ) -> None:
        self._pool = pool
        self._transport = transport
        self._config = config
        self._key_function = key_function
        #: Encoded X-Forwarded-* lines by (client address, Host): the same for every request
        #: on a connection, so built once rather than per request.
        self._forwarded: dict[tuple[str | None, str | None], bytes] = {}

    def _prepare(self, request: Request) -> tuple[str, bytes]:
        """The request's routing key and the (encoded) headers it goes upstream with."""
        key, generated = self._key_function()(request)
        # A generated request id goes upstream too, so the replica's logs can be correlated.
        extra = (
            [(REQUEST_ID_HEADER, key)]
            if generated and self._config().hashing.key == "request_id"
            else []
        )
        if request.end_to_end:  # the usual case: the client's headers go on as they came
            return key, b"".join(request.header_lines) + self._forwarded_lines(request, extra)
        headers = upstream_headers(
            request.header_items, request.remote, request.scheme, request.host, extra
        )
        return key, encode_headers(headers)

    def _forwarded_lines(self, request: Request, extra: list[tuple[str, str]]) -> bytes:
        """``upstream_headers([], ...)`` encoded: what goes after the client's own headers."""
        if extra:
            return encode_headers(
                upstream_headers([], request.remote, request.scheme, request.host, extra)
            )
        where = (request.remote, request.host)
        lines = self._forwarded.get(where)
        if lines is None:
            if len(self._forwarded) >= 4096:
                self._forwarded.clear()
            lines = encode_headers(
                upstream_headers([], request.remote, request.scheme, request.host)
            )
            self._forwarded[where] = lines
        return lines

    # -- the hot path ------------------------------------------------------------------------

    def serve_now(self, request: Request) -> bool:
        """Send ``request`` without a task if it qualifies; False: use ``handle``.

        Only bodiless idempotent requests qualify, so that one found to have gone out on a
        connection the replica had just closed can be sent again."""
        if request.has_body or request.method not in IDEMPOTENT or request.host is None:
            return False
        key, headers = self._prepare(request)
        replica = self._pool.pick(key)  # with bounded loads, one that has room
        if replica is None:
            return False  # its own replica is not up: the general path walks on
        address = replica.address
        if address is None:
            return False

        def answered(resp: UpstreamResponse) -> None:
            self._answered(request, replica, resp)

        exchange = self._transport.send_nowait(
            address, request.method, request.target, headers, answered
        )
        if exchange is None:
            return False
        replica.begin()

        def dropped() -> None:  # the client left before the answer's head came
            exchange.release()
            replica.end()

        request.on_disconnect = dropped
        return True

    def _answered(self, request: Request, replica: Replica, resp: UpstreamResponse) -> None:
        request.on_disconnect = None
        streaming = False  # the rest is relayed by a task, which ends the replica's request
        try:
            if resp.error is not None:
                resp.release()
                if resp.stale:
                    request.spawn(self.handle(request))  # sent again, on another connection
                else:
                    request.answer(self._failure(replica, resp.error))
                    request.done()
            elif self._relay_now(request, resp):
                resp.release()
                request.done()
            else:
                request.spawn(self._relay_rest(request, replica, resp))
                streaming = True
        except Exception:
            # Called from the transport's protocol: a bug here must cost one request only.
            log.exception("%s %s failed", request.method, request.target)
            resp.release()
            request.abort()
            request.done()
        finally:
            if not streaming:
                replica.end()

    async def _relay_rest(self, request: Request, replica: Replica, resp: UpstreamResponse) -> None:
        try:
            await self._stream(request, resp)
        finally:
            resp.release()
            replica.end()

    # -- the general path --------------------------------------------------------------------

    async def handle(self, request: Request) -> None:
        attempts = 1 + self._config().proxy.retries
        key, headers = self._prepare(request)
        body = request if request.has_body else None
        tried: list[str] = []
        resp: UpstreamResponse | None = None
        for replica in islice(self._pool.route(key), attempts):
            address = replica.address
            if address is None:
                continue
            tried.append(replica.hostname)
            sent = (
                headers
                if request.host is not None
                else headers + b"Host: %s\r\n" % address.encode()
            )
            replica.begin()
            try:
                resp = await self._transport.request(
                    address, request.method, request.target, sent, body
                )
                break
            except UpstreamConnectError as e:
                log.warning("%s; trying the next replica", e)
                replica.suspect.set()
            except ClientDisconnectedError as e:
                log.info("client went away while sending its request: %s", e)
                return
            except UpstreamError as e:
                request.answer(self._failure(replica, e))
                return
            finally:
                if resp is None:  # no answer to relay: this replica's part is over
                    replica.end()
        if resp is None:
            if not tried:
                request.answer(
                    failure("No healthy replica is available", 503, {"Retry-After": "1"})
                )
            else:
                request.answer(
                    failure(f"Could not connect to any replica (tried {', '.join(tried)})", 502)
                )
            return
        try:
            if not self._relay_now(request, resp):
                await self._stream(request, resp)
        finally:
            resp.release()
            replica.end()

    # -- shared ------------------------------------------------------------------------------

    def _failure(self, replica: Replica, error: BaseException) -> Answer:
        if isinstance(error, UpstreamTimeoutError):
            return failure(
                f"Replica {replica.hostname} did not answer within "
                f"{self._config().proxy.read_timeout:g}s",
                504,
            )
        log.warning("replica %s failed: %s", replica.hostname, error)
        return failure(f"Replica {replica.hostname} failed to answer", 502)

    def _relay_now(self, request: Request, resp: UpstreamResponse) -> bool:
        """Relay an answer that needs no waiting (no body, or all of it in); False if not."""
        if resp.status == 404:
            request.answer(missing_endpoint(request.path))
            return True
        if not resp.has_body:
            request.send_whole(resp.status, resp.reason, self._headers(resp), b"", "none")
            return True
        if resp.complete:  # the usual small answer: all of it in one write
            framing = "length" if resp.length is not None else "chunked"
            request.send_whole(resp.status, resp.reason, self._headers(resp), resp.take(), framing)
            return True
        return False

    @staticmethod
    def _headers(resp: UpstreamResponse) -> bytes:
        if resp.end_to_end:  # the usual case: the replica's headers go on as they came
            return b"".join(resp.header_lines)
        return encode_headers(downstream_headers(resp.headers))

    async def _stream(self, request: Request, resp: UpstreamResponse) -> None:
        """Relay an answer whose body is still arriving, as it arrives."""
        framing = "length" if resp.length is not None else "chunked"
        request.start(resp.status, resp.reason, self._headers(resp), framing)
        try:
            while chunk := await resp.read():
                request.write(chunk)
                if request.write_paused:
                    await request.drain()
        except UpstreamError as e:
            # Too late for an error status: cut the client's connection so the short
            # body cannot pass for a complete one.
            log.warning("%s %s: %s", request.method, request.path, e)
            request.abort()
            return
        except ClientDisconnectedError:
            log.info("%s %s: client disconnected mid-answer", request.method, request.path)
            return
        request.end()
