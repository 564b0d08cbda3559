"""The data path: pick replicas on the ring, stream the request there and the answer back."""

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
from ._headers import downstream_headers, upstream_headers
from ._keys import REQUEST_ID_HEADER, KeyFunction
from ._messages import failure, missing_endpoint
from ._pool import Pool
from .transport import Transport, UpstreamResponse

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

    async def handle(self, request: Request) -> None:
        config = self._config()  # one snapshot per request, even if a reload lands meanwhile
        key, generated = self._key_function()(request)
        # A generated request id goes upstream too, so the replica's logs can be correlated.
        extra = (
            [(REQUEST_ID_HEADER, key)] if generated and config.hashing.key == "request_id" else []
        )
        headers = upstream_headers(
            request.header_items,
            request.remote,
            request.scheme,
            request.host,
            extra,
            end_to_end=request.end_to_end,
        )
        body = request if request.has_body else None
        attempts = 1 + config.proxy.retries
        tried: list[str] = []
        resp: UpstreamResponse | None = None
        for replica in islice(self._pool.route(key), attempts):
            address = replica.address
            if address is None:
                continue
            tried.append(replica.hostname)
            sent = headers if request.host is not None else [*headers, ("Host", address)]
            try:
                resp = await self._transport.request(
                    address, request.method, request.target, sent, body
                )
                break
            except UpstreamConnectError as e:
                log.warning("%s; trying the next replica", e)
                replica.suspect.set()
            except UpstreamTimeoutError:
                request.answer(
                    failure(
                        f"Replica {replica.hostname} did not answer within "
                        f"{config.proxy.read_timeout:g}s",
                        504,
                    )
                )
                return
            except ClientDisconnectedError as e:
                log.info("client went away while sending its request: %s", e)
                return
            except UpstreamError as e:
                log.warning("replica %s failed: %s", replica.hostname, e)
                request.answer(failure(f"Replica {replica.hostname} failed to answer", 502))
                return
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
            await self._relay(request, resp)
        finally:
            resp.release()

    async def _relay(self, request: Request, resp: UpstreamResponse) -> None:
        if resp.status == 404:
            request.answer(missing_endpoint(request.path))
            return
        headers = resp.headers if resp.end_to_end else downstream_headers(resp.headers)
        if not resp.has_body:
            request.send_whole(resp.status, resp.reason, headers, b"", "none")
            return
        framing = "length" if resp.length is not None else "chunked"
        if resp.complete:  # the usual small answer: all of it in one write
            request.send_whole(resp.status, resp.reason, headers, resp.take(), framing)
            return
        request.start(resp.status, resp.reason, headers, framing)
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
