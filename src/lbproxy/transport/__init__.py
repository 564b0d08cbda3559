"""The upstream transport: how the proxy talks HTTP to a replica, behind one small interface."""

from ._aiohttp import AiohttpTransport
from ._base import Transport, UpstreamResponse

__all__ = ["AiohttpTransport", "Transport", "UpstreamResponse"]
