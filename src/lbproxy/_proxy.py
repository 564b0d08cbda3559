"""The data path: pick replicas on the ring, stream the request there and the answer back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from itertools import islice

from aiohttp import web
from multidict import CIMultiDict

from ._config import Config
from ._errors import UpstreamConnectError, UpstreamError, UpstreamTimeoutError
from ._headers import downstream_headers, upstream_headers
from ._keys import REQUEST_ID_HEADER, KeyFunction
from ._messages import failure, missing_endpoint
from ._pool import Pool
from .transport import Transport, UpstreamResponse

log = logging.getLogger("lbproxy.proxy")


async def _request_body(content: web.StreamReader) -> AsyncIterator[bytes]:
    # Chunk by chunk as the client sends; the reader pauses the client when we fall behind.
    async for chunk in content.iter_any():
        yield chunk


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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        config = self._config()  # one snapshot per request, even if a reload lands meanwhile
        key, generated = self._key_function()(request)
        # A generated request id goes upstream too, so the replica's logs can be correlated.
        extra = (
            [(REQUEST_ID_HEADER, key)] if generated and config.hashing.key == "request_id" else []
        )
        headers = upstream_headers(
            request.headers.items(), request.remote, request.scheme, request.host, extra
        )
        body = _request_body(request.content) if request.body_exists else None
        attempts = 1 + config.proxy.retries
        tried: list[str] = []
        resp: UpstreamResponse | None = None
        for replica in islice(self._pool.route(key), attempts):
            address = replica.address
            if address is None:
                continue
            tried.append(replica.hostname)
            try:
                resp = await self._transport.request(
                    address, request.method, request.raw_path, headers, body
                )
                break
            except UpstreamConnectError as e:
                log.warning("%s; trying the next replica", e)
                replica.suspect.set()
            except UpstreamTimeoutError:
                return failure(
                    f"Replica {replica.hostname} did not answer within "
                    f"{config.proxy.read_timeout:g}s",
                    504,
                )
            except UpstreamError as e:
                if request.transport is None or request.transport.is_closing():
                    # The client left mid-upload; the replica is not to blame.
                    log.info("client went away while sending its request: %s", e)
                else:
                    log.warning("replica %s failed: %s", replica.hostname, e)
                return failure(f"Replica {replica.hostname} failed to answer", 502)
        if resp is None:
            if not tried:
                return failure("No healthy replica is available", 503, {"Retry-After": "1"})
            return failure(f"Could not connect to any replica (tried {', '.join(tried)})", 502)
        return await self._relay(request, resp)

    async def _relay(self, request: web.Request, resp: UpstreamResponse) -> web.StreamResponse:
        try:
            if resp.status == 404:
                return missing_endpoint(request.path)
            out = web.StreamResponse(
                status=resp.status,
                reason=resp.reason or None,
                headers=CIMultiDict(downstream_headers(resp.headers)),
            )
            await out.prepare(request)
            try:
                async for chunk in resp.body():
                    await out.write(chunk)
                await out.write_eof()
            except UpstreamError as e:
                # Too late for an error status: cut the client's connection so the short
                # body cannot pass for a complete one.
                log.warning("%s %s: %s", request.method, request.path, e)
                if request.transport is not None:
                    request.transport.abort()
            except ConnectionResetError:
                # The client went away mid-answer: an everyday event, not a server error.
                # The unread upstream answer is closed (not reused) below.
                log.info("%s %s: client disconnected mid-answer", request.method, request.path)
            return out
        finally:
            await resp.aclose()
