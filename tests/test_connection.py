"""HeartbeatConnection's own contract, over in-memory streams."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_heartbeat import (
    Close,
    ConnectionClosed,
    Data,
    DisconnectReason,
    HeartbeatConnection,
)

from .helpers import RawPeer


async def test_aclose_is_idempotent_and_sends_one_close(autojump_clock: Any) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    conn = HeartbeatConnection(ours)
    peer = RawPeer(theirs)
    await conn.aclose(0, "done")
    await conn.aclose()
    assert await peer.receive() == Close(0, "done")
    await peer.expect_eof()
    with pytest.raises(ConnectionClosed) as info:
        await conn.send(b"late")
    assert info.value.disconnect_reason is DisconnectReason.CLOSED_LOCALLY


async def test_aclose_closes_the_stream_even_when_cancelled(
    autojump_clock: Any,
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    conn = HeartbeatConnection(ours)
    peer = RawPeer(theirs)
    with trio.CancelScope() as scope:
        scope.cancel()
        await conn.aclose()
    # The CLOSE went out (shielded) and the stream is closed.
    assert await peer.receive() == Close(0, "")
    await peer.expect_eof()
    with pytest.raises(trio.ClosedResourceError):
        await ours.send_all(b"x")


async def test_aclose_against_a_peer_that_never_reads(autojump_clock: Any) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()
    conn = HeartbeatConnection(ours, close_timeout=2)
    start = trio.current_time()
    await conn.aclose()  # the CLOSE cannot be delivered: bounded by close_timeout
    assert trio.current_time() - start == 2
    with pytest.raises(trio.ClosedResourceError):
        await ours.send_all(b"x")


async def test_send_larger_than_peer_limit_is_refused(autojump_clock: Any) -> None:
    ours, _ = trio.testing.memory_stream_pair()
    conn = HeartbeatConnection(ours)
    conn.peer_max_frame_size = 10
    with pytest.raises(ValueError, match="DATA of 11 bytes exceeds the peer's"):
        await conn.send(b"x" * 11)
    await conn.send(b"x" * 10)


async def test_concurrent_sends_do_not_interleave(autojump_clock: Any) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    conn = HeartbeatConnection(ours)
    peer = RawPeer(theirs)
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(conn.send, bytes([i]) * 5000)
    got = sorted([(await peer.receive()) for _ in range(20)], key=repr)
    assert got == sorted([Data(bytes([i]) * 5000) for i in range(20)], key=repr)
