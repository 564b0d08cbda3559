"""The data path: pick replicas on the ring, stream the request there and the answer back.

Two ways through it, with the same rules:
- ``serve_now``, the hot path: a bodiless, idempotent request whose replica has an idle
  kept-alive connection is sent at once from the front's parser callback, and an answer
  that arrives whole is relayed from the transport's; no task, no future. Anything else
  that turns up on the way (a stale connection, a failure, a body still streaming) is
  handed to a task running the general path.
- ``handle``, the general path, a coroutine: connects, streams request bodies, retries
  on the next replica, waits for slow answers.

A bodiless idempotent request whose replica breaks off before any of the answer went out
(reset, closed, timed out, taken out of service) is sent once more, to the next distinct
replica clockwise; replicas that fail ``proxy.outlier_failures`` requests in a row are taken
out of routing for ``proxy.outlier_ejection_time`` (docs/proxying.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ._config import Config
from ._errors import (
    ClientDisconnectedError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeoutError,
)
from ._headers import downstream_headers, encode_headers, upstream_headers
from ._keys import REQUEST_ID_HEADER, KeyFunction
from ._messages import Answer, failure, missing_endpoint
from ._pool import Pool, Replica, State
from ._throttled_log import ThrottledLog
from ._tunnel import Tunnel
from .front import Request
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
        #: Failures are said once per replica and event, with counts (a stopped replica
        #: fails every request routed to it until it leaves the ring).
        self._notes = ThrottledLog(log)
        #: Readmission timers of the replicas out of routing as outliers.
        self._ejected: dict[Replica, asyncio.TimerHandle] = {}
        pool.on_failed.append(self._taken_out)

    def _prepare(self, request: Request) -> tuple[str, bytes]:
        """The request's routing key and the (encoded) headers it goes upstream with.

        Made once per request (``request.prepared`` keeps them for the general path): a
        request without a key gets one random id, whichever path serves it.
        """
        if request.prepared is not None:
            return request.prepared
        key, generated = self._key_function()(request)
        # A generated request id goes upstream too, so the replica's logs can be correlated.
        extra = (
            [(REQUEST_ID_HEADER, key)]
            if generated and self._config().hashing.key == "request_id"
            else []
        )
        if request.upgrade is not None:
            # Hop-by-hop, but this hop is asked for them: the replica decides to switch.
            extra += [("Connection", "Upgrade"), ("Upgrade", request.upgrade)]
        if request.end_to_end:  # the usual case: the client's headers go on as they came
            headers = b"".join(request.header_lines) + self._forwarded_lines(request, extra)
        else:
            headers = encode_headers(
                upstream_headers(
                    request.header_items, request.remote, request.scheme, request.host, extra
                )
            )
        request.prepared = prepared = (key, headers)
        return prepared

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
        if (
            request.has_body
            or request.method not in IDEMPOTENT
            or request.host is None
            or request.upgrade is not None
        ):
            return False
        key, headers = self._prepare(request)
        replica = self._pool.pick(key)  # with bounded loads, one that has room
        if replica is None:
            return False  # its own replica is not up (or ejected): the general path walks on
        address = replica.address
        if address is None:
            return False
        name = replica.hostname  # the one that answers (a replacement gets a new name)

        def answered(resp: UpstreamResponse) -> None:
            self._answered(request, replica, name, resp)

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

    def _answered(
        self, request: Request, replica: Replica, name: str, resp: UpstreamResponse
    ) -> None:
        request.on_disconnect = None
        streaming = False  # the rest is relayed by a task, which ends the replica's request
        try:
            error = resp.error
            if error is not None:
                resp.release()
                if resp.stale:
                    request.spawn(self.handle(request))  # sent again, on another connection
                else:
                    # Nothing of the answer went out: once more, on the next replica.
                    self._failed(replica, name, error)
                    request.spawn(self.handle(request, (replica, name, error)))
            else:
                if replica.failures:
                    replica.failures = 0
                if self._relay_now(request, resp):
                    resp.release()
                    request.done()
                else:
                    request.spawn(self._relay_rest(request, replica, name, resp))
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

    async def _relay_rest(
        self, request: Request, replica: Replica, name: str, resp: UpstreamResponse
    ) -> None:
        try:
            await self._stream(request, resp, replica, name)
        finally:
            resp.release()
            replica.end()

    # -- the general path --------------------------------------------------------------------

    async def handle(
        self, request: Request, failed: tuple[Replica, str, UpstreamError] | None = None
    ) -> None:
        """Serve ``request``; ``failed``: the hot path's replica (and its name) broke off."""
        attempts = 1 + self._config().proxy.retries
        key, headers = self._prepare(request)
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
        if failed is not None:
            skip = failed[0]
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
                break
            except UpstreamConnectError as e:
                refused.append(name)
                self._failed(replica, name, e)
            except ClientDisconnectedError as e:
                self._notes.info("clients", "left", "client went away mid-request: %s", e)
                return
            except UpstreamError as e:
                self._failed(replica, name, e)
                if not (replayable and failed is None):
                    request.answer(self._failure(name, e, failed))
                    return
                failed = (replica, name, e)  # once more, on the next replica
            finally:
                if resp is None:  # no answer to relay: this replica's part is over
                    replica.end()
        if resp is None or replica is None:
            if failed is not None:
                request.answer(self._failure(failed[1], failed[2]))
            elif not refused:
                request.answer(
                    failure("No healthy replica is available", 503, {"Retry-After": "1"})
                )
            else:
                request.answer(
                    failure(f"Could not connect to any replica (tried {', '.join(refused)})", 502)
                )
            return
        try:
            if upgrade and resp.status == 101:
                await self._tunnel(request, resp)
            elif not self._relay_now(request, resp):
                await self._stream(request, resp, replica, name)
        finally:
            resp.release()
            replica.end()

    # -- failures ----------------------------------------------------------------------------

    def _failed(self, replica: Replica, name: str, error: UpstreamError) -> None:
        """A replica failed a request (no connection, broken off, timed out): say so (once
        per event), probe it now, and take it out of routing if it keeps failing."""
        if isinstance(error, UpstreamConnectError):
            self._notes.warning(
                name, "cannot connect", "%s: %s; trying the next replica", name, error
            )
        elif isinstance(error, UpstreamTimeoutError):
            self._notes.warning(name, "timed out", "replica %s: %s", name, error)
        else:
            self._notes.warning(name, "failed", "replica %s failed: %s", name, error)
        replica.suspect.set()  # a heartbeat now, rather than at the next interval
        replica.failures += 1
        limit = self._config().proxy.outlier_failures
        if limit and replica.failures >= limit and not replica.ejected:
            self._eject(replica, name)

    def _eject(self, replica: Replica, name: str) -> None:
        if replica.state is not State.UP or replica.hostname != name:
            return  # already out, or replaced meanwhile
        up = [r for r in self._pool.replicas.values() if r.state is State.UP]
        # At most half of the replicas out at once: failures everywhere are more likely the
        # network's or the balancer's own, and ejecting every replica would serve nobody.
        if 2 * (sum(r.ejected for r in up) + 1) > len(up):
            return
        cfg = self._config().proxy
        replica.ejected = True
        log.warning(
            "replica %s failed %d requests in a row: out of routing for %gs",
            name,
            replica.failures,
            cfg.outlier_ejection_time,
        )
        old = self._ejected.pop(replica, None)
        if old is not None:
            old.cancel()
        self._ejected[replica] = asyncio.get_running_loop().call_later(
            cfg.outlier_ejection_time, self._readmit, replica, name
        )

    def _readmit(self, replica: Replica, name: str) -> None:
        self._ejected.pop(replica, None)
        if replica.ejected:
            replica.ejected = False
            replica.failures = 0
            if replica.hostname == name and replica.state is State.UP:
                log.info("replica %s is back in routing", name)

    def _taken_out(self, replica: Replica) -> None:
        """The supervisor took ``replica`` out (it failed): what waits on it and can go
        elsewhere goes now, rather than when the replica is killed or times out."""
        address = replica.address
        if address is not None:
            n = self._transport.abandon(address, f"was taken out ({replica.hostname} is down)")
            if n:
                log.info("%d requests in flight on %s go to other replicas", n, replica.hostname)

    def _failure(
        self,
        name: str,
        error: BaseException,
        earlier: tuple[Replica, str, UpstreamError] | None = None,
    ) -> Answer:
        """The answer for a replica that broke off; ``earlier``: the one tried before it."""
        after = f" (after {earlier[1]} failed too)" if earlier is not None else ""
        if isinstance(error, UpstreamTimeoutError):
            return failure(
                f"Replica {name} did not answer within "
                f"{self._config().proxy.read_timeout:g}s{after}",
                504,
            )
        return failure(f"Replica {name} failed to answer{after}", 502)

    # -- relaying ----------------------------------------------------------------------------

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

    async def _tunnel(self, request: Request, resp: UpstreamResponse) -> None:
        """The replica switched protocols: relay both connections as they are until either
        closes or both stay quiet for ``proxy.tunnel_idle_timeout``."""
        upgrade = next((v for k, v in resp.headers if k.lower() == "upgrade"), request.upgrade)
        headers = encode_headers(
            [
                *downstream_headers(resp.headers),
                ("Connection", "Upgrade"),
                ("Upgrade", upgrade or ""),
            ]
        )
        replica_end = resp.detach()
        try:
            client_end = request.switch(resp.status, resp.reason, headers)
        except ClientDisconnectedError:
            replica_end.transport.close()
            return
        await Tunnel(client_end, replica_end, self._config().proxy.tunnel_idle_timeout).wait()

    @staticmethod
    def _headers(resp: UpstreamResponse) -> bytes:
        if resp.end_to_end:  # the usual case: the replica's headers go on as they came
            return b"".join(resp.header_lines)
        return encode_headers(downstream_headers(resp.headers))

    async def _stream(
        self, request: Request, resp: UpstreamResponse, replica: Replica, name: str
    ) -> None:
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
            self._failed(replica, name, e)
            request.abort()
            return
        except ClientDisconnectedError:
            self._notes.info(
                "clients",
                "left",
                "%s %s: client disconnected mid-answer",
                request.method,
                request.path,
            )
            return
        request.end()
