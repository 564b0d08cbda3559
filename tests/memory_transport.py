"""The in-memory asyncio transport the protocol tests drive (it lives in ``bench`` because
``bench.hotpath`` drives the same protocols)."""

from bench.in_memory import MemoryTransport, connect

__all__ = ["MemoryTransport", "connect"]
