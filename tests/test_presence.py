"""Presence in one process (MemoryPresence) with a real HeartbeatServer: who is
listed, with what, for how long; the duplicate rule; the events. Memory
streams, virtual time."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_heartbeat import (
    ClientConfig,
    Close,
    CloseCode,
    ConnectionClosed,
    HeartbeatServer,
    LeaveReason,
    MemoryPresence,
    Ping,
    Pong,
    PresenceEvent,
    Reconnector,
    ServerConfig,
    connect_stream,
)

from .helpers import MemoryListener, RawPeer, echo_upper

CONFIG = ServerConfig(timeout=10, min_interval=0.1)


async def _serve(
    nursery: trio.Nursery, presence: MemoryPresence, duplicate: Any = "allow"
) -> tuple[HeartbeatServer, MemoryListener]:
    server = HeartbeatServer(
        echo_upper, config=CONFIG, presence=presence, duplicate=duplicate
    )
    listener = MemoryListener()
    await nursery.start(server.serve_listeners, [listener])
    return server, listener


async def _events(
    presence: MemoryPresence,
    into: list[PresenceEvent],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with presence.watch() as events:
        task_status.started()
        async for event in events:
            into.append(event)


async def _watched(
    nursery: trio.Nursery, duplicate: Any = "allow", node: str = "n"
) -> tuple[MemoryPresence, HeartbeatServer, MemoryListener, list[PresenceEvent]]:
    """A store, its events as they come, and a server listing into it."""
    presence = MemoryPresence(node)
    seen: list[PresenceEvent] = []
    await nursery.start(_events, presence, seen)
    server, listener = await _serve(nursery, presence, duplicate)
    return presence, server, listener, seen


async def test_a_named_client_is_listed_while_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        presence, server, listener, seen = await _watched(nursery, node="node-1")
        alice = RawPeer(await listener.connect())
        await alice.hello(interval=5, client_id="alice", meta={"device": "phone"})
        anonymous = RawPeer(await listener.connect())
        await anonymous.hello(interval=5)  # served, not listed
        await trio.sleep(1)
        [session] = await presence.online()
        assert (session.client_id, session.node, session.meta) == (
            "alice", "node-1", {"device": "phone"},
        )  # fmt: skip
        assert session.peer == server.connections_of("alice")[0].peer
        assert await presence.is_online("alice")
        assert not await presence.is_online("bob")
        figures = server.metrics()
        assert (figures.presence_listed, figures.presence_unreachable) == (1, 0)
        await alice.send(Close(CloseCode.NORMAL, "bye"))
        await trio.sleep(1)
        assert await presence.online() == []
        assert [(e.kind, e.session.client_id, e.reason) for e in seen] == [
            ("join", "alice", None), ("leave", "alice", LeaveReason.CLOSED),
        ]  # fmt: skip
        nursery.cancel_scope.cancel()


async def test_a_kicked_client_leaves_as_kicked_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        _, _, listener, seen = await _watched(nursery)
        peer = RawPeer(await listener.connect())
        await peer.hello(interval=5, client_id="quiet")
        start = trio.current_time()
        frame = await peer.receive()
        assert isinstance(frame, Close) and frame.code == CloseCode.HEARTBEAT_TIMEOUT
        assert trio.current_time() - start == pytest.approx(10)
        await peer.stream.aclose()
        await trio.sleep(1)
        assert [(e.kind, e.reason) for e in seen] == [
            ("join", None), ("leave", LeaveReason.KICKED),
        ]  # fmt: skip
        nursery.cancel_scope.cancel()


async def test_replace_closes_the_older_session_with_close_8(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        presence, server, listener, seen = await _watched(nursery, "replace")
        old = RawPeer(await listener.connect())
        await old.hello(interval=5, client_id="alice")
        await trio.sleep(1)
        new = RawPeer(await listener.connect())
        await new.hello(interval=5, client_id="alice")
        frame = await old.receive()
        assert frame == Close(
            CloseCode.REPLACED, "replaced by a newer session of this client_id"
        )
        await old.send(Close(CloseCode.NORMAL, ""))
        assert await old.receive_or_eof() is None
        # The newer one is served and listed, alone.
        await new.send(Ping())
        assert await new.receive() == Pong()
        [listed] = await presence.sessions_of("alice")
        assert listed.peer == server.connections_of("alice")[0].peer
        assert len(server.connections_of("alice")) == 1
        assert [(e.kind, e.reason) for e in seen] == [
            ("join", None), ("leave", LeaveReason.REPLACED), ("join", None),
        ]  # fmt: skip
        nursery.cancel_scope.cancel()


async def test_reject_refuses_the_newcomer_with_close_7(
    autojump_clock: trio.testing.MockClock,
) -> None:
    presence = MemoryPresence("n")
    async with trio.open_nursery() as nursery:
        _, listener = await _serve(nursery, presence, "reject")
        first = RawPeer(await listener.connect())
        await first.hello(interval=5, client_id="alice")
        second = RawPeer(await listener.connect())
        await second.send(_hello("alice"))
        frame = await second.receive()
        assert isinstance(frame, Close)
        assert frame.code == CloseCode.HANDSHAKE_FAILED
        assert frame.reason.startswith("client_id 'alice' is already connected (on n")
        await first.send(Ping())
        assert await first.receive() == Pong()  # the first is untouched
        assert len(await presence.sessions_of("alice")) == 1
        nursery.cancel_scope.cancel()


async def test_allow_lists_every_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    presence = MemoryPresence("n")
    async with trio.open_nursery() as nursery:
        _, listener = await _serve(nursery, presence)
        for _ in range(2):
            peer = RawPeer(await listener.connect())
            await peer.hello(interval=5, client_id="alice")
        assert len(await presence.sessions_of("alice")) == 2
        nursery.cancel_scope.cancel()


async def test_a_replaced_client_does_not_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reconnecting client that was replaced would replace the newer one in
    turn, and the two would take turns forever: CLOSE(8) is permanent."""
    presence = MemoryPresence("n")
    client = ClientConfig(interval=1, client_id="alice")
    async with trio.open_nursery() as nursery:
        _, listener = await _serve(nursery, presence, "replace")
        attempts = 0

        async def open_path() -> trio.abc.Stream:
            nonlocal attempts
            attempts += 1
            return await listener.connect()

        async def replace_soon() -> None:
            await trio.sleep(3)
            async with connect_stream(await listener.connect(), config=client):
                await trio.sleep(5)

        nursery.start_soon(replace_soon)
        loop = Reconnector(open_path, config=client)
        with pytest.raises(ConnectionClosed) as caught:
            async for attempt in loop:
                async with attempt:
                    await trio.sleep(60)
        assert caught.value.code == CloseCode.REPLACED
        assert attempts == 1
        nursery.cancel_scope.cancel()


def test_an_unknown_duplicate_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate must be one of allow, replace"):
        HeartbeatServer(echo_upper, duplicate="kick")  # type: ignore[arg-type]


def _hello(client_id: str) -> Any:
    from trio_heartbeat import Hello

    return Hello({"version": 1, "interval": 5, "client_id": client_id})


def test_presence_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_heartbeat._cli import main

    assert main(["presence", "--redis", "http://127.0.0.1:6379"]) == 2
    assert "presence URL must be redis://HOST:PORT/DB, not 'http://" in (
        capsys.readouterr().err
    )
    assert main(["serve", "--presence", "mongodb://127.0.0.1"]) == 2
    assert "--presence must be memory or redis://HOST:PORT/DB, not 'mongodb://" in (
        capsys.readouterr().err
    )
    assert main(["serve", "--presence-ttl", "0"]) == 2
    assert "--presence-ttl must be a positive number, not 0.0" in (
        capsys.readouterr().err
    )
    argv = ["serve", "--protocol", "legacy", "--presence", "redis://127.0.0.1:1/0"]
    assert main(argv) == 2
    assert "--presence needs the framed protocol" in capsys.readouterr().err
    assert main(["serve", "--duplicate", "kick"]) == 2
    assert "invalid choice: 'kick'" in capsys.readouterr().err
