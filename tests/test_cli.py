"""The command line: usage in-process, the rest as real subprocesses on loopback.

Every socket binds port 0 on 127.0.0.1 and every wait is bounded by fail_after.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trio_heartbeat import Close, Data, Hello, Ping, Pong, ServerConfig
from trio_heartbeat._cli import main
from trio_heartbeat._cli._connect import connect_main
from trio_heartbeat._cli._options import (
    build_parser,
    client_config,
    client_tls,
    learner_from,
)

from .helpers import RawPeer, echo_upper, listening_port, tcp_server

PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() configures the root logger for the process (onto this test's
    captured stderr); undo it, so that later tests do not log into a closed
    capture."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--bogus"]) == 2
    assert main(["serve", "--timeout", "-1"]) == 2
    assert "timeout must be a positive number, not -1.0" in capsys.readouterr().err
    assert main(["connect", "--retries", "x"]) == 2
    assert main(["connect", "--max-backoff", "0"]) == 2
    assert "--max-backoff must be a positive number, not 0.0" in capsys.readouterr().err
    assert main([]) == 2
    capsys.readouterr()
    for argv, message in [
        (["--max-interval", "30"], "--max-interval needs --adaptive"),
        (["--interval-cache", "c.json"], "--interval-cache needs --adaptive"),
        (
            ["--adaptive", "--interval", "10", "--max-interval", "5"],
            "--max-interval (5 s) is below --interval (10 s)",
        ),
        (
            ["--adaptive", "--protocol", "legacy"],
            "--adaptive needs the framed protocol, not --protocol legacy",
        ),
    ]:
        assert main(["connect", *argv]) == 2
        assert capsys.readouterr().err.endswith(f"connect: error: {message}\n")


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


# ------------------------------------------------------------ connect, in-process
#
# The client runs in the test's own Trio run, in virtual time, against a server
# on a real loopback socket. The clock jumps only once no socket event has come
# for AUTOJUMP s of real time (loopback delivers synchronously), so timings are
# exact: the retry rule's PINGs and the verdict come at their virtual times.

AUTOJUMP = 0.05


@pytest.fixture
def tcp_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=AUTOJUMP)


class Stdin:
    """``connect``'s stdin: lines the test feeds, read in a worker thread."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes] = queue.Queue()

    def feed(self, data: bytes) -> None:
        self.chunks.put(data)

    def read_chunk(self) -> bytes:
        return self.chunks.get()


async def connect_in_process(stdin: Stdin, *argv: str) -> int:
    """``python -m trio_heartbeat connect ARGV`` in this Trio run; the exit code."""
    args = build_parser().parse_args(["connect", *argv])
    try:
        return await connect_main(
            args,
            client_config(args),
            client_tls(args),
            stdin.read_chunk,
            learner_from(args, network=""),
        )
    finally:
        stdin.feed(b"")  # release a reader thread still waiting for stdin


async def test_connect_adaptive_learns_up_to_the_cap_and_keeps_it(
    tcp_clock: Any, tmp_path: Path
) -> None:
    """--adaptive from 1 s, at most 4 s, steps of 50 %, 3 idle periods each:
    1, 1.5, 2.25, 3.375 and 4 s; the last PING at 4 s is answered at 36.4 s,
    noticed when the next is due (40.4 s). The cache keeps 4 s, settled, for
    the network named; the next run starts there."""
    cache = tmp_path / "intervals.json"
    argv = ("--interval", "1", "--adaptive", "--max-interval", "4",
            "--interval-cache", str(cache), "--network", "lab")  # fmt: skip
    saved_first = b""
    async with tcp_server(echo_upper, config=ServerConfig(timeout=60)) as port:
        for run in range(2):
            stdin = Stdin()
            async with trio.open_nursery() as nursery:

                async def end_stdin_later(stdin: Stdin) -> None:
                    await trio.sleep(45)
                    stdin.feed(b"")

                nursery.start_soon(end_stdin_later, stdin)
                with trio.fail_after(60):
                    code = await connect_in_process(stdin, "--port", str(port), *argv)
            assert code == 0
            saved = json.loads(cache.read_text())
            assert list(saved) == ["lab"]
            assert (saved["lab"]["interval"], saved["lab"]["phase"]) == (
                4.0,
                "settled",
            )
            if run == 0:
                saved_first = cache.read_bytes()
            else:
                # Started at 4 s, settled: nothing relearned, nothing rewritten.
                assert cache.read_bytes() == saved_first


async def test_connect_refused_exits_1(
    tcp_clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with trio.fail_after(10):
        code = await connect_in_process(Stdin(), "--port", str(port))
    assert code == 1
    assert capsys.readouterr().err.startswith("connection failed: ")


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


async def test_connect_exits_3_when_server_never_answers_pings(
    tcp_clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pings: list[float] = []
    answered_at: list[float] = []

    async def mute(wire: RawPeer) -> None:
        assert isinstance(await wire.receive_or_eof(), Hello)
        await wire.send(hello_answer(interval=1.0))
        answered_at.append(trio.current_time())
        while (frame := await wire.receive_or_eof()) is not None:
            if isinstance(frame, Ping):
                pings.append(trio.current_time() - answered_at[0])

    # stdin stays open (never ends) so only the heartbeat can end the client.
    async with raw_server(mute) as port:
        with trio.fail_after(10):
            code = await connect_in_process(
                Stdin(), "--port", str(port), "--interval", "1", "--retries", "2",
                "--retry-interval", "0.5",
            )  # fmt: skip
            dead_after = trio.current_time() - answered_at[0]
    assert code == 3
    assert capsys.readouterr().err == (
        "server declared dead: 3 PINGs unanswered over 1.5 s\n"
    )
    # Idle 1 s after the handshake, then a resend every 0.5 s; dead at 1 + 3 x 0.5.
    assert pings == [1.0, 1.5, 2.0]
    assert dead_after == 2.5


async def test_connect_prints_server_close_reason_and_exits_1(
    tcp_clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async def closer(wire: RawPeer) -> None:
        assert isinstance(await wire.receive_or_eof(), Hello)
        await wire.send(hello_answer())
        await wire.send(Close(5, "maintenance window"))
        assert await wire.receive_or_eof() == Close(0, "")  # the client's answer

    async with raw_server(closer) as port:
        with trio.fail_after(10):
            code = await connect_in_process(Stdin(), "--port", str(port))
    assert code == 1
    assert capsys.readouterr().err == (
        "connection closed: closed by peer (CLOSE 5 SHUTTING_DOWN): "
        "maintenance window\n"
    )


async def test_reconnect_after_server_close_delivers_later_lines(
    tcp_clock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    connections: list[float] = []
    received: list[bytes] = []
    second_connection = trio.Event()

    async def flaky(wire: RawPeer) -> None:
        assert isinstance(await wire.receive_or_eof(), Hello)
        connections.append(trio.current_time())
        await wire.send(hello_answer(interval=5))
        if len(connections) == 1:
            await wire.send(Close(5, "restarting"))
            return
        second_connection.set()
        while (frame := await wire.receive_or_eof()) is not None:
            if isinstance(frame, Data):
                received.append(frame.payload)
                await wire.send(Data(frame.payload.upper()))
            elif isinstance(frame, Close):
                await wire.send(Close(0, ""))
                return

    stdin = Stdin()
    async with raw_server(flaky) as port, trio.open_nursery() as nursery:
        codes: list[int] = []

        @nursery.start_soon
        async def client() -> None:
            codes.append(await connect_in_process(
                stdin, "--port", str(port), "--reconnect", "--max-backoff", "1"
            ))  # fmt: skip

        with trio.fail_after(10):
            await second_connection.wait()
            stdin.feed(b"after reconnect\n")
            stdin.feed(b"")  # stdin ends: the client closes and exits 0
    assert codes == [0]
    assert received == [b"after reconnect"]
    assert capsys.readouterr().out == "AFTER RECONNECT\n"
    # Reconnected within the backoff's first window (0.5 s, full jitter).
    assert 0 <= connections[1] - connections[0] <= 0.5


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
            fields = dict(field.split("=") for field in status.split())
            assert list(fields) == [
                "tasks", "fds", "rss_kib", "gc_frozen",
                "connections", "lag_max_ms", "lag_p99_ms", "stalled_s",
            ]  # fmt: skip
            assert all(int(fields[name]) > 0 for name in list(fields)[:4])
            # Startup's objects are frozen out of garbage collections: modules,
            # classes and the runtime come to well over 10,000.
            assert int(fields["gc_frozen"]) > 10_000
            assert fields["connections"] == "0"
            assert float(fields["stalled_s"]) == 0.0
            server.terminate()
            assert await server.wait() == 0


def test_protocol_seed_is_a_deprecated_name_of_legacy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["connect", "--protocol", "seed", "--port", str(port)],
                read_chunk=lambda: b"")  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "--protocol seed is deprecated; it is now called --protocol legacy" in err
    assert "connection failed: " in err
