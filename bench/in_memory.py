"""An asyncio transport in memory, for driving protocols without sockets: the protocol unit
tests (as uvicorn's tests do) and ``bench.hotpath``. What the protocol writes is kept,
reading and writing flow control are flags, and closing calls ``connection_lost`` on the
next loop turn as a real transport does."""

from __future__ import annotations

import asyncio
from typing import Any


class MemoryTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.BaseProtocol, peer: tuple[str, int] | None = None):
        super().__init__()
        self._protocol = protocol
        self._peer = peer or ("127.0.0.1", 40000)
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.lost = asyncio.Event()
        #: Set by every write (the test clears it to wait for the next).
        self.wrote = asyncio.Event()
        #: Past this many unread bytes, writing pauses (``pause_writing``) as a kernel buffer
        #: would make it; ``take`` drains them (``resume_writing``). None: never.
        self.high_water: int | None = None
        self.write_paused = False

    # -- asyncio.Transport -------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.written += data
        self.wrote.set()
        high = self.high_water
        if high is not None and len(self.written) > high and not self.write_paused:
            self.write_paused = True
            self._protocol.pause_writing()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._lose)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- for the test ------------------------------------------------------------------------

    def take(self) -> bytes:
        """What was written since the last call."""
        data = bytes(self.written)
        self.written.clear()
        if self.write_paused:
            self.write_paused = False
            self._protocol.resume_writing()
        return data

    def feed(self, data: bytes) -> None:
        """The peer sends ``data`` (as the event loop would hand it to the protocol)."""
        assert self.reading, "the protocol paused reading"
        self._protocol.data_received(data)  # type: ignore[attr-defined]

    def _lose(self) -> None:
        self._protocol.connection_lost(None)
        self.lost.set()


def connect(protocol: asyncio.BaseProtocol) -> MemoryTransport:
    transport = MemoryTransport(protocol)
    protocol.connection_made(transport)
    return transport
