"""Interoperation with the classic C heartbeat server and client (--protocol legacy).

Their sources are not part of the project: the directory is THB_LEGACY_SOURCES,
by default ../shared/reference beside the checkout; without them these skip.

The tests build the C programs with g++ into a temporary folder, with short
timings and a port chosen at run time (their port is a compile-time macro).
They skip, saying why, where the sources or g++ are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_heartbeat import DisconnectReason, ServerConfig
from trio_heartbeat._legacy import serve_legacy_tcp

REFERENCE = Path(
    os.environ.get(
        "THB_LEGACY_SOURCES",
        Path(__file__).resolve().parents[2] / "shared" / "reference",
    )
)
GXX = shutil.which("g++")

pytestmark = [
    pytest.mark.skipif(
        not (REFERENCE / "seed_server.cpp").exists(),
        reason=f"the classic C programs' sources are not at {REFERENCE}",
    ),
    pytest.mark.skipif(GXX is None, reason="g++ is not installed"),
]


def build(tmp_path: Path, program: str, **macros: int) -> Path:
    out = tmp_path / program
    defines = [f"-D{name}={value}" for name, value in macros.items()]
    subprocess.run(
        [GXX or "g++", "-O2", "-pthread", *defines, "-o", str(out),
         str(REFERENCE / f"{program}.cpp")],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


async def read_until(
    stream: trio.abc.ReceiveStream, marker: bytes, seen: bytearray
) -> None:
    while marker not in seen:
        chunk = await stream.receive_some(4096)
        assert chunk, f"stream ended before {marker!r}; got {bytes(seen)!r}"
        seen += chunk


async def test_c_client_against_our_server(tmp_path: Path) -> None:
    timeout = 3.0
    kicks: list[tuple[float, DisconnectReason]] = []
    kicked = trio.Event()

    def on_disconnect(peer: str, reason: DisconnectReason) -> None:
        kicks.append((time.monotonic(), reason))
        kicked.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve_legacy_tcp,
                0,
                host="127.0.0.1",
                config=ServerConfig(timeout=timeout, min_interval=1),
                on_disconnect=on_disconnect,
            )
        )
        port = listeners[0].socket.getsockname()[1]
        client = await trio.to_thread.run_sync(
            partial(build, tmp_path, "seed_client", SER_PORT=port, CLIENT_IDLE=1,
                    CLIENT_RETRIES=2, CLIENT_RETRY_INTERVAL=1)
        )  # fmt: skip
        # Its printf output goes to a pipe, block-buffered: stdbuf makes it
        # line-buffered so each message arrives when printed.
        stdbuf = shutil.which("stdbuf")
        if stdbuf is None:
            pytest.skip("stdbuf (coreutils) is needed to read the C client's output")
        command = [stdbuf, "-oL", str(client)]
        process = await nursery.start(
            partial(
                trio.run_process,
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        try:
            assert process.stdin is not None and process.stdout is not None
            seen = bytearray()
            with trio.fail_after(20):
                # Its heartbeat (after 1 s idle, checked with '>' on whole seconds)
                # gets our OK: it prints "received the server's answer".
                await read_until(process.stdout, "收到服务端回应".encode(), seen)
                await process.stdin.send_all(b"hello seed\n")
                await read_until(process.stdout, b"HELLO SEED\n", seen)
                await read_until(process.stdout, "收到服务端回应".encode(), seen)
                # Frozen: TCP stays up, nothing is sent; we kick it at the timeout.
                process.send_signal(signal.SIGSTOP)
                frozen_at = time.monotonic()
                await kicked.wait()
            kicked_at, reason = kicks[0]
            assert reason is DisconnectReason.HEARTBEAT_TIMEOUT
            # The last traffic was at most ~2 s before the freeze (its period).
            assert timeout - 2.5 <= kicked_at - frozen_at <= timeout + 0.5
        finally:
            # A stopped process ignores SIGTERM: never leave one behind.
            process.send_signal(signal.SIGKILL)
            process.send_signal(signal.SIGCONT)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def c_server(tmp_path: Path) -> AsyncIterator[tuple[trio.Process, int]]:
    for _ in range(5):
        port = free_port()
        binary = await trio.to_thread.run_sync(
            partial(build, tmp_path, "seed_server", SER_PORT=port, SERVER_TIMEOUT=60)
        )
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(trio.run_process, [str(binary)], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, check=False)
            )  # fmt: skip
            with trio.fail_after(10):
                while process.returncode is None:
                    try:
                        probe = await trio.open_tcp_stream("127.0.0.1", port)
                    except OSError:
                        await trio.sleep(0.05)
                        continue
                    await probe.aclose()
                    break
            if process.returncode is not None:
                continue  # the port was taken meanwhile ("bind error"): try another
            try:
                yield process, port
            finally:
                process.send_signal(signal.SIGCONT)
                process.kill()
            return
    pytest.fail("could not start the C server on a free port")


async def test_our_client_against_c_server(tmp_path: Path) -> None:
    interval, retries, retry_interval = 1.0, 2, 1.0
    async with c_server(tmp_path) as (server, port), trio.open_nursery() as nursery:
        started = time.monotonic()
        client: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, "-m", "trio_heartbeat", "connect",
                 "--protocol", "legacy", "--port", str(port),
                 "--interval", str(interval), "--retries", str(retries),
                 "--retry-interval", str(retry_interval),
                 "--log-level", "DEBUG"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                check=False,
            )
        )  # fmt: skip
        assert client.stdin is not None and client.stdout is not None
        assert client.stderr is not None
        seen = bytearray()
        log = bytearray()
        with trio.fail_after(20):
            # Our heartbeat is answered by the C server's OK.
            await read_until(client.stderr, b"heartbeat answered", log)
            await client.stdin.send_all(b"hello c\n")
            await read_until(client.stdout, b"HELLO C\n", seen)
            await trio.sleep(interval + 0.5)
            # Frozen: the C server's socket stays open but answers nothing. The
            # C client would block in read forever; ours declares it dead.
            server.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            code = await client.wait()
            dead_after = time.monotonic() - frozen_at
        rest = await client.stderr.receive_some(65536)
        assert code == 3, bytes(log) + rest
        bound = interval + (retries + 1) * retry_interval
        assert (retries + 1) * retry_interval - 0.5 <= dead_after <= bound + 1.0
        assert b"server declared dead" in bytes(log) + rest
        assert time.monotonic() - started < 20
