"""Upstream transport on aiohttp's ClientSession: one shared keep-alive pool, pure streaming."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .._config import ProxyConfig
from .._errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeoutError

#: Headers aiohttp would add on its own; a proxy forwards only what the client sent.
_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class _Response:
    __slots__ = ("_done", "_resp", "headers", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._done = False
        self.status = resp.status
        self.reason = resp.reason or ""
        self.headers = list(resp.headers.items())

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except aiohttp.SocketTimeoutError as e:
            raise UpstreamTimeoutError(f"replica stopped sending its answer: {e}") from e
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamProtocolError(f"replica broke off its answer: {e!r}") from e
        self._done = True

    async def aclose(self) -> None:
        if self._done:
            self._resp.release()
        else:
            # Unread body left on the connection: it cannot be reused.
            self._resp.close()


class AiohttpTransport:
    """The default transport. ``limit`` connections in all; idle ones kept for reuse."""

    def __init__(self, config: ProxyConfig) -> None:
        connector = aiohttp.TCPConnector(
            limit=config.pool_size,
            limit_per_host=0,
            keepalive_timeout=config.keepalive_timeout,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
        )

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: AsyncIterable[bytes] | None,
    ) -> _Response:
        url = URL(f"http://{address}{target}", encoded=True)
        try:
            resp = await self._session.request(
                method,
                url,
                headers=CIMultiDict(headers),
                data=body,
                allow_redirects=False,
            )
        except aiohttp.ConnectionTimeoutError as e:
            raise UpstreamConnectError(f"timed out connecting to {address}") from e
        except aiohttp.ClientConnectorError as e:
            raise UpstreamConnectError(f"cannot connect to {address}: {e.os_error}") from e
        except (TimeoutError, aiohttp.SocketTimeoutError) as e:
            raise UpstreamTimeoutError(f"{address} did not answer in time") from e
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamProtocolError(f"{address} failed: {e!r}") from e
        return _Response(resp)

    async def close(self) -> None:
        await self._session.close()
