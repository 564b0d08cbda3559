"""The upstream transport: how the proxy talks HTTP to a replica, behind one small interface."""

from ._base import RequestBody, Transport, UpstreamResponse
from ._httptools import HttptoolsTransport

__all__ = ["HttptoolsTransport", "RequestBody", "Transport", "UpstreamResponse"]
