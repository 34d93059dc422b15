"""Per-IP connection limits and shared-token authentication."""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_heartbeat import (
    ClientConfig,
    Close,
    CloseCode,
    ConnectionClosed,
    DisconnectReason,
    HeartbeatConnection,
    Hello,
    ServerConfig,
    connect_stream,
    serve_listeners,
    serve_tcp,
)

from .helpers import (
    MemoryListener,
    RawPeer,
    echo,
    listening_port,
    start_cli,
    tcp_peer,
)


async def hello_over_tcp(port: int, local: str) -> tuple[trio.abc.Stream, Any]:
    """HELLO from address ``local``; the stream and the server's first frame."""
    peer = await tcp_peer(port, local=local)
    await peer.send(Hello({"version": 1}))
    return peer.stream, await peer.receive()


async def test_max_connections_per_ip() -> None:
    reasons: list[tuple[str, DisconnectReason]] = []
    refused, left = trio.Event(), trio.Event()

    def on_refuse(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        reasons.append(("refuse", reason))
        refused.set()

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        reasons.append(("disconnect", reason))
        left.set()

    config = ServerConfig(max_connections_per_ip=2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(
                    serve_tcp, echo, 0, host="127.0.0.1", config=config,
                    on_disconnect=on_disconnect, on_refuse=on_refuse,
                )
            )  # fmt: skip
            port = listeners[0].socket.getsockname()[1]
            first, a = await hello_over_tcp(port, "127.0.0.1")
            second, b = await hello_over_tcp(port, "127.0.0.1")
            third, c = await hello_over_tcp(port, "127.0.0.1")
            assert isinstance(a, Hello) and isinstance(b, Hello)
            assert c == Close(6, "too many connections from 127.0.0.1 (2)")
            await third.aclose()  # the refused client goes; the server is done
            await refused.wait()
            assert reasons == [("refuse", DisconnectReason.SERVER_FULL)]
            # Another address (127.0.0.2 is loopback too) is not affected.
            other, d = await hello_over_tcp(port, "127.0.0.2")
            assert isinstance(d, Hello)
            # When one leaves, there is room again.
            await first.aclose()
            await left.wait()
            fourth, e = await hello_over_tcp(port, "127.0.0.1")
            assert isinstance(e, Hello)
            for stream in (second, third, other, fourth):
                await stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("offered", [None, "wrong", "", 12345])
async def test_wrong_or_missing_token_gets_close_7_only(
    autojump_clock: Any, offered: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    listener = MemoryListener()
    config = ServerConfig(token="s3cret-token")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_listeners, echo, [listener], config=config))
        peer = RawPeer(await listener.connect())
        fields: dict[str, object] = {"version": 1}
        if offered is not None:
            fields["token"] = offered
        await peer.send(Hello(fields))
        assert await peer.receive() == Close(7, "authentication failed")
        await peer.expect_eof()
        nursery.cancel_scope.cancel()
    assert "s3cret-token" not in caplog.text


async def test_right_token_is_accepted_and_not_kept(autojump_clock: Any) -> None:
    listener = MemoryListener()
    seen: list[dict[str, Any]] = []

    async def handler(conn: HeartbeatConnection) -> None:
        seen.append(dict(conn.peer_hello))
        await echo(conn)

    config = ServerConfig(token="s3cret-token")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve_listeners, handler, [listener], config=config)
        )
        client = ClientConfig(token="s3cret-token", client_id="c1")
        assert "s3cret" not in repr(client) and "s3cret" not in repr(config)
        async with connect_stream(await listener.connect(), config=client) as conn:
            await conn.send(b"in")
            assert await conn.receive() == b"in"
        with pytest.raises(ConnectionClosed) as info:
            async with connect_stream(await listener.connect(), config=ClientConfig()):
                pass
        assert info.value.code == CloseCode.HANDSHAKE_FAILED
        nursery.cancel_scope.cancel()
    assert seen and "token" not in seen[0] and seen[0]["client_id"] == "c1"


async def test_token_files_on_the_command_line(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cli-secret-42\n")
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("nope\n")
    async with trio.open_nursery() as nursery:
        server = await start_cli(
            nursery, "serve", "--port", "0", "--token-file", str(token_file),
            "--log-level", "DEBUG",
        )  # fmt: skip
        assert server.stderr is not None
        with trio.fail_after(30):
            port = str(await listening_port(server))
            ok = await trio.run_process(
                [sys.executable, "-m", "trio_heartbeat", "connect", "--port", port,
                 "--token-file", str(token_file)],
                stdin=b"hello\n", capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert (ok.returncode, ok.stdout) == (0, b"HELLO\n")
            bad = await trio.run_process(
                [sys.executable, "-m", "trio_heartbeat", "connect", "--port", port,
                 "--token-file", str(wrong_file)],
                stdin=b"hello\n", capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert bad.returncode == 1
            assert b"CLOSE 7 HANDSHAKE_FAILED" in bad.stderr
            assert b"authentication failed" in bad.stderr
            server.terminate()
            await server.wait()
            log = b""
            while chunk := await server.stderr.receive_some(65536):
                log += chunk
        nursery.cancel_scope.cancel()
    assert b"authentication failed" in log
    assert b"cli-secret-42" not in log and b"nope" not in log


def test_unreadable_token_file_is_a_usage_error(tmp_path: Path) -> None:
    from trio_heartbeat._cli import main

    assert main(["serve", "--token-file", str(tmp_path / "missing")]) == 2
