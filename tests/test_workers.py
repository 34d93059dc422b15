"""serve --workers N: shared port, supervision, graceful stop (real processes)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import trio

from trio_heartbeat import Close, Data, Hello, encode

from .helpers import RawPeer, listening_port, start_cli, tcp_peer

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="the platform has no SO_REUSEPORT"
)


async def exchange(port: int, text: bytes) -> RawPeer:
    """HELLO and one DATA, sent together; the echo checked."""
    peer = await tcp_peer(port)
    await peer.send_bytes(
        encode(Hello({"version": 1, "interval": 25})) + encode(Data(text))
    )
    assert isinstance(await peer.receive(), Hello)
    assert await peer.receive() == Data(text.upper())
    return peer


class Log:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.text = ""

    async def more(self) -> None:
        chunk = await self.stream.receive_some(65536)
        assert chunk, f"the log ended:\n{self.text}"
        self.text += chunk.decode()

    async def wait_for(self, pattern: str) -> re.Match[str]:
        while (match := re.search(pattern, self.text)) is None:
            await self.more()
        return match


async def test_workers_share_the_port_restart_and_stop_gracefully() -> None:
    async with trio.open_nursery() as nursery:
        supervisor = await start_cli(
            nursery, "serve", "--workers", "2", "--port", "0", "--log-level", "INFO"
        )
        assert supervisor.stderr is not None
        log = Log(supervisor.stderr)
        with trio.fail_after(30):
            port = await listening_port(supervisor)
            pids = {int(m) for m in re.findall(r"pid (\d+)\) ready", log.text)}
            while len(pids) < 2:
                await log.wait_for(r"pid \d+\) ready")
                pids = {int(m) for m in re.findall(r"pid (\d+)\) ready", log.text)}

            # Many connections: the kernel spreads them over both workers.
            for i in range(40):
                peer = await exchange(port, b"client %d" % i)
                await peer.stream.aclose()
            while log.text.count("]: disconnect ") < 40:
                await log.more()
            serving = {int(p) for p in re.findall(r"\[(\d+)\]: connect ", log.text)}
            assert serving == pids

            # A worker that dies is restarted; the port keeps serving.
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            await log.wait_for(rf"\(pid {victim}\) exited with -9: restarting")
            while len(re.findall(r"pid \d+\) ready", log.text)) < 3:
                await log.more()
            restarted = int(re.findall(r"pid (\d+)\) ready", log.text)[-1])
            assert restarted not in pids
            peer = await exchange(port, b"after restart")

            # SIGTERM: every worker closes its clients with CLOSE(5), then exit 0.
            supervisor.send_signal(signal.SIGTERM)
            assert await peer.receive() == Close(5, "server shutting down")
            await peer.expect_eof()
            assert await supervisor.wait() == 0


def test_workers_must_be_positive() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_heartbeat", "serve", "--workers", "0"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"workers must be >= 1, not 0" in result.stderr
