"""Test helpers: an in-memory listener and a raw peer that speaks wire bytes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
import trio.testing

from trio_heartbeat import FrameDecoder, Hello, encode
from trio_heartbeat._protocol import Frame


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are in-memory stream pairs (virtual-time safe)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](100)
        self.server_streams: list[trio.abc.Stream] = []

    async def connect(self) -> trio.testing.StapledStream[Any, Any]:
        client, server = trio.testing.memory_stream_pair()
        self.server_streams.append(server)
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()


async def start_cli(
    nursery: trio.Nursery,
    *args: str,
    stderr: int = subprocess.PIPE,
    preexec_fn: Callable[[], object] | None = None,
) -> trio.Process:
    """``python -m trio_heartbeat ARGS`` in ``nursery``, with piped stdio."""
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            [sys.executable, "-m", "trio_heartbeat", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            check=False, preexec_fn=preexec_fn,
        )
    )  # fmt: skip
    return process


async def listening_port(serve: trio.Process) -> int:
    """Read ``serve``'s first stdout line, ``listening on HOST:PORT``; the port.

    Byte by byte, so that nothing after the line is consumed.
    """
    assert serve.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await serve.stdout.receive_some(1)
        assert chunk, f"serve exited before listening: {line!r}"
        line += chunk
    return int(line.decode().strip().rsplit(":", 1)[1])


class RawPeer:
    """Drives a stream with explicit frames and bytes, independent of the library's
    connection class, so tests check the wire behaviour itself."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder((1 << 28) - 1)

    async def send(self, frame: Frame) -> None:
        await self.stream.send_all(encode(frame))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def hello(self, **fields: Any) -> Hello:
        await self.send(Hello({"version": 1, **fields}))
        answer = await self.receive()
        assert isinstance(answer, Hello), answer
        return answer

    async def receive(self) -> Frame:
        """The next frame; fails the test on EOF."""
        frame = await self.receive_or_eof()
        assert frame is not None, "stream ended, a frame was expected"
        return frame

    async def receive_or_eof(self) -> Frame | None:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            if self.decoder.eof:
                return None
            self.decoder.receive_data(await self.stream.receive_some(65536))

    async def expect_eof(self) -> None:
        """The peer's stream ends here; then this side closes too (as a client
        does once the server is done), which ends the server's wait for it."""
        frame = await self.receive_or_eof()
        assert frame is None, f"expected EOF, got {frame!r}"
        await self.stream.aclose()
