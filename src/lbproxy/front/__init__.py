"""The balancer's HTTP/1.1 server: asyncio protocols and httptools' C parser.

``Front`` (``_server``) listens and hands every request to one ``dispatch`` callable; it
knows no application (``Server`` wires the admin API and the proxy behind it). Each client
connection is one ``ClientConnection`` (``_connection``) whose ``RequestParser``
(``_parser``) turns bytes into ``Request`` objects (``_request``); requests are answered one
at a time and in order, so pipelined requests are safe. A request sees its connection only
as a ``ClientSink``. Request bodies are handed on as they arrive and reading from the client
pauses while more than ``BODY_HIGH_WATER`` bytes wait; answers wait for ``drain`` when the
client reads slowly (``_flow``).
"""

from ._connection import BODY_HIGH_WATER
from ._request import Request
from ._server import Dispatch, Front, default_max_connections
from ._sink import ClientSink
from ._view import Headers

__all__ = [
    "BODY_HIGH_WATER",
    "ClientSink",
    "Dispatch",
    "Front",
    "Headers",
    "Request",
    "default_max_connections",
]
