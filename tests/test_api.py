"""The library API as an application uses it: how connections end, exceptions,
hooks, identity, pings that wait, reconnect loops, shutdown."""

from __future__ import annotations

import logging
import os
import signal
import ssl
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from trio_heartbeat import (
    ClientConfig,
    Close,
    CloseCode,
    ConnectionClosed,
    Data,
    DisconnectReason,
    HandshakeError,
    HeartbeatConnection,
    HeartbeatServer,
    Hello,
    Negotiated,
    Ping,
    Pong,
    ServerConfig,
    cancel_on_signals,
    connect_stream,
    reconnecting,
)

from .helpers import MemoryListener, RawPeer, echo_upper, tcp_peer

# ------------------------------------------------------------ how connections end


@pytest.mark.parametrize(
    ("close", "ends"),
    [
        (Close(0, "bye"), None),
        (Close(1, "nothing received for 60 s"), DisconnectReason.CLOSED_BY_PEER),
        (Close(5, "server shutting down"), DisconnectReason.CLOSED_BY_PEER),
    ],
)
async def test_async_for_stops_only_at_a_normal_close(
    autojump_clock: Any, close: Close, ends: DisconnectReason | None
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        @nursery.start_soon
        async def server() -> None:
            assert isinstance(await peer.receive(), Hello)
            hello = Negotiated(interval=25.0, timeout=60.0, min_interval=1.0,
                               max_frame_size=1 << 20).to_hello()  # fmt: skip
            await peer.send(Hello(hello))
            await peer.send(Data(b"one"))
            await peer.send(close)

        try:
            async with connect_stream(client_stream) as conn:
                async for data in conn:
                    got.append(data)
            raised = None
        except ConnectionClosed as exc:
            raised = exc
    assert got == [b"one"]
    if ends is None:
        assert raised is None
    else:
        assert raised is not None
        assert (raised.code, raised.disconnect_reason) == (close.code, ends)
        assert raised.reason == close.reason


# ------------------------------------------------------------ reconnect loops


async def test_a_nursery_inside_an_attempt_ends_the_attempt_not_the_program(
    autojump_clock: Any,
) -> None:
    """The normal Trio pattern: tasks of one's own in a nursery inside the
    attempt. When the server kicks the client, their ConnectionClosed comes
    wrapped in exception groups; the attempt still ends quietly and the loop
    reconnects."""
    config = ServerConfig(timeout=10, min_interval=1, lag_probe_interval=None)
    server = HeartbeatServer(echo_upper, config=config)
    listener = MemoryListener()
    attempts = []
    async with trio.open_nursery() as outer:
        await outer.start(server.serve_listeners, [listener])
        quiet = ClientConfig(enabled=False)  # never PINGs: kicked at 10 s
        loop = reconnect_over(listener, config=quiet)
        async for attempt in loop:
            async with attempt as conn, trio.open_nursery() as mine:
                mine.start_soon(conn.receive)
                mine.start_soon(conn.receive)
                await trio.sleep_forever()
            attempts.append(attempt)
            if len(attempts) == 2:
                break
        outer.cancel_scope.cancel()
    for attempt in attempts:
        assert isinstance(attempt.failure, ConnectionClosed)
        assert attempt.failure.code == CloseCode.HEARTBEAT_TIMEOUT
        assert attempt.failure.connecting is False  # type: ignore[attr-defined]


def reconnect_over(listener: MemoryListener, **kwargs: Any) -> Any:
    from trio_heartbeat import Backoff, Reconnector

    return Reconnector(
        listener.connect, backoff=Backoff(jitter=False), name="test", **kwargs
    )


def test_reconnecting_takes_a_name() -> None:
    loop = reconnecting("example.net", 5005, name="gateway")
    assert loop.name == "gateway"
    assert reconnecting("example.net", 5005).name == "example.net:5005"


async def test_a_certificate_error_is_permanent_and_keeps_its_cause() -> None:
    """A certificate that does not verify will not verify on the next try: the
    loop raises it, with the SSL error as its cause, instead of retrying."""
    ca, other_ca = trustme.CA(), trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    other_ca.configure_trust(client_context)  # does not trust the server's CA
    failures: list[BaseException] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = HeartbeatServer(echo_upper)
            await nursery.start(
                partial(
                    server.serve_tcp, 0, host="127.0.0.1", ssl_context=server_context
                )
            )
            ((_, port),) = server.addresses
            loop = reconnecting(
                "127.0.0.1", port, ssl_context=client_context,
                on_failure=lambda exc, window: failures.append(exc),
            )  # fmt: skip
            with pytest.raises(ConnectionClosed) as error:
                async for _ in loop:
                    pytest.fail("connected without a trusted certificate")
            nursery.cancel_scope.cancel()
    assert isinstance(error.value.__cause__, ssl.SSLCertVerificationError)
    assert error.value.disconnect_reason is DisconnectReason.HANDSHAKE_FAILED
    assert not error.value.by_peer  # we refused its certificate
    assert failures == [error.value]  # tried once, not again


# ------------------------------------------------------------ hooks and identity


async def test_hooks_pair_and_refusals_have_their_own(autojump_clock: Any) -> None:
    events: list[tuple[str, DisconnectReason | None]] = []

    async def authenticate(hello: Any) -> object:
        if hello.get("token") != "secret":
            raise HandshakeError("who are you?")
        return {"user": hello["client_id"]}

    server = HeartbeatServer(
        echo_upper,
        config=ServerConfig(max_connections=1, lag_probe_interval=None),
        authenticate=authenticate,
        on_connect=lambda c: events.append(("connect", None)),
        on_disconnect=lambda c, r: events.append(("disconnect", r)),
        on_refuse=lambda c, r: events.append(("refuse", r)),
    )
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        stranger = RawPeer(await listener.connect())
        await stranger.send(Hello({"version": 1, "client_id": "x"}))
        assert await stranger.receive() == Close(7, "who are you?")
        await stranger.expect_eof()
        await trio.testing.wait_all_tasks_blocked()  # the server is done with it
        member = RawPeer(await listener.connect())
        await member.hello(client_id="device-7", token="secret")
        (conn,) = server.connections_of("device-7")
        assert conn.client_id == "device-7"
        assert conn.identity == {"user": "device-7"}
        assert "token" not in conn.peer_hello  # checked, then dropped
        conn.state = "anything the application keeps"
        full = RawPeer(await listener.connect())
        assert await full.receive() == Close(6, "server full (1 connections)")
        await full.expect_eof()
        await member.send(Close(0, ""))
        assert await member.receive() == Close(0, "")
        await member.expect_eof()
        await trio.testing.wait_all_tasks_blocked()
        assert server.connections_of("device-7") == []
        nursery.cancel_scope.cancel()
    assert events == [
        ("refuse", DisconnectReason.HANDSHAKE_FAILED),
        ("connect", None),
        ("refuse", DisconnectReason.SERVER_FULL),
        ("disconnect", DisconnectReason.CLOSED_BY_PEER),
    ]
    figures = server.statistics()
    assert figures.connections_opened == 3
    assert figures.disconnects == {
        DisconnectReason.HANDSHAKE_FAILED: 1,
        DisconnectReason.SERVER_FULL: 1,
        DisconnectReason.CLOSED_BY_PEER: 1,
    }


# ------------------------------------------------------------ pings that wait


async def test_ping_waits_for_its_pong(autojump_clock: Any) -> None:
    """``await conn.ping(payload)`` returns when its PONG arrives: the round
    trip and the PONG's payload (the server's hook may put its own there),
    matched by its place among all PINGs, heartbeats included."""
    server = HeartbeatServer(
        echo_upper,
        config=ServerConfig(lag_probe_interval=None),
        pong_payload=lambda conn, ping: b"unread=3;" + ping,
    )
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        stream = await listener.connect()
        async with connect_stream(stream) as conn:
            first = await conn.ping(b"a")
            second = await conn.ping(b"b")
            assert (first.payload, second.payload) == (b"unread=3;a", b"unread=3;b")
            assert first.rtt == 0.0  # virtual time: no latency
            await trio.sleep(60)  # heartbeats meanwhile
            assert (await conn.ping(b"c")).payload == b"unread=3;c"
        nursery.cancel_scope.cancel()


async def test_ping_raises_when_the_connection_ends(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    async with trio.open_nursery() as nursery:

        @nursery.start_soon
        async def server() -> None:
            assert isinstance(await peer.receive(), Hello)
            hello = Negotiated(interval=25.0, timeout=60.0, min_interval=1.0,
                               max_frame_size=1 << 20).to_hello()  # fmt: skip
            await peer.send(Hello(hello))
            assert isinstance(await peer.receive(), Ping)  # never answered
            await peer.send(Close(5, "going"))

        with pytest.raises(ConnectionClosed) as error:
            async with connect_stream(client_stream) as conn:
                await conn.ping()
        assert error.value.code == CloseCode.SHUTTING_DOWN
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------ shutdown


async def test_cancel_on_signals_shuts_a_server_down_cleanly() -> None:
    received: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            server = HeartbeatServer(echo_upper)
            serving = trio.Event()

            @outer.start_soon
            async def program() -> None:
                # The application's main: the server, and the signal watcher
                # that cancels it.
                async with trio.open_nursery() as nursery:
                    await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
                    nursery.start_soon(watch, nursery.cancel_scope)
                    serving.set()
                # Returned normally: no exception, no traceback.

            async def watch(scope: trio.CancelScope) -> None:
                received.append(await cancel_on_signals(scope, [signal.SIGUSR2]))

            await serving.wait()
            ((_, port),) = server.addresses
            peer = await tcp_peer(port)
            await peer.hello()
            await trio.testing.wait_all_tasks_blocked()  # the handler is in place
            os.kill(os.getpid(), signal.SIGUSR2)
            assert await peer.receive() == Close(5, "server shutting down")
            await peer.expect_eof()
    assert received == [signal.SIGUSR2]


# ------------------------------------------------------------ smaller things


def test_the_library_is_silent_unless_the_application_configures_logging() -> None:
    handlers = logging.getLogger("trio_heartbeat").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_the_detection_bound_uses_the_negotiated_values() -> None:
    config = ClientConfig(interval=100, retries=2, retry_interval=0.5)
    granted = Negotiated(interval=30.0, timeout=60.0, min_interval=1.0,
                         max_frame_size=1 << 20)  # fmt: skip
    assert config.detection_bound == 100 + 3 * 0.5
    assert granted.detection_bound(config) == 30 + 3 * 1.0  # resends >= 1 s apart


def test_attributes_say_what_they_are() -> None:
    for name in ("closed", "peer_hello", "client_id", "negotiated", "stats"):
        assert (getattr(HeartbeatConnection, name).__doc__ or "").strip(), name
    assert Pong().payload == b""
