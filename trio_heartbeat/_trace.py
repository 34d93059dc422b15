"""Frame tracing: every frame a connection sends or receives, at DEBUG.

Enable the ``trio_heartbeat.frames`` logger at DEBUG (``serve --log-level
DEBUG`` does) and each connection made from then on logs one line per frame::

    127.0.0.1:40212 < PING (2 bytes)
    127.0.0.1:40212 > PONG (2 bytes)

``<`` is a frame received from that peer, ``>`` one sent to it. Tracing is a
transport wrapper chosen when a connection is made, so a connection made while
the logger is quiet pays nothing for it, not even a flag test per frame.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from ._protocol import (
    MAX_ENCODABLE_LENGTH,
    Close,
    Data,
    Frame,
    FrameDecoder,
    Hello,
    ProtocolError,
)
from ._transport import ReadHold, Transport

__all__ = ["TracingTransport", "frame_logger", "tracing"]

frame_logger: Final = logging.getLogger("trio_heartbeat.frames")

# Payload bytes shown in a trace line; longer payloads are cut with "...".
_SHOWN: Final = 32


def tracing() -> bool:
    """Whether connections made now should trace their frames."""
    return frame_logger.isEnabledFor(logging.DEBUG)


def describe(frame: Frame, size: int) -> str:
    """One frame, readably: its type, its content in short, its size."""
    name = type(frame).__name__.upper()
    if isinstance(frame, Hello):
        detail = " " + ", ".join(
            f"{key}={value!r}" for key, value in frame.fields.items() if key != "token"
        )
    elif isinstance(frame, Close):
        detail = f" {frame.code}" + (f" {frame.reason!r}" if frame.reason else "")
    elif frame.payload or isinstance(frame, Data):
        shown = frame.payload[:_SHOWN]
        more = "..." if len(frame.payload) > _SHOWN else ""
        detail = f" {shown!r}{more}"
    else:
        detail = ""
    return f"{name}{detail} ({size} bytes)"


class _Direction:
    """Decodes one direction of a connection's bytes, for the log only."""

    __slots__ = ("_arrow", "_decoder", "_peer")

    def __init__(self, peer: str, arrow: str) -> None:
        self._peer = peer
        self._arrow = arrow
        # No size limit of its own: the connection's decoder enforces it.
        self._decoder: FrameDecoder | None = FrameDecoder(MAX_ENCODABLE_LENGTH)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        decoder = self._decoder
        if decoder is None or not data:
            return
        decoder.receive_data(bytes(data))
        before = decoder.buffered
        try:
            while (frame := decoder.next_frame()) is not None:
                after = decoder.buffered
                frame_logger.debug(
                    "%s %s %s", self._peer, self._arrow, describe(frame, before - after)
                )
                before = after
        except ProtocolError as exc:
            frame_logger.debug(
                "%s %s undecodable bytes (%s); tracing of this direction stops",
                self._peer,
                self._arrow,
                exc,
            )
            self._decoder = None


class TracingTransport(Transport):
    """Another transport, with every frame through it logged."""

    def __init__(self, inner: Transport, peer: str) -> None:
        self._inner = inner
        self._in = _Direction(peer, "<")
        self._out = _Direction(peer, ">")
        self.synchronous = inner.synchronous

    async def receive(
        self, stream: trio.abc.Stream, hold: ReadHold | None = None
    ) -> bytes | bytearray:
        data = await self._inner.receive(stream, hold)
        self._in.feed(data)
        return data

    async def send_all(self, stream: trio.abc.Stream, data: bytes) -> None:
        await self._inner.send_all(stream, data)
        self._out.feed(data)

    async def send_eof(self, stream: trio.abc.Stream) -> None:
        await self._inner.send_eof(stream)

    def write_last(self, stream: trio.abc.Stream, data: bytes) -> bool:
        written = self._inner.write_last(stream, data)
        if written:
            self._out.feed(data)
        return written

    def shutdown(self, stream: trio.abc.Stream, *, read: bool) -> bool:
        return self._inner.shutdown(stream, read=read)

    def unread_input(self, stream: trio.abc.Stream) -> int | None:
        return self._inner.unread_input(stream)

    def close_now(self, stream: trio.abc.Stream) -> bool:
        return self._inner.close_now(stream)

    async def aclose(self, stream: trio.abc.Stream) -> None:
        await self._inner.aclose(stream)
