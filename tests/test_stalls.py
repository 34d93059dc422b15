"""Verdicts against real processes: a slow uplink, a frozen server, a chatty
client. Each scenario is one a user would meet in production; the server is
`python -m trio_heartbeat serve`, frozen with SIGSTOP / SIGCONT (as a long
collection, a blocking call or VM steal would freeze it).
"""

from __future__ import annotations

import os
import signal
import time

import trio

from trio_heartbeat import Close, Data, Ping, Pong, encode

from .helpers import RawPeer, listening_port, start_cli, tcp_peer


class Log:
    """A process's stderr, accumulated."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.text = ""

    async def wait_for(self, marker: str) -> None:
        while marker not in self.text:
            chunk = await self.stream.receive_some(65536)
            assert chunk, f"ended before {marker!r}: {self.text!r}"
            self.text += chunk.decode()

    async def drain(self) -> str:
        """Everything the process wrote up to its exit."""
        while chunk := await self.stream.receive_some(65536):
            self.text += chunk.decode()
        return self.text


async def test_a_slow_upload_is_not_kicked() -> None:
    """One 100 KB DATA frame at 25 KB/s (a weak mobile uplink) to a server
    with a 2 s timeout: bytes arrive the whole 4 s, so the client is alive."""
    async with trio.open_nursery() as nursery:
        server = await start_cli(nursery, "serve", "--port", "0", "--timeout", "2",
                                 "--log-level", "INFO")  # fmt: skip
        assert server.stderr is not None
        log = Log(server.stderr)
        with trio.fail_after(30):
            port = await listening_port(server)
            peer = await tcp_peer(port)
            await peer.hello(interval=1)
            payload = bytes(range(256)) * 400  # 102,400 bytes
            frame = encode(Data(payload))
            started = time.monotonic()
            for offset in range(0, len(frame), 2560):
                await peer.send_bytes(frame[offset : offset + 2560])
                await trio.sleep(0.1)  # 25.6 KB/s
            assert time.monotonic() - started > 3.5  # longer than the timeout
            assert await peer.receive() == Data(payload.upper())
            await peer.send(Close(0, ""))
            assert await peer.receive() == Close(0, "")
            await peer.expect_eof()
            server.terminate()
            text = await log.drain()
        assert "kick" not in text, text
        assert "closed by peer [CLOSE 0]" in text


async def _pinging_clients(
    port: int, count: int, every: float
) -> tuple[list[RawPeer], list[list[object]]]:
    peers = [await tcp_peer(port) for _ in range(count)]
    for peer in peers:
        await peer.hello(interval=1)
    return peers, [[] for _ in peers]


async def _freeze_while_pinging(
    serve_flags: list[str], frozen_for: float
) -> tuple[list[list[object]], list[int], str, RawPeer, float]:
    """20 clients PING every 0.3 s; the server is frozen ``frozen_for`` s, then
    runs 1.5 s more. Returns what each client received, how many PINGs each
    sent, the server's log, a silent client and when the server was frozen."""
    async with trio.open_nursery() as nursery:
        server = await start_cli(nursery, "serve", "--port", "0", *serve_flags,
                                 "--log-level", "INFO")  # fmt: skip
        assert server.stderr is not None
        log = Log(server.stderr)
        with trio.fail_after(60):
            port = await listening_port(server)
            peers, received = await _pinging_clients(port, 20, 0.3)
            silent = await tcp_peer(port)
            await silent.hello(interval=1)
            sent = [0] * len(peers)
            stop = trio.Event()

            async def client(index: int) -> None:
                peer = peers[index]
                async with trio.open_nursery() as own:

                    @own.start_soon
                    async def reader() -> None:
                        while (frame := await peer.receive_or_eof()) is not None:
                            received[index].append(frame)

                    while not stop.is_set():
                        await peer.send(Ping())
                        sent[index] += 1
                        await trio.sleep(0.3)
                    await trio.sleep(0.5)  # the last PONGs
                    own.cancel_scope.cancel()

            async with trio.open_nursery() as clients:
                for index in range(len(peers)):
                    clients.start_soon(client, index)
                await trio.sleep(1.0)
                os.kill(server.pid, signal.SIGSTOP)
                frozen_at = time.monotonic()
                await trio.sleep(frozen_for)
                os.kill(server.pid, signal.SIGCONT)
                await trio.sleep(1.5)
                server.send_signal(signal.SIGUSR1)  # the status line, in the log
                stop.set()
            for peer in peers:
                await peer.stream.aclose()
            server.terminate()
            text = await log.drain()
        nursery.cancel_scope.cancel()
    return received, sent, text, silent, frozen_at


async def test_a_server_pause_is_no_ping_flood() -> None:
    """Frozen 1.5 s: the PINGs that queued meanwhile are read together, and
    are no flood (--min-interval 0.1: they were sent 0.3 s apart)."""
    received, sent, text, silent, _ = await _freeze_while_pinging(
        ["--timeout", "10", "--min-interval", "0.1"], 1.5
    )
    for frames, count in zip(received, sent, strict=True):
        assert frames == [Pong()] * count  # every PING answered, nothing else
    assert "too many pings" not in text, text
    await silent.stream.aclose()


async def test_a_server_pause_longer_than_timeout_kicks_no_live_client() -> None:
    """Frozen 4 s with --timeout 2: every PING of those 4 s waits in the socket
    buffers and is read before anyone is judged, so no pinging client is
    kicked. A silent client (its last byte before the freeze) still is."""
    received, sent, text, silent, frozen_at = await _freeze_while_pinging(
        ["--timeout", "2", "--min-interval", "0.1"], 4.0
    )
    for frames, count in zip(received, sent, strict=True):
        assert frames == [Pong()] * count
    assert text.count("kick 127.0.0.1:") == 1, text
    # The server saw its own stall: its lag probe (every second) woke at least
    # 3 s late, and that time counted against nobody.
    status = text.split("status: ", 1)[1].split("\n", 1)[0]
    fields = dict(field.split("=") for field in status.split())
    assert float(fields["lag_max_ms"]) >= 3000, status
    assert float(fields["stalled_s"]) >= 3.0, status
    with trio.fail_after(10):
        assert await silent.receive() == Close(1, "nothing received for 2 s")
    await silent.expect_eof()
    assert time.monotonic() - frozen_at > 4.0  # kicked after the freeze


async def test_a_chatty_client_notices_a_frozen_server() -> None:
    """`connect --interval 1 --retries 1 --retry-interval 0.5` with a line every
    0.3 s; the server is frozen. The client keeps sending, and still declares
    the server dead: at most interval + 2 x 0.5 s after the last thing it
    received (the kernel keeps ACKing, so TCP says nothing)."""
    async with trio.open_nursery() as nursery:
        server = await start_cli(nursery, "serve", "--port", "0",
                                 "--min-interval", "0.5")  # fmt: skip
        with trio.fail_after(30):
            port = await listening_port(server)
            client = await start_cli(
                nursery, "connect", "--port", str(port), "--interval", "1",
                "--retries", "1", "--retry-interval", "0.5",
            )  # fmt: skip
            assert client.stdin is not None and client.stdout is not None
            assert client.stderr is not None
            await client.stdin.send_all(b"first\n")
            assert await client.stdout.receive_some(100) == b"FIRST\n"
            answered_at = time.monotonic()
            os.kill(server.pid, signal.SIGSTOP)
            try:
                async with trio.open_nursery() as typing:

                    @typing.start_soon
                    async def type_lines() -> None:
                        while True:
                            await client.stdin.send_all(b"more\n")  # type: ignore[union-attr]
                            await trio.sleep(0.3)

                    assert await client.wait() == 3
                    typing.cancel_scope.cancel()
                dead_after = time.monotonic() - answered_at
                err = await Log(client.stderr).drain()
            finally:
                os.kill(server.pid, signal.SIGCONT)
                server.kill()
        # The rule's bound (1 + 2 x 0.5 s after the last answer), and no less
        # than the resends take; with process scheduling on top.
        assert 2 * 0.5 <= dead_after <= 1 + 2 * 0.5 + 0.7, dead_after
        assert err.endswith("server declared dead: 2 PINGs unanswered over 1 s\n"), err
        nursery.cancel_scope.cancel()
