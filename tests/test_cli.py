"""The command line: usage in-process, the rest as real subprocesses on loopback.

Every socket binds port 0 on 127.0.0.1 and every wait is bounded by fail_after.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from trio_heartbeat import Close, Data, Hello, Ping, Pong
from trio_heartbeat._cli import main

from .helpers import RawPeer, listening_port

PYTHON = sys.executable


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--bogus"]) == 2
    assert main(["serve", "--timeout", "-1"]) == 2
    assert "timeout must be a positive number, not -1.0" in capsys.readouterr().err
    assert main(["connect", "--retries", "x"]) == 2
    assert main(["connect", "--max-backoff", "0"]) == 2
    assert "--max-backoff must be a positive number, not 0.0" in capsys.readouterr().err
    assert main([]) == 2


def test_help_lists_the_contract_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--host", "--port", "--timeout", "--handshake-timeout", "--min-interval",
        "--max-frame-size", "--max-connections", "--no-heartbeat", "--log-level",
    ):  # fmt: skip
        assert flag in out
    assert main(["connect", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--port",
        "--interval",
        "--retries",
        "--retry-interval",
        "--reconnect",
        "--max-backoff",
    ):
        assert flag in out


@asynccontextmanager
async def serve_process(*flags: str) -> AsyncIterator[tuple[trio.Process, int]]:
    """Run `python -m trio_heartbeat serve --port 0` and yield (process, port)."""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [PYTHON, "-m", "trio_heartbeat", "serve", "--port", "0", *flags],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stdout is not None
        with trio.fail_after(10):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        text = line.decode().strip()
        assert text.startswith("listening on 127.0.0.1:"), text
        port = int(text.rsplit(":", 1)[1])
        try:
            yield process, port
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await process.wait()


async def test_serve_subprocess_speaks_the_wire_protocol() -> None:
    async with serve_process("--timeout", "2", "--min-interval", "0.5") as (
        process,
        port,
    ):
        with trio.fail_after(10):
            wire = RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
            await wire.stream.send_all(b'\x01\x1b{"version":1,"interval":25}')
            answer = await wire.receive_or_eof()
            assert answer == Hello(
                {
                    "version": 1,
                    "interval": 1.0,
                    "timeout": 2.0,
                    "min_interval": 0.5,
                    "max_frame_size": 1048576,
                }
            )
            await wire.stream.send_all(b"\x03\x00")
            assert await wire.receive_or_eof() == Pong()
            await wire.stream.send_all(b"\x02\x02hi")
            assert await wire.receive_or_eof() == Data(b"HI")
            # Silent now: kicked after the 2 s timeout with CLOSE(1), then EOF.
            started = time.monotonic()
            assert await wire.receive_or_eof() == Close(1, "nothing received for 2 s")
            assert 1.5 < time.monotonic() - started < 3.5
            assert await wire.receive_or_eof() is None
            await wire.stream.aclose()
        # SIGTERM: graceful shutdown, CLOSE(5) to connected clients, exit 0.
        with trio.fail_after(10):
            wire = RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
            await wire.send(Hello({"version": 1, "interval": 1}))
            assert isinstance(await wire.receive_or_eof(), Hello)
            process.send_signal(signal.SIGTERM)
            assert await wire.receive_or_eof() == Close(5, "server shutting down")
            assert await wire.receive_or_eof() is None
            await wire.stream.aclose()
            assert await process.wait() == 0
        assert process.stderr is not None
        log = (await process.stderr.receive_some(65536)).decode()
        assert "kick 127.0.0.1:" in log and "heartbeat timeout [CLOSE 1]" in log


async def test_serve_rejects_garbage_and_keeps_serving() -> None:
    async with serve_process() as (_, port):
        with trio.fail_after(10):
            good = RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
            await good.send(Hello({"version": 1}))
            assert isinstance(await good.receive_or_eof(), Hello)
            bad = RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
            await bad.stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
            assert await bad.receive_or_eof() == Close(2, "unknown frame type 0x47")
            assert await bad.receive_or_eof() is None
            await good.send(Data(b"still fine"))
            assert await good.receive_or_eof() == Data(b"STILL FINE")
            await good.stream.aclose()
            await bad.stream.aclose()


async def run_connect(
    *args: str, stdin: bytes = b""
) -> tuple[int, bytes, bytes, float]:
    started = time.monotonic()
    with trio.fail_after(20):
        result = await trio.run_process(
            [PYTHON, "-m", "trio_heartbeat", "connect", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


async def test_connect_against_serve_echoes_lines() -> None:
    async with serve_process() as (_, port):
        code, out, err, _ = await run_connect(
            "127.0.0.1", "--port", str(port), stdin=b"hello\nsecond line\n"
        )
        assert (code, out) == (0, b"HELLO\nSECOND LINE\n"), err


async def test_connect_refused_exits_1() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    code, _, err, _ = await run_connect("--port", str(port))
    assert code == 1
    assert b"connection failed" in err


@asynccontextmanager
async def raw_server(behaviour: Any) -> AsyncIterator[int]:
    """A loopback TCP server (port 0) running behaviour(RawPeer) per connection."""
    async with trio.open_nursery() as nursery:

        async def handler(stream: trio.SocketStream) -> None:
            async with stream:
                await behaviour(RawPeer(stream))

        listeners = await nursery.start(
            partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def hello_answer(interval: float = 1.0, min_interval: float = 0.1) -> Hello:
    return Hello(
        {
            "version": 1,
            "interval": interval,
            "timeout": 60.0,
            "min_interval": min_interval,
        }
    )


async def test_connect_exits_3_when_server_never_answers_pings() -> None:
    pings: list[float] = []

    async def mute(wire: RawPeer) -> None:
        assert isinstance(await wire.receive_or_eof(), Hello)
        await wire.send(hello_answer(interval=1.0))
        while (frame := await wire.receive_or_eof()) is not None:
            if isinstance(frame, Ping):
                pings.append(time.monotonic())

    # stdin stays open (never ends) so only the heartbeat can end the client.
    async with raw_server(mute) as port, trio.open_nursery() as nursery:
        started = time.monotonic()
        process: trio.Process = await nursery.start(
            partial(
            trio.run_process,
                [PYTHON, "-m", "trio_heartbeat", "connect", "--port", str(port),
                 "--interval", "1", "--retries", "2", "--retry-interval", "0.5"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, check=False,
            )
        )  # fmt: skip
        with trio.fail_after(20):
            code = await process.wait()
        elapsed = time.monotonic() - started
        assert process.stderr is not None
        err = (await process.stderr.receive_some(65536)).decode()
    assert code == 3, err
    assert "server declared dead: 3 PINGs unanswered over 1.5 s" in err
    assert len(pings) == 3
    # PINGs 0.5 s apart; verdict 1 s idle + 3 x 0.5 s after the handshake.
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.4 < g < 0.8 for g in gaps), gaps
    assert 2.5 <= elapsed < 8, elapsed


async def test_connect_prints_server_close_reason_and_exits_1() -> None:
    async def closer(wire: RawPeer) -> None:
        assert isinstance(await wire.receive_or_eof(), Hello)
        await wire.send(hello_answer())
        await wire.send(Close(5, "maintenance window"))

    async with raw_server(closer) as port, trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
            trio.run_process,
                [PYTHON, "-m", "trio_heartbeat", "connect", "--port", str(port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, check=False,
            )
        )  # fmt: skip
        with trio.fail_after(20):
            code = await process.wait()
        assert process.stderr is not None
        err = (await process.stderr.receive_some(65536)).decode()
    assert code == 1
    assert "CLOSE 5 SHUTTING_DOWN" in err and "maintenance window" in err


async def test_reconnect_after_server_close_delivers_later_lines() -> None:
    connections: list[int] = []
    received: list[bytes] = []

    second_connection = trio.Event()

    async def flaky(wire: RawPeer) -> None:
        connections.append(1)
        if len(connections) == 2:
            second_connection.set()
        assert isinstance(await wire.receive_or_eof(), Hello)
        await wire.send(hello_answer(interval=5))
        if len(connections) == 1:
            await wire.send(Close(5, "restarting"))
            return
        while (frame := await wire.receive_or_eof()) is not None:
            if isinstance(frame, Data):
                received.append(frame.payload)
                await wire.send(Data(frame.payload.upper()))
            elif isinstance(frame, Close):
                await wire.send(Close(0, ""))
                return

    async with raw_server(flaky) as port, trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [PYTHON, "-m", "trio_heartbeat", "connect", "--port", str(port),
                 "--reconnect", "--log-level", "INFO"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, check=False,
            )
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        with trio.fail_after(20):
            await second_connection.wait()
            await process.stdin.send_all(b"after reconnect\n")
            out = b""
            while b"\n" not in out:
                out += await process.stdout.receive_some(1024)
            await process.stdin.aclose()
            code = await process.wait()
    assert out == b"AFTER RECONNECT\n"
    assert received == [b"after reconnect"]
    assert code == 0


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "trio_heartbeat", "--help"],
        capture_output=True,
        timeout=30,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 0
    assert b"serve" in result.stdout and b"connect" in result.stdout


async def test_sigusr1_logs_a_status_line() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    [PYTHON, "-m", "trio_heartbeat", "serve", "--port", "0"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                )
            )  # fmt: skip
            assert server.stdout is not None and server.stderr is not None
            await listening_port(server)
            server.send_signal(signal.SIGUSR1)  # at once: no default-action death
            log = b""
            while (found := re.search(rb"status: ([^\n]*)\n", log)) is None:
                log += await server.stderr.receive_some(4096)
            status = found.group(1).decode()
            names = [field.split("=")[0] for field in status.split()]
            assert names == ["tasks", "fds", "rss_kib", "gc_frozen"]
            assert all(int(field.split("=")[1]) > 0 for field in status.split())
            # Startup's objects are frozen out of garbage collections: modules,
            # classes and the runtime come to well over 10,000.
            assert int(status.split()[-1].split("=")[1]) > 10_000
            server.terminate()
            assert await server.wait() == 0
