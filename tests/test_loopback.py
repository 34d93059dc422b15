"""The whole stack on real loopback sockets (port 0, bounded by fail_after)."""

from __future__ import annotations

import resource
from collections import Counter
from functools import partial

import trio

from trio_heartbeat import (
    ClientConfig,
    Close,
    Data,
    DisconnectReason,
    FrameDecoder,
    HeartbeatConnection,
    Hello,
    Pong,
    encode,
    open_connection,
    serve_tcp,
)
from trio_heartbeat._protocol import Frame


async def echo_upper(conn: HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data.upper())


async def read_frame(stream: trio.SocketStream, decoder: FrameDecoder) -> Frame | None:
    while (frame := decoder.next_frame()) is None:
        if decoder.eof:
            return None
        decoder.receive_data(await stream.receive_some(65536))
    return frame


async def test_thousand_concurrent_clients() -> None:
    clients = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * clients + 100
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    reasons: Counter[DisconnectReason] = Counter()
    all_connected = trio.Event()
    all_disconnected = trio.Event()
    connected = 0

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        reasons.update([reason])
        if sum(reasons.values()) == clients:
            all_disconnected.set()

    def on_connect(conn: HeartbeatConnection) -> None:
        nonlocal connected
        connected += 1
        if connected == clients:
            all_connected.set()

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(
                    serve_tcp,
                    echo_upper,
                    0,
                    host="127.0.0.1",
                    on_connect=on_connect,
                    on_disconnect=on_disconnect,
                )
            )
            port = listeners[0].socket.getsockname()[1]

            async def client(i: int) -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    decoder = FrameDecoder()
                    await stream.send_all(encode(Hello({"version": 1, "interval": 20})))
                    answer = await read_frame(stream, decoder)
                    assert isinstance(answer, Hello)
                    assert answer.fields["interval"] == 20
                    # Hold every connection open at once before the exchange.
                    await all_connected.wait()
                    await stream.send_all(encode(Data(b"client %d" % i)) + b"\x03\x00")
                    # The reader answers PING at once; the DATA reply comes from
                    # the handler, so the two may arrive in either order.
                    replies = [await read_frame(stream, decoder) for _ in range(2)]
                    assert sorted(map(repr, replies)) == sorted(
                        [repr(Data(b"CLIENT %d" % i)), repr(Pong())]
                    )
                    await stream.send_all(encode(Close(0, "")))
                    assert await read_frame(stream, decoder) == Close(0, "")
                    assert await read_frame(stream, decoder) is None

            async with trio.open_nursery() as clients_nursery:
                for i in range(clients):
                    clients_nursery.start_soon(client, i)
            await all_disconnected.wait()
            nursery.cancel_scope.cancel()
    assert reasons == {DisconnectReason.CLOSED_BY_PEER: clients}


async def test_library_client_over_tcp() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(serve_tcp, echo_upper, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            config = ClientConfig(interval=1, retry_interval=1)
            async with open_connection("127.0.0.1", port, config=config) as conn:
                assert conn.peer == f"127.0.0.1:{port}"
                await conn.send(b"over tcp")
                assert await conn.receive() == b"OVER TCP"
                await conn.ping()
                await trio.sleep(0.2)
                assert conn.stats.pongs_received == 1
                assert conn.rtt.srtt is not None and 0 <= conn.rtt.srtt < 0.2
            nursery.cancel_scope.cancel()
