"""The supervisor-worker channel over a real Unix socket pair."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from lbproxy._channel import MOST, Channel, ChannelClosedError


async def test_messages_arrive_whole_and_in_order_and_the_end_is_told() -> None:
    a, b = socket.socketpair()
    left, right = await Channel.open(a), await Channel.open(b)
    big = bytes(range(256)) * 8192  # 2 MiB: more than one read
    left.send({"n": 1})
    left.send(big)
    left.send(("done", 3))
    await left.drain()
    assert await right.recv() == {"n": 1}
    assert await right.recv() == big
    assert await right.recv() == ("done", 3)
    left.close()
    with pytest.raises(ChannelClosedError):
        await right.recv()
    with pytest.raises(ChannelClosedError):
        left.send("after close")
    right.close()


async def test_a_corrupt_length_ends_the_channel_instead_of_allocating() -> None:
    a, b = socket.socketpair()
    reader = await Channel.open(b)
    a.sendall(struct.pack("!I", MOST + 1))
    with pytest.raises(ChannelClosedError, match="corrupt"):
        await asyncio.wait_for(reader.recv(), 2)
    a.close()
    reader.close()
