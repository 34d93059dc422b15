"""Frame tracing at DEBUG: one line per frame, both directions, nothing when off."""

from __future__ import annotations

import logging

import pytest
import trio

import trio_heartbeat
from trio_heartbeat import Close, Data, Hello, Ping, Pong

from .helpers import echo_upper, tcp_peer, tcp_server

TRACE = "trio_heartbeat.frames"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == TRACE]


async def test_every_frame_is_traced_both_ways(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=TRACE)
    with trio.fail_after(10):
        async with tcp_server(echo_upper) as port:
            peer = await tcp_peer(port)
            me = peer.name
            await peer.send(Hello({"version": 1, "interval": 25, "token": "s3cret"}))
            assert isinstance(await peer.receive(), Hello)
            await peer.send(Data(b"hi"))
            assert await peer.receive() == Data(b"HI")
            await peer.send(Ping(b"x" * 40))
            assert await peer.receive() == Pong(b"x" * 40)
            await peer.send(Close(0, "bye"))
            assert await peer.receive() == Close(0, "")
            await peer.expect_eof()
    lines = _lines(caplog)
    received = [line for line in lines if line.startswith(f"{me} <")]
    sent = [line for line in lines if line.startswith(f"{me} >")]
    assert received == [
        f"{me} < HELLO version=1, interval=25 (46 bytes)",
        f"{me} < DATA b'hi' (4 bytes)",
        f"{me} < PING b'{'x' * 32}'... (42 bytes)",
        f"{me} < CLOSE 0 'bye' (6 bytes)",
    ]
    assert sent[0].startswith(f"{me} > HELLO version=1, interval=25.0, timeout=60.0")
    assert sent[1:] == [
        f"{me} > DATA b'HI' (4 bytes)",
        f"{me} > PONG b'{'x' * 32}'... (42 bytes)",
        f"{me} > CLOSE 0 (3 bytes)",
    ]
    assert not any("s3cret" in line for line in lines)


async def test_nothing_is_traced_below_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=TRACE)
    with trio.fail_after(10):
        async with (
            tcp_server(echo_upper) as port,
            trio_heartbeat.open_connection("127.0.0.1", port) as conn,
        ):
            await conn.send(b"hi")
            assert await conn.receive() == b"HI"
            await conn.ping()
    assert _lines(caplog) == []


async def test_undecodable_input_stops_that_direction_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=TRACE)
    with trio.fail_after(10):
        async with tcp_server(echo_upper) as port:
            peer = await tcp_peer(port)
            me = peer.name
            await peer.send(Hello({"version": 1, "interval": 25}))
            assert isinstance(await peer.receive(), Hello)
            await peer.stream.send_all(b"\x7f\x00")
            assert await peer.receive() == Close(2, "unknown frame type 0x7f")
            await peer.expect_eof()
    assert _lines(caplog)[2:] == [
        f"{me} < undecodable bytes (unknown frame type 0x7f); "
        "tracing of this direction stops",
        f"{me} > CLOSE 2 'unknown frame type 0x7f' (26 bytes)",
    ]
