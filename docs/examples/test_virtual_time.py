"""Tutorial 4: testing heartbeat code in virtual time.

With pytest-trio's ``autojump_clock`` fixture, the clock jumps ahead whenever
every task is waiting, so a 60-second timeout takes milliseconds and is checked
to the exact value. Use in-memory streams, not sockets: the autojump clock must
not run while real I/O is in flight.

Run with ``pytest test_virtual_time.py`` (``trio_mode = true`` in your pytest
configuration, or mark each test with ``@pytest.mark.trio``).
"""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

import trio_heartbeat


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands the server one end of an in-memory stream pair per connect()."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](10)

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()


async def echo(conn: trio_heartbeat.HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data)


async def test_silent_client_is_kicked_at_exactly_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryListener()
    kicked_at: list[float] = []
    config = trio_heartbeat.ServerConfig(timeout=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                trio_heartbeat.serve_listeners,
                echo,
                [listener],
                config=config,
                on_disconnect=lambda conn, reason: kicked_at.append(
                    trio.current_time()
                ),
            )
        )
        # A client that never heartbeats: enabled=False turns its PINGs off.
        silent = trio_heartbeat.ClientConfig(enabled=False)
        start = trio.current_time()
        with pytest.raises(trio_heartbeat.ConnectionClosed) as info:
            async with trio_heartbeat.connect_stream(
                await listener.connect(), config=silent
            ) as conn:
                await conn.receive()
        assert info.value.code == trio_heartbeat.CloseCode.HEARTBEAT_TIMEOUT
        assert trio.current_time() - start == 60  # to the exact virtual second
        assert kicked_at == [start + 60]
        nursery.cancel_scope.cancel()


async def test_dead_server_is_detected_at_the_documented_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A "server" that completes the handshake, then never answers again.
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def frozen_server() -> None:
        await server_stream.receive_some()  # the client's HELLO
        answer = {"version": 1, "interval": 10, "timeout": 60, "min_interval": 1}
        await server_stream.send_all(
            trio_heartbeat.encode(trio_heartbeat.Hello(answer))
        )
        await trio.sleep_forever()

    config = trio_heartbeat.ClientConfig(interval=10, retries=3, retry_interval=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(frozen_server)
        start = trio.current_time()
        with pytest.raises(trio_heartbeat.HeartbeatTimeout):
            async with trio_heartbeat.connect_stream(client_stream, config=config):
                await trio.sleep_forever()
        # First PING after 10 s idle, then 4 PINGs x 2 s: dead at 10 + 8 = 18 s.
        assert trio.current_time() - start == 18
        nursery.cancel_scope.cancel()
