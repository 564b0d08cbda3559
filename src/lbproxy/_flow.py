"""Backpressure on one connection, the same on the client side (``front``) and on the replica
side (``transport``): bytes received and not taken yet (``ByteQueue``), and the writer's
wait while the kernel's send buffer is full (``FlowControl``).

Both are plain objects driven by an ``asyncio.Protocol``'s callbacks: a reader that finds
nothing waits on one future, woken by the next ``push``; a writer that finds the transport
paused waits in ``drain`` until ``resume_writing``. No task, no lock, no per-write future.
"""

from __future__ import annotations

import asyncio


class ByteQueue:
    """Bytes received and not taken yet, and the one reader waiting for more.

    A base class rather than a member, so that the hot path (a request or an answer that is
    its own queue) costs no extra object and no extra attribute hop.
    """

    __slots__ = ("_chunks", "queued", "waiter")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        #: Bytes waiting to be taken (reading pauses when this passes a high-water mark).
        self.queued = 0
        #: The reader waiting for more, if any (hot paths check it before calling ``wake``).
        self.waiter: asyncio.Future[None] | None = None

    def push(self, data: bytes) -> None:
        self._chunks.append(data)
        self.queued += len(data)
        if self.waiter is not None:
            self.wake()

    def take(self) -> bytes:
        """Everything queued, at once (``b""`` if nothing)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self.queued = 0
        return data

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until the next ``push`` or ``wake``; the caller looks again at what changed."""
        self.waiter = waiter = loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class FlowControl:
    """One transport's flow both ways: reading paused by its owner, writing paused by the
    transport (``pause_writing``/``resume_writing`` of the protocol are forwarded here)."""

    __slots__ = ("_lost", "drain_waiter", "loop", "read_paused", "transport", "write_paused")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.read_paused = False
        self.write_paused = False
        #: The writer waiting in ``drain``, if any.
        self.drain_waiter: asyncio.Future[None] | None = None
        #: Why the connection is gone (what ``drain`` raises), once it is.
        self._lost: BaseException | None = None

    # -- reading -----------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- writing -----------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    async def drain(self) -> None:
        """Until the transport takes writes again; raises the error ``lose`` was given once
        the connection is gone."""
        if self._lost is not None:
            raise self._lost
        if self.write_paused:
            self.drain_waiter = drain = self.loop.create_future()
            try:
                await drain
            finally:
                self.drain_waiter = None

    def lose(self, error: BaseException) -> None:
        """The connection is gone: a writer waiting in ``drain`` (and any later) gets
        ``error``."""
        self._lost = error
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(error)

    def _wake(self) -> None:
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def wake_writer(self) -> None:
        """Let a writer waiting in ``drain`` look again (the exchange it writes for ended)."""
        self._wake()
