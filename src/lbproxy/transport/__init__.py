"""The upstream transport: how the proxy talks HTTP to a replica, behind one small interface."""

from ._base import IDEMPOTENT, RequestBody, Transport, UpstreamResponse
from ._httptools import HttptoolsTransport

__all__ = ["IDEMPOTENT", "HttptoolsTransport", "RequestBody", "Transport", "UpstreamResponse"]
