"""The data path: pick replicas on the ring, stream the request there and the answer back.

Two ways through it, with the same rules:
- ``dispatch`` (the front's ``Dispatch``), the hot path: a bodiless, idempotent request
  whose replica has an idle kept-alive connection is sent at once from the front's parser
  callback, and an answer that arrives whole is relayed from the transport's; no task, no
  future. Anything else (a body, an upgrade, no idle connection; later a stale connection,
  a failure, a body still streaming) is handed to a task running the general path.
- ``handle``, the general path, a coroutine: connects, streams request bodies, retries
  on the next replica, waits for slow answers, relays upgraded connections (``_tunnel``).

A bodiless idempotent request whose replica breaks off before any of the answer went out
(reset, closed, timed out, taken out of service) is sent once more, to the next distinct
replica clockwise; replicas that fail ``proxy.outlier_failures`` requests in a row are taken
out of routing for ``proxy.outlier_ejection_time`` (docs/proxying.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter

from ._config import Config
from ._errors import (
    ClientDisconnectedError,
    UpstreamConnectError,
    UpstreamError,
)
from ._exchange import Exchange
from ._keys import KeyFunction
from ._messages import Answer, failure
from ._outliers import Outliers
from ._pool import Pool, Replica
from ._recording import Recorder
from ._relay import answer_headers, failure_answer, relay_now, tunnel
from ._throttled_log import ThrottledLog
from ._upstream_heads import UpstreamHeads
from .transport import IDEMPOTENT, Transport, UpstreamResponse

log = logging.getLogger("lbproxy.proxy")


class Proxy:
    def __init__(
        self,
        pool: Pool,
        transport: Transport,
        config: Callable[[], Config],
        key_function: Callable[[], KeyFunction],
        recorder: Recorder | None = None,
    ) -> None:
        self._pool = pool
        self._transport = transport
        self._config = config
        self._key_function = key_function
        self._heads = UpstreamHeads(config, key_function)
        #: Client notes are said once per event, with counts.
        self._notes = ThrottledLog(log)
        self._outliers = Outliers(pool, config, transport)
        recorder = recorder if recorder is not None else Recorder()
        #: Called once per answer sent (metrics, access log): a no-op when both are off.
        self._done = recorder.done
        self._stats = recorder.stats

    # -- the hot path ------------------------------------------------------------------------

    def dispatch(self, request: Exchange) -> None:
        """Serve ``request`` (the front's ``Dispatch``): without a task if it qualifies, else
        in a task running ``handle``.

        Only bodiless idempotent requests qualify, so that one found to have gone out on a
        connection the replica had just closed can be sent again."""
        if (
            request.has_body
            or request.method not in IDEMPOTENT
            or request.host is None
            or request.upgrade is not None
        ):
            request.spawn(self.handle(request))
            return
        t0 = perf_counter()
        key, headers = self._heads.prepare(request)
        replica = self._pool.pick(key)  # with bounded loads, one that has room
        address = replica.address if replica is not None else None
        if replica is None or address is None:
            # Its own replica is not up (or ejected): the general path walks on.
            request.spawn(self.handle(request, None, t0))
            return
        name = replica.hostname  # the one that answers (a replacement gets a new name)

        def answered(resp: UpstreamResponse) -> None:
            self._answered(request, replica, name, resp, t0)

        exchange = self._transport.send_nowait(
            address, request.method, request.target, headers, answered
        )
        if exchange is None:  # no idle connection to it
            request.spawn(self.handle(request, None, t0))
            return
        replica.begin()

        def dropped() -> None:  # the client left before the answer's head came
            exchange.release()
            replica.finish()

        request.on_disconnect = dropped

    def _answered(
        self, request: Exchange, replica: Replica, name: str, resp: UpstreamResponse, t0: float
    ) -> None:
        request.on_disconnect = None
        streaming = False  # the rest is relayed by a task, which ends the replica's request
        try:
            error = resp.error
            if error is not None:
                resp.release()
                if resp.stale:
                    # Sent again, on another connection.
                    request.spawn(self.handle(request, None, t0))
                else:
                    # Nothing of the answer went out: once more, on the next replica.
                    self._failed(replica, name, error)
                    request.spawn(self.handle(request, (replica, name, error), t0))
            else:
                if replica.failures:
                    replica.failures = 0
                sent = relay_now(request, resp)
                if sent is not None:
                    resp.release()
                    self._done(request, name, sent[0], sent[1], t0)
                    request.done()
                else:
                    request.spawn(self._relay_rest(request, replica, name, resp, t0))
                    streaming = True
        except Exception:
            # Called from the transport's protocol: a bug here must cost one request only.
            log.exception("%s %s failed", request.method, request.target)
            resp.release()
            request.abort()
            request.done()
        finally:
            if not streaming:
                replica.finish()

    async def _relay_rest(
        self, request: Exchange, replica: Replica, name: str, resp: UpstreamResponse, t0: float
    ) -> None:
        try:
            await self._stream(request, resp, replica, name, t0)
        finally:
            resp.release()
            replica.finish()

    # -- the general path --------------------------------------------------------------------

    async def handle(
        self,
        request: Exchange,
        failed: tuple[Replica, str, UpstreamError] | None = None,
        t0: float | None = None,
    ) -> None:
        """Serve ``request``; ``failed``: the hot path's replica (and its name) broke off;
        ``t0``: when the hot path took it (``perf_counter``)."""
        if t0 is None:
            t0 = perf_counter()
        attempts = 1 + self._config().proxy.retries
        key, headers = self._heads.prepare(request)
        body = request if request.has_body else None
        if body is not None:
            body.check()  # found malformed while this task waited to run: no replica needed
        # May be sent again after a replica broke off: nothing of it can have been acted on
        # in a way that a second try changes (RFC 9110 section 9.2.2), and no body is spent.
        replayable = body is None and request.method in IDEMPOTENT
        upgrade = request.upgrade is not None
        refused: list[str] = []
        resp: UpstreamResponse | None = None
        replica: Replica | None = None
        name = ""
        skip = None
        #: The replica whose failure the next attempt retries.
        retry_of: str | None = None
        if failed is not None:
            skip = failed[0]
            retry_of = failed[1]
            attempts -= 1
        for replica in self._pool.route(key):
            if replica is skip:
                continue
            address = replica.address
            if address is None:
                continue
            if not attempts:
                break
            attempts -= 1
            name = replica.hostname
            if retry_of is not None:
                if self._stats is not None:
                    self._stats.of(retry_of).retries += 1
                retry_of = None
            sent = (
                headers
                if request.host is not None
                else headers + b"Host: %s\r\n" % address.encode()
            )
            replica.begin()
            try:
                resp = await self._transport.request(
                    address, request.method, request.target, sent, body, upgrade
                )
                if replica.failures:
                    replica.failures = 0
            except UpstreamConnectError as e:
                refused.append(name)
                self._failed(replica, name, e)
                retry_of = name
            except ClientDisconnectedError as e:
                self._notes.info("clients", "left", "client went away mid-request: %s", e)
                return
            except UpstreamError as e:
                self._failed(replica, name, e)
                if not (replayable and failed is None):
                    timeout = self._config().proxy.read_timeout
                    self._answer(request, name, failure_answer(timeout, name, e, failed), t0)
                    return
                failed = (replica, name, e)  # once more, on the next replica
                retry_of = name
            finally:
                if resp is None:  # no answer to relay: this replica's part is over
                    replica.finish()
            if resp is not None:  # not a `break` in the try: mypyc cannot compile that
                break
        if resp is None or replica is None:
            if failed is not None:
                timeout = self._config().proxy.read_timeout
                answer = failure_answer(timeout, failed[1], failed[2])
                self._answer(request, failed[1], answer, t0)
            elif not refused:
                answer = failure("No healthy replica is available", 503, {"Retry-After": "1"})
                self._answer(request, "", answer, t0)
            else:
                tried = ", ".join(refused)
                answer = failure(f"Could not connect to any replica (tried {tried})", 502)
                self._answer(request, "", answer, t0)
            return
        try:
            if upgrade and resp.status == 101:
                self._done(request, name, 101, 0, t0)  # the tunnel's bytes are not counted
                await tunnel(request, resp, self._config().proxy.tunnel_idle_timeout)
            elif (now := relay_now(request, resp)) is not None:
                self._done(request, name, now[0], now[1], t0)
            else:
                await self._stream(request, resp, replica, name, t0)
        finally:
            resp.release()
            replica.finish()

    def _failed(self, replica: Replica, name: str, error: UpstreamError) -> None:
        if self._stats is not None and isinstance(error, UpstreamConnectError):
            self._stats.of(name).connect_errors += 1
        self._outliers.failed(replica, name, error)

    def _answer(self, request: Exchange, name: str, answer: Answer, t0: float) -> None:
        """Send one of the balancer's own answers (about replica ``name``, or "")."""
        request.answer(answer)
        self._done(request, name, answer.status, len(answer.body), t0)

    # -- relaying ----------------------------------------------------------------------------

    async def _stream(
        self, request: Exchange, resp: UpstreamResponse, replica: Replica, name: str, t0: float
    ) -> None:
        """Relay an answer whose body is still arriving, as it arrives."""
        framing = "length" if resp.length is not None else "chunked"
        request.start(resp.status, resp.reason, answer_headers(resp), framing)
        sent = 0
        try:
            while chunk := await resp.read():
                sent += len(chunk)
                request.write(chunk)
                if request.write_paused:
                    await request.drain()
        except UpstreamError as e:
            # Too late for an error status: cut the client's connection so the short
            # body cannot pass for a complete one.
            self._failed(replica, name, e)
            request.abort()
            self._done(request, name, resp.status, sent, t0)  # its status went out, cut short
            return
        except ClientDisconnectedError:
            self._notes.info(
                "clients",
                "left",
                "%s %s: client disconnected mid-answer",
                request.method,
                request.path,
            )
            self._done(request, name, resp.status, sent, t0)
            return
        request.end()
        self._done(request, name, resp.status, sent, t0)
