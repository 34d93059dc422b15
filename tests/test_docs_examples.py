"""Run the tutorials' files, so the docs cannot rot (tutorial 4 is itself a test)."""

from __future__ import annotations

import importlib.util
import sys
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

import trio_heartbeat

from .helpers import MemoryListener, RawPeer

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"docs_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_tutorial_1_server_and_client(capsys: pytest.CaptureFixture[str]) -> None:
    server, client = load("first_server"), load("first_client")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(server.main, 0))
            await client.main(listeners[0].socket.getsockname()[1])
            nursery.cancel_scope.cancel()
    assert capsys.readouterr().out == "server says ping every 25.0 s\nHELLO\n"


async def test_tutorial_2_presence_and_cleanup(autojump_clock: Any) -> None:
    chat = load("chat_server")
    listener = MemoryListener()
    server = chat.ChatServer(trio_heartbeat.ServerConfig(timeout=30))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        alice = RawPeer(await listener.connect())
        await alice.hello(interval=10, client_id="alice")
        bob = RawPeer(await listener.connect())
        await bob.hello(interval=10, client_id="bob")
        assert await alice.receive() == trio_heartbeat.Data(b"* alice joined")
        assert await alice.receive() == trio_heartbeat.Data(b"* bob joined")
        assert await bob.receive() == trio_heartbeat.Data(b"* bob joined")
        await bob.send(trio_heartbeat.Data(b"hi all"))
        assert await alice.receive() == trio_heartbeat.Data(b"bob: hi all")
        assert set(server.online) == {"alice", "bob"}
        # Alice keeps heartbeating; Bob's machine loses power (he goes silent).
        start = trio.current_time()
        for _ in range(4):
            await trio.sleep(10)
            await alice.send(trio_heartbeat.Ping())
            assert await alice.receive() == trio_heartbeat.Pong()
            if trio.current_time() - start >= 30:
                break
        assert await alice.receive() == trio_heartbeat.Data(
            b"* bob left (heartbeat timeout)"
        )
        assert set(server.online) == {"alice"}
        nursery.cancel_scope.cancel()


async def test_tutorial_3_reconnecting_client(autojump_clock: Any) -> None:
    client = load("resilient_client")
    listener = MemoryListener()
    connects = 0

    async def handler(conn: trio_heartbeat.HeartbeatConnection) -> None:
        await conn.send(b"welcome")
        await trio.sleep(25)  # long enough for a couple of heartbeats
        # then the handler returns: the server closes, the client reconnects

    async def flaky_open() -> trio.abc.Stream:
        nonlocal connects
        connects += 1
        if connects == 2:
            raise OSError(101, "Network is unreachable")
        return await listener.connect()

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                trio_heartbeat.serve_listeners,
                handler,
                [listener],
                pong_payload=lambda conn, ping: b"3",
            )
        )
        events = await client.main(flaky_open, connections=2)
        nursery.cancel_scope.cancel()
    assert events == [
        "connected (#1)",
        "got welcome",
        "unread: 3",
        "unread: 3",
        "ended: None",
        "failed: [Errno 101] Network is unreachable",
        "connected (#2)",
        "got welcome",
        "unread: 3",
        "unread: 3",
        "ended: None",
    ]
