"""Faults on real sockets, with processes the tests start themselves."""

from __future__ import annotations

import os
import resource
import signal
import socket
import time
from typing import Any

import trio

from trio_heartbeat import Hello

from .helpers import RawPeer, listening_port, start_cli, tcp_peer

FD_LIMIT = 40


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


async def _answered_or(peer: RawPeer, log: Output, marker: bytes) -> bool:
    """True when the server answers ``peer``'s HELLO, False when ``marker``
    appears in its log first."""
    answered = False
    async with trio.open_nursery() as race:

        @race.start_soon
        async def answer() -> None:
            nonlocal answered
            assert isinstance(await peer.receive(), Hello)
            answered = True
            race.cancel_scope.cancel()

        await log.wait_for(marker)
        race.cancel_scope.cancel()
    return answered


async def test_out_of_file_descriptors_is_survived() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_cli(
            nursery, "serve", "--port", "0", preexec_fn=_low_fd_limit
        )
        assert server.stderr is not None
        log = Output(server.stderr)
        with trio.fail_after(60):
            port = await listening_port(server)
            # Fill the server's descriptor table: the kernel still completes
            # the TCP handshakes (backlog), but accept() fails with EMFILE.
            held: list[RawPeer] = []
            while True:
                peer = await tcp_peer(port)
                held.append(peer)
                await peer.send(Hello({"version": 1}))
                if not await _answered_or(peer, log, b"accept returned EMFILE"):
                    break
                assert len(held) < FD_LIMIT, "the limit was never reached"
            assert server.returncode is None  # still running
            # Free descriptors: the waiting client is accepted and answered.
            for peer in held[:5]:
                await peer.stream.aclose()
            assert isinstance(await held[-1].receive(), Hello)
            # Logged once per burst (not every 0.1 s retry), with the limit.
            with trio.move_on_after(0.5):
                await log.wait_for_count(b"accept returned EMFILE", 2)
            assert log.data.count(b"accept returned EMFILE") == 1
            assert f"all {FD_LIMIT} file descriptors".encode() in log.data
            fresh = await tcp_peer(port)
            await fresh.hello()
            for peer in [*held[5:], fresh]:
                await peer.stream.aclose()
            server.terminate()
            assert await server.wait() == 0
        nursery.cancel_scope.cancel()


class Output:
    """Accumulates a process stream; waits for a marker."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.data = b""

    async def wait_for(self, marker: bytes) -> None:
        await self.wait_for_count(marker, 1)

    async def wait_for_count(self, marker: bytes, count: int) -> None:
        while self.data.count(marker) < count:
            chunk = await self.stream.receive_some(65536)
            assert chunk, f"ended before {count} x {marker!r}: {self.data!r}"
            self.data += chunk


class Pair:
    """A `serve` and a `connect` process, connected and past one echoed line."""

    server: trio.Process
    server_log: Output
    port: int
    client: trio.Process
    client_out: Output


async def _pair(
    nursery: trio.Nursery, serve_flags: list[str], connect_flags: list[str]
) -> Pair:
    pair = Pair()
    pair.server = await start_cli(nursery, "serve", "--port", "0", *serve_flags)
    assert pair.server.stderr is not None
    pair.server_log = Output(pair.server.stderr)
    pair.port = await listening_port(pair.server)
    pair.client = await start_cli(
        nursery, "connect", "--port", str(pair.port), *connect_flags
    )
    assert pair.client.stdin is not None and pair.client.stdout is not None
    pair.client_out = Output(pair.client.stdout)
    await pair.client.stdin.send_all(b"before\n")
    await pair.client_out.wait_for(b"BEFORE\n")
    return pair


async def test_frozen_client_is_kicked_and_reconnects_after_sigcont() -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            pair = await _pair(
                nursery,
                ["--timeout", "2", "--min-interval", "0.5", "--log-level", "INFO"],
                ["--interval", "1", "--reconnect", "--log-level", "INFO"],
            )
            client = pair.client
            assert client.stdin is not None
            try:
                os.kill(client.pid, signal.SIGSTOP)
                frozen_at = time.monotonic()
                await pair.server_log.wait_for(b"heartbeat timeout [CLOSE 1]")
                kicked_after = time.monotonic() - frozen_at
                # Its last PING was at most 1 s before the freeze; timeout 2 s.
                assert 0.8 <= kicked_after <= 2 + 0.7, kicked_after
                os.kill(client.pid, signal.SIGCONT)
                # Back: it sees the CLOSE(1), reconnects, and is served again.
                await pair.server_log.wait_for_count(b"]: connect 127.0.0.1", 2)
                await client.stdin.send_all(b"after\n")
                await pair.client_out.wait_for(b"AFTER\n")
                await client.stdin.aclose()
                assert await client.wait() == 0
            finally:
                client.send_signal(signal.SIGCONT)  # no-op once it has exited
                pair.server.terminate()
        nursery.cancel_scope.cancel()


async def test_frozen_server_is_declared_dead_within_the_bound() -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            pair = await _pair(
                nursery,
                ["--min-interval", "0.5"],
                ["--interval", "1", "--retries", "2", "--retry-interval", "0.5"],
            )
            server = pair.server
            try:
                os.kill(server.pid, signal.SIGSTOP)
                frozen_at = time.monotonic()
                assert await pair.client.wait() == 3
                dead_after = time.monotonic() - frozen_at
                # Dead at first PING + 3 x 0.5 s; the first PING comes at most
                # 1 s after the freeze.
                assert 1.3 <= dead_after <= 1 + 3 * 0.5 + 0.7, dead_after
            finally:
                server.send_signal(signal.SIGCONT)
                server.kill()
        nursery.cancel_scope.cancel()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_ping_flood_without_reading_keeps_server_memory_flat() -> None:
    """A client floods PINGs as fast as TCP takes them and reads nothing (strikes
    off: --max-ping-strikes 0). The server stops reading once its PONGs cannot
    go out, so its memory stays flat; it drops the flooder as a slow consumer at
    its timeout while another client, heartbeating as clients do, keeps getting
    its PONGs."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            server = await start_cli(
                nursery, "serve", "--port", "0", "--timeout", "3",
                "--min-interval", "0.5", "--max-ping-strikes", "0",
                "--log-level", "INFO",
            )  # fmt: skip
            assert server.stderr is not None
            log = Output(server.stderr)
            port = await listening_port(server)
            try:
                flooding = await tcp_peer(port)
                await flooding.hello()
                flooder: Any = flooding.stream
                flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                talking = await tcp_peer(port)
                await talking.hello()
                other = talking.stream
                before = _rss_kib(server.pid)
                chunk = b"\x03\x00" * 32768  # 32768 empty PINGs
                sent = 0
                while sent < 256 << 20:
                    with trio.move_on_after(0.5):
                        await flooder.send_all(chunk)
                        sent += len(chunk)
                        continue
                    break  # blocked: the server has stopped reading
                assert sent < 256 << 20, "the server never pushed back"
                grown = _rss_kib(server.pid) - before
                assert grown < 1024, f"server RSS grew {grown} KiB (flood {sent} B)"
                # The other client PINGs every 0.5 s until the flooder is
                # dropped, and is answered at once each time.
                async with trio.open_nursery() as pinging:

                    @pinging.start_soon
                    async def heartbeat() -> None:
                        while True:
                            await other.send_all(b"\x03\x00")
                            with trio.fail_after(0.5):
                                reply = await other.receive_some(65536)
                            assert reply == b"\x04\x00"
                            await trio.sleep(0.5)

                    await log.wait_for(b": slow consumer: PONGs unread for 3 s")
                    pinging.cancel_scope.cancel()
                await other.send_all(b"\x03\x00")
                assert await other.receive_some(65536) == b"\x04\x00"
                await flooder.aclose()
                await other.aclose()
            finally:
                server.terminate()
            assert await server.wait() == 0
        nursery.cancel_scope.cancel()


async def test_server_restart_reconnects_within_backoff_and_loses_nothing() -> None:
    """The server is killed and started again on its port. A `connect --reconnect
    --max-backoff 1` client is back at most 1 s (its longest wait) after the new
    server listens; lines typed during the outage and after the reconnect all
    arrive, in order."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            pair = await _pair(
                nursery,
                ["--log-level", "INFO"],
                ["--reconnect", "--max-backoff", "1", "--log-level", "INFO"],
            )
            client = pair.client
            assert client.stdin is not None and client.stderr is not None
            client_log = Output(client.stderr)
            server = pair.server
            restarted: trio.Process | None = None
            try:
                server.kill()
                await server.wait()
                await client_log.wait_for(b"connection ended to 127.0.0.1")
                during = [b"during %d" % i for i in range(20)]
                await client.stdin.send_all(b"".join(line + b"\n" for line in during))
                # Let it fail at least twice against the closed port.
                await client_log.wait_for_count(b"could not connect to", 2)
                restarted = await start_cli(
                    nursery, "serve", "--port", str(pair.port), "--log-level", "INFO"
                )
                assert restarted.stdout is not None and restarted.stderr is not None
                await Output(restarted.stdout).wait_for(b"\n")
                up_at = time.monotonic()
                await Output(restarted.stderr).wait_for(b"]: connect 127.0.0.1")
                back_after = time.monotonic() - up_at
                assert back_after <= 1 + 0.5, back_after
                after = [b"after %d" % i for i in range(200)]
                await client.stdin.send_all(b"".join(line + b"\n" for line in after))
                expected = [b"BEFORE", *(line.upper() for line in [*during, *after])]
                await pair.client_out.wait_for(expected[-1] + b"\n")
                assert pair.client_out.data.split(b"\n")[:-1] == expected
                await client.stdin.aclose()
                assert await client.wait() == 0
            finally:
                server.kill()
                if restarted is not None:
                    restarted.terminate()
        nursery.cancel_scope.cancel()
