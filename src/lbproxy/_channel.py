"""Messages between the balancer's supervisor and its worker processes (``workers: N``).

One Unix stream socket pair per worker, made by the supervisor and inherited by the worker:
each message is a 4-byte length and a pickle. Pickle is safe here because both ends are our
own processes and the socket pair is reachable by nobody else (it has no name).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_LENGTH = struct.Struct("!I")
#: Far above any real message (a ring of 64 replicas x 16384 virtual nodes pickles to some
#: 10 MiB): a length beyond it means the stream is corrupt, not that memory should be spent.
MOST = 256 << 20


class ChannelClosedError(Exception):
    """The other end went away (its process ended)."""


class Channel:
    """One end of a supervisor-worker link."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    def send(self, message: Any) -> None:
        """Queue ``message``; raises ChannelClosedError once the other end is gone."""
        if self._writer.is_closing():
            raise ChannelClosedError("the channel is closed")
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_LENGTH.pack(len(data)) + data)

    async def recv(self) -> Any:
        """The next message; raises ChannelClosedError at the end of the stream."""
        try:
            head = await self._reader.readexactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(head)
            if length > MOST:
                raise ChannelClosedError(f"a message of {length} bytes: the stream is corrupt")
            data = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise ChannelClosedError(str(e) or "the other end closed the channel") from None
        return pickle.loads(data)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as e:
            raise ChannelClosedError(str(e)) from None

    def close(self) -> None:
        self._writer.close()
