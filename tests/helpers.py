"""Test helpers: raw peers that speak wire bytes, echo handlers, servers to run.

One place for what many tests need: a peer independent of the library's
connection class (so tests check the wire itself), over memory streams or real
TCP sockets; the echo handlers; a server started on either kind of listener;
and the command line run as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing

from trio_heartbeat import FrameDecoder, HeartbeatConnection, Hello, encode, serve_tcp
from trio_heartbeat._protocol import Frame


async def echo(conn: HeartbeatConnection) -> None:
    """Answer each DATA with the same bytes."""
    async for data in conn:
        await conn.send(data)


async def echo_upper(conn: HeartbeatConnection) -> None:
    """Answer each DATA upper-cased (the demo application of ``serve``)."""
    async for data in conn:
        await conn.send(data.upper())


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are in-memory stream pairs (virtual-time safe)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](100)
        self.server_streams: list[trio.abc.Stream] = []

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self.server_streams.append(server)
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()


class RawPeer:
    """Drives a stream with explicit frames and bytes, independent of the library's
    connection class, so tests check the wire behaviour itself."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder((1 << 28) - 1)
        #: How the server names this peer in its logs and hooks.
        self.name = _name_of(stream)

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


def _name_of(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return f"<{type(stream).__name__}>"
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


async def tcp_peer(port: int, *, local: str | None = None) -> RawPeer:
    """A raw peer connected to 127.0.0.1:``port`` (from address ``local``)."""
    if local is None:
        return RawPeer(await trio.open_tcp_stream("127.0.0.1", port))
    sock = trio.socket.socket()
    await sock.bind((local, 0))
    await sock.connect(("127.0.0.1", port))
    return RawPeer(trio.SocketStream(sock))


@asynccontextmanager
async def tcp_server(handler: Any, **options: Any) -> AsyncIterator[int]:
    """serve_tcp(handler, **options) on 127.0.0.1, port 0: yields the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve_tcp, handler, 0, host="127.0.0.1", **options)
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


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
