"""HeartbeatConnection: the framed protocol over any ``trio.abc.Stream``.

One reader task owns receiving and decoding and dispatches each frame: DATA to
the application's queue, PING answered with PONG, PONG to the RTT estimator,
CLOSE ends the connection. Sends from every task go through one FIFO lock, so
frames never interleave. The server and the client build on this class; they
add the handshake and the liveness policy around it.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import trio

from ._protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    Close,
    CloseCode,
    Data,
    FrameDecoder,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    RemoteProtocolError,
    encode,
)
from ._rtt import RttEstimator

__all__ = [
    "ConnectionClosed",
    "ConnectionStats",
    "DisconnectReason",
    "HeartbeatConnection",
    "HeartbeatTimeout",
]

logger = logging.getLogger("trio_heartbeat")

# 64 KiB reads: large enough to drain a burst of frames in one wake-up, which is
# what makes answering a batch of PINGs with one send_all possible.
RECEIVE_SIZE: Final = 65536
# DATA frames the reader queues for the application before it stops reading
# (back-pressure to the peer through TCP instead of unbounded memory).
DEFAULT_RECEIVE_BUFFER: Final = 64

_EMPTY_PONG: Final = encode(Pong())
#: Consecutive too-early PINGs tolerated; one more closes with CLOSE(4). Two
#: absorb a delayed PING arriving just before its on-time resend (as gRPC's
#: default of 2 strikes does).
MAX_PING_STRIKES: Final = 2
_EMPTY_PING: Final = encode(Ping())


class DisconnectReason(enum.Enum):
    """Why a connection ended, as hooks and logs report it."""

    CLOSED_BY_PEER = "closed by peer"
    CONNECTION_LOST = "connection lost"
    HEARTBEAT_TIMEOUT = "heartbeat timeout"
    PROTOCOL_ERROR = "protocol error"
    TOO_MANY_PINGS = "too many pings"
    HANDSHAKE_FAILED = "handshake failed"
    SHUTDOWN = "shutdown"
    SERVER_FULL = "server full"
    SLOW_CONSUMER = "slow consumer"
    CLOSED_LOCALLY = "closed locally"
    HANDLER_ERROR = "handler error"
    #: A bug in trio_heartbeat (or a transport error nothing expected): it cost
    #: this connection only, and was logged with its traceback.
    INTERNAL_ERROR = "internal error"


class ConnectionClosed(Exception):
    """The connection is closed.

    ``code`` is the CLOSE reason code that was received or sent (``None`` when
    the stream ended without a CLOSE frame), ``reason`` its text, ``by_peer``
    whether the other side ended it, and ``disconnect_reason`` the category.
    """

    def __init__(
        self,
        code: int | None,
        reason: str,
        *,
        by_peer: bool,
        disconnect_reason: DisconnectReason,
    ) -> None:
        self.code = code
        self.reason = reason
        self.by_peer = by_peer
        self.disconnect_reason = disconnect_reason
        super().__init__(self._message())

    def _message(self) -> str:
        side = "peer" if self.by_peer else "local side"
        try:
            name = CloseCode(self.code).name if self.code is not None else None
        except ValueError:
            name = "UNKNOWN"
        code = "no CLOSE frame" if name is None else f"CLOSE {self.code} {name}"
        text = f": {self.reason}" if self.reason else ""
        return f"{self.disconnect_reason.value} ({code}, by {side}){text}"


class HeartbeatTimeout(ConnectionClosed):
    """The peer went silent: the heartbeat declared it dead."""


@attrs.define(slots=True)
class _CloseInfo:
    code: int | None
    reason: str
    by_peer: bool
    disconnect_reason: DisconnectReason
    error_class: type[ConnectionClosed] = ConnectionClosed

    def error(self) -> ConnectionClosed:
        return self.error_class(
            self.code,
            self.reason,
            by_peer=self.by_peer,
            disconnect_reason=self.disconnect_reason,
        )


@attrs.define(slots=True)
class ConnectionStats:
    """Counters of one connection; times are ``trio.current_time()`` values."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    pings_sent: int = 0
    pings_received: int = 0
    pongs_sent: int = 0
    pongs_received: int = 0
    last_sent: float = -math.inf
    last_received: float = -math.inf


def _broken_reason(exc: BaseException) -> str:
    """What broke, readably: trio wraps the OSError or SSLError as the cause."""
    cause = exc.__cause__
    if cause is not None and str(cause):
        return f"{type(cause).__name__}: {cause}"
    return str(exc) or type(exc).__name__


def stream_socket(stream: Any) -> Any | None:
    """The socket under a stream, through TLS and other wrapping layers."""
    while hasattr(stream, "transport_stream"):  # trio.SSLStream and similar
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


_NO_SOCKET: Final = object()


def _peer_address(stream: trio.abc.Stream) -> object:
    """getpeername() of the stream's socket; None if it fails, _NO_SOCKET if none."""
    sock = stream_socket(stream)
    if sock is None:
        return _NO_SOCKET
    try:
        address: object = sock.getpeername()
    except OSError:
        return None
    return address


def peer_host(stream: trio.abc.Stream) -> str | None:
    """The peer's IP address for TCP (TLS included) streams, else ``None``."""
    address = _peer_address(stream)
    return str(address[0]) if isinstance(address, tuple) else None


def describe_peer(stream: trio.abc.Stream) -> str:
    """A printable address for logs: ``host:port`` of sockets, else a type name."""
    address = _peer_address(stream)
    if address is _NO_SOCKET:
        return f"<{type(stream).__name__}>"
    if address is None:
        return "<disconnected socket>"
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address) or "<unix socket>"


def _read_ready(sock: trio.socket.SocketType) -> bytes | None:
    """What the socket holds (b"" at its end), or None if nothing yet.

    A plain function: nothing of it stays alive while the reader waits. The
    descriptor is looked up on each call: -1 (EBADF) once the socket is closed.
    """
    try:
        return os.read(sock.fileno(), RECEIVE_SIZE)
    except BlockingIOError:
        return None


def _pong_wire(out: list[bytes], empty: int) -> bytes:
    """One read's PONGs as one write: ``out`` in order, then ``empty`` empty ones."""
    if not out:
        return _EMPTY_PONG if empty == 1 else _EMPTY_PONG * empty
    if empty:
        out.append(_EMPTY_PONG * empty)
    return out[0] if len(out) == 1 else b"".join(out)


class HeartbeatConnection:
    """A framed, heartbeat-aware connection over a ``trio.abc.Stream``.

    Applications get one from :func:`trio_heartbeat.serve_tcp` (server side) or
    :func:`trio_heartbeat.open_connection` (client side); both run the reader
    task for it. Use :meth:`send` and :meth:`receive` (or ``async for``) for
    application data; liveness is handled for you.
    """

    __slots__ = (
        "_activity_lot",
        "_cancel_scope",
        "_close_info",
        "_close_sent",
        "_decoder",
        "_finished",
        "_last_ping_received",
        "_min_ping_interval",
        "_on_data",
        "_ping_resent",
        "_ping_sent_at",
        "_ping_strikes",
        "_reader_done_event",
        "_reader_running",
        "_receive_buffer",
        "_receive_done",
        "_receive_lot",
        "_received",
        "_receiving",
        "_replying",
        "_rtt",
        "_send_interrupted",
        "_send_timeout",
        "_send_waiters",
        "_sending",
        "_space_lot",
        "_stream",
        "_stream_closed",
        "close_timeout",
        "negotiated",
        "on_pong",
        "peer",
        "peer_hello",
        "peer_max_frame_size",
        "pong_payload",
        "stats",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        close_timeout: float = 1.0,
        receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
        pong_payload: Callable[[bytes], bytes] | None = None,
        on_pong: Callable[[bytes], None] | None = None,
    ) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_size)
        # Per-connection memory is the product on a server holding many idle
        # connections: the queue is a plain list (at most receive_buffer items),
        # and what only some connections need is created on first use.
        # The send path's lock: a flag, and a FIFO queue only once two senders
        # ever meet (sends are almost never contended).
        self._sending = False
        self._send_waiters: trio.lowlevel.ParkingLot | None = None
        self._received: list[bytes] = []
        self._receive_lot: trio.lowlevel.ParkingLot | None = None
        self._space_lot: trio.lowlevel.ParkingLot | None = None
        self._activity_lot: trio.lowlevel.ParkingLot | None = None
        self._receive_buffer = receive_buffer
        # First recorded reason the connection ended (or is ending).
        self._close_info: _CloseInfo | None = None
        # No frame may follow: our CLOSE went out, or a send was cut mid-frame.
        self._close_sent = False
        self._send_interrupted = False
        self._stream_closed = False
        # No more DATA can arrive: the reader finished or the stream is closed.
        self._receive_done = False
        self._reader_running = False
        self._reader_done_event: trio.Event | None = None
        # The reader is inside a PONG send (still True if that send was cut):
        # a kick that finds it so means the peer stopped reading, not talking.
        self._replying = False
        # Server bookkeeping: the disconnect was logged and reported.
        self._finished = False
        self._cancel_scope: trio.CancelScope | None = None
        # The reader is blocked reading the socket, where closing it wakes it.
        self._receiving = False
        # Server, per-message handlers: the reader delivers each DATA here.
        self._on_data: (
            Callable[[HeartbeatConnection, bytes], Awaitable[object]] | None
        ) = None
        # Server: PINGs closer together than this are strikes (gRPC's
        # too_many_pings); more than MAX_PING_STRIKES in a row close with 4.
        self._min_ping_interval: float | None = None
        # Server: a send blocked longer than this drops the connection.
        self._send_timeout: float | None = None
        self._last_ping_received = -math.inf
        self._ping_strikes = 0
        self._ping_sent_at: float | None = None
        self._ping_resent = False
        self.close_timeout = close_timeout
        #: Peer's frame size limit: sends above it are refused locally.
        self.peer_max_frame_size = max_frame_size
        #: Returns the PONG payload for a received PING's payload.
        self.pong_payload = pong_payload
        #: Called with the payload of every PONG received.
        self.on_pong = on_pong
        self.stats = ConnectionStats()
        self._rtt: RttEstimator | None = None
        #: The values the handshake settled on (set once HELLO is exchanged).
        self.negotiated: Any = None
        #: The peer's HELLO fields (set once HELLO is received).
        self.peer_hello: dict[str, Any] = {}
        self.peer = describe_peer(stream)

    # ------------------------------------------------------------ public API

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying stream (for socket options, TLS details...)."""
        return self._stream

    @property
    def closed(self) -> bool:
        return self._close_info is not None

    @property
    def close_error(self) -> ConnectionClosed | None:
        """Why the connection closed, as the exception that calls now raise."""
        return None if self._close_info is None else self._close_info.error()

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        return None if self._close_info is None else self._close_info.disconnect_reason

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one DATA frame.

        Raises :class:`ConnectionClosed` (or :class:`HeartbeatTimeout`) once the
        connection is closed, also when it closes while this call is blocked,
        and ``ValueError`` for a payload larger than the peer accepts.
        """
        if len(data) > self.peer_max_frame_size:
            raise ValueError(
                f"DATA of {len(data)} bytes exceeds the peer's max_frame_size "
                f"{self.peer_max_frame_size}"
            )
        await self._send(encode(Data(data)), bounded=True)

    async def receive(self) -> bytes:
        """Return the next DATA payload.

        Data that arrived before the connection closed is still returned; after
        that it raises :class:`ConnectionClosed` with the reason.
        """
        if self._on_data is not None:
            raise RuntimeError(
                "this connection's DATA goes to its per-message handler; "
                "receive() is for connection handlers"
            )
        while True:
            if self._received:
                data = self._received.pop(0)
                if self._space_lot:
                    self._space_lot.unpark_all()
                return data
            if self._receive_done:
                raise self._closed_error()
            if self._receive_lot is None:
                self._receive_lot = trio.lowlevel.ParkingLot()
            await self._receive_lot.park()

    def __aiter__(self) -> HeartbeatConnection:
        return self

    async def __anext__(self) -> bytes:
        """Iterate DATA payloads; stops at a normal close, raises on others."""
        try:
            return await self.receive()
        except ConnectionClosed as exc:
            if exc.code == CloseCode.NORMAL or (
                exc.by_peer and exc.disconnect_reason is DisconnectReason.CLOSED_BY_PEER
            ):
                raise StopAsyncIteration from None
            raise

    async def ping(self, payload: bytes = b"") -> None:
        """Send a PING now (heartbeat loops call this; applications rarely need to)."""
        await self._send_ping(payload, resend=False)

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close gracefully: send CLOSE(code), wait for the peer's, close the stream.

        While waiting (at most ``close_timeout``), DATA the peer sent before its
        own CLOSE is still delivered to :meth:`receive`, so replies in flight
        are not lost. Idempotent; sending CLOSE is shielded from cancellation
        and bounded, and the stream is closed even if this is cancelled.
        """
        self._set_closed(
            _CloseInfo(code, reason, False, DisconnectReason.CLOSED_LOCALLY)
        )
        try:
            await self._send_close(code, reason)
            if self._reader_running and not self._receive_done:
                if self._reader_done_event is None:
                    self._reader_done_event = trio.Event()
                with trio.move_on_after(self.close_timeout, shield=True):
                    await self._reader_done_event.wait()
        finally:
            await self._shut_stream()

    # ------------------------------------------------------------ internals

    def _set_closed(self, info: _CloseInfo) -> None:
        if self._close_info is None:
            self._close_info = info
        # Lots are falsy when nobody is parked: no unpark machinery for nothing.
        if self._receive_lot:
            self._receive_lot.unpark_all()
        if self._activity_lot:
            self._activity_lot.unpark_all()
        if self._space_lot:
            self._space_lot.unpark_all()

    def _closed_error(self) -> ConnectionClosed:
        if self._close_info is None:
            return ConnectionClosed(
                None,
                "",
                by_peer=False,
                disconnect_reason=DisconnectReason.CLOSED_LOCALLY,
            )
        return self._close_info.error()

    def _mark_receive_done(self) -> None:
        self._receive_done = True
        if self._receive_lot:
            self._receive_lot.unpark_all()
        if self._reader_done_event is not None:
            self._reader_done_event.set()

    def _close_now(self, info: _CloseInfo, wire: bytes | None = None) -> bool:
        """End the connection without waiting for anything (the server's kick).

        Records ``info``; on a plain TCP socket whose send path is free, writes
        CLOSE (``wire`` if given, its encoding) only if the kernel takes it at
        once, then ends the socket: the peer gets FIN, and every task blocked on
        the socket wakes. Other streams (TLS, in-memory) get their CLOSE from the
        usual bounded async path when the connection finishes.

        Returns True when that leaves nothing to cancel: a per-message reader
        blocked on the socket, the connection's one task, ends by itself.
        """
        self._set_closed(info)
        stream = self._stream
        if type(stream) is not trio.SocketStream or sys.platform == "win32":
            return False
        ends_by_itself = self._receiving and self._on_data is not None
        if (
            info.code is not None
            and not (self._close_sent or self._send_interrupted or self._stream_closed)
            and not self._sending
        ):
            if wire is None:
                wire = encode(Close(info.code, info.reason[:200]))
            self._close_sent = True
            try:
                # A non-blocking write: a few bytes fit unless the peer has
                # stopped reading, and then it does not matter.
                written = os.write(stream.socket.fileno(), wire)
            except OSError:
                written = 0
            if written == len(wire):
                self._count_sent(1, written)
        self._mark_receive_done()
        if self._stream_closed:
            return ends_by_itself
        if ends_by_itself:
            # Shut the socket down rather than close it. It turns readable, so
            # the reader wakes through the ordinary I/O path instead of with an
            # exception raised through its frames, finds the connection ended,
            # and closes the socket on its way out; the peer gets FIN after the
            # CLOSE all the same. (Where a handler task must be cancelled too,
            # closing wakes the reader first, which spares the cancel an abort
            # of its wait.)
            try:
                stream.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more (reset): close it below
            else:
                return True
        self._stream_closed = True
        stream.socket.close()
        return ends_by_itself

    async def _shut_stream(self) -> None:
        self._mark_receive_done()
        if not self._stream_closed:
            self._stream_closed = True
            stream = self._stream
            if type(stream) is trio.SocketStream:
                # Closing the socket is synchronous and wakes any task blocked
                # on it; this skips aclose_forcefully's cancel scope, which
                # matters when a thousand connections are kicked at once.
                stream.socket.close()
            else:
                await trio.aclose_forcefully(stream)

    async def _send_close(self, code: int, reason: str) -> None:
        """Send CLOSE once, if the stream can still carry a whole frame.

        Shielded and bounded by ``close_timeout``: a peer that stopped reading
        cannot hold the close up.
        """
        if self._close_sent or self._send_interrupted or self._stream_closed:
            return
        self._close_sent = True
        wire = encode(Close(code, reason[:200]))
        with trio.move_on_after(self.close_timeout, shield=True):
            await self._acquire_send()
            try:
                if self._send_interrupted or self._stream_closed:
                    return
                try:
                    await self._stream.send_all(wire)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                self._count_sent(1, len(wire))
            finally:
                self._release_send()

    async def _acquire_send(self) -> None:
        """Take the send path, first come first served.

        Uncontended (the usual case) this is a flag store, without the
        scheduler round trip of a lock; send_all is a checkpoint anyway.
        """
        if not self._sending:
            self._sending = True
            return
        if self._send_waiters is None:
            self._send_waiters = trio.lowlevel.ParkingLot()
        await self._send_waiters.park()  # woken owning it: see _release_send

    def _release_send(self) -> None:
        waiters = self._send_waiters
        if not (waiters and waiters.unpark(count=1)):
            self._sending = False  # nobody waiting; else handed over as is

    async def _send_close_and_shut(self, code: int, reason: str) -> None:
        """Send CLOSE (bounded, shielded), then close the stream whatever happens."""
        try:
            await self._send_close(code, reason)
        finally:
            await self._shut_stream()

    async def _abort(self, info: _CloseInfo) -> None:
        """Close now with ``info`` as the reason, waking every blocked call."""
        self._set_closed(info)
        await self._shut_stream()
        self._cancel()

    def _count_sent(self, frames: int, nbytes: int) -> None:
        stats = self.stats
        stats.frames_sent += frames
        stats.bytes_sent += nbytes
        stats.last_sent = trio.current_time()

    async def _send(
        self, wire: bytes, frames: int = 1, *, bounded: bool = False
    ) -> None:
        """Send whole frames through the one send path.

        ``bounded`` sends (the application's DATA) are limited by the server's
        send timeout. The reader's PONGs need no such bound: while a PONG is
        stuck, the reader reads nothing, no frame moves the idle deadline, and
        the server drops the peer as a slow consumer at ``timeout``; and the
        heartbeat path stays free of a cancel scope per send.
        """
        # Sending stays possible after the peer's CLOSE (last replies), until
        # our own CLOSE is out or the stream is gone.
        if self._close_sent or self._stream_closed or self._send_interrupted:
            raise self._closed_error()
        await self._acquire_send()
        try:
            if self._close_sent or self._stream_closed or self._send_interrupted:
                raise self._closed_error()
            try:
                if not bounded or self._send_timeout is None:
                    await self._stream.send_all(wire)
                else:
                    await self._send_bounded(wire)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._set_closed(
                    _CloseInfo(
                        None,
                        _broken_reason(exc),
                        True,
                        DisconnectReason.CONNECTION_LOST,
                    )
                )
                raise self._closed_error() from None
            except BaseException:
                # Cancelled (or worse) mid-send: part of a frame may be on the
                # wire, so no further frame may follow it.
                self._send_interrupted = True
                self._set_closed(
                    _CloseInfo(
                        None,
                        "a send was interrupted mid-frame",
                        False,
                        DisconnectReason.CONNECTION_LOST,
                    )
                )
                raise
            self._count_sent(frames, len(wire))
        finally:
            self._release_send()

    async def _send_bounded(self, wire: bytes) -> None:
        timeout = self._send_timeout
        assert timeout is not None
        with trio.move_on_after(timeout) as scope:
            await self._stream.send_all(wire)
        if scope.cancelled_caught:
            # The peer stopped reading. Part of a frame may be on the wire, so
            # no CLOSE can follow: record why, close, stop the connection.
            self._send_interrupted = True
            self._set_closed(
                _CloseInfo(
                    None,
                    f"a send was blocked for {timeout:g} s: the peer stopped reading",
                    False,
                    DisconnectReason.SLOW_CONSUMER,
                )
            )
            await self._shut_stream()
            self._cancel()
            raise self._closed_error()

    async def _send_ping(self, payload: bytes, *, resend: bool) -> None:
        wire = encode(Ping(payload)) if payload else _EMPTY_PING
        await self._send(wire)
        self.stats.pings_sent += 1
        if resend:
            self._ping_resent = True
        else:
            self._ping_sent_at = self.stats.last_sent
            self._ping_resent = False

    async def _send_hello(self, fields: dict[str, Any]) -> None:
        await self._send(encode(Hello(fields)))

    async def _receive_hello(self) -> Hello:
        """Read the peer's first frame, which must be HELLO (handshake only).

        A CLOSE instead (the server is full, the handshake failed) raises
        :class:`ConnectionClosed` carrying its code.
        """
        decoder = self._decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                break
            if decoder.eof:
                raise ConnectionClosed(
                    None,
                    "stream ended during the handshake",
                    by_peer=True,
                    disconnect_reason=DisconnectReason.HANDSHAKE_FAILED,
                )
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(
                    None,
                    _broken_reason(exc),
                    by_peer=True,
                    disconnect_reason=DisconnectReason.CONNECTION_LOST,
                ) from None
            self.stats.bytes_received += len(data)
            decoder.receive_data(data)
        self.stats.frames_received += 1
        self.stats.last_received = trio.current_time()
        if isinstance(frame, Close):
            info = _CloseInfo(
                frame.code,
                frame.reason,
                True,
                DisconnectReason.CLOSED_BY_PEER,
            )
            self._set_closed(info)
            raise info.error()
        if not isinstance(frame, Hello):
            raise RemoteProtocolError(
                f"expected HELLO, got {frame.frame_type.name} before the handshake"
            )
        self.peer_hello = dict(frame.fields)
        return frame

    async def _wait_activity(self) -> None:
        """Block until the next read that carried at least one frame."""
        if self._activity_lot is None:
            self._activity_lot = trio.lowlevel.ParkingLot()
        await self._activity_lot.park()

    def _count_ping_strike(self) -> None:
        assert self._min_ping_interval is not None
        now = trio.current_time()
        if now - self._last_ping_received < self._min_ping_interval:
            self._ping_strikes += 1
            if self._ping_strikes > MAX_PING_STRIKES:
                raise RemoteProtocolError(
                    f"more than {MAX_PING_STRIKES} PINGs in a row closer together "
                    f"than min_interval {self._min_ping_interval:g} s",
                    CloseCode.TOO_MANY_PINGS,
                )
        else:
            self._ping_strikes = 0
        self._last_ping_received = now

    def _cancel(self) -> None:
        """Cancel the connection's scope on purpose (not an idle deadline)."""
        # Checked first: a repeated cancel() still costs what the first did.
        scope = self._cancel_scope
        if scope is not None and not scope.cancel_called:
            scope.cancel()

    async def _wait_space(self) -> None:
        if self._space_lot is None:
            self._space_lot = trio.lowlevel.ParkingLot()
        await self._space_lot.park()

    @property
    def rtt(self) -> RttEstimator:
        """Smoothed round-trip time from this side's PINGs (RFC 6298)."""
        if self._rtt is None:
            self._rtt = RttEstimator()
        return self._rtt

    async def _protocol_failure(self, exc: ProtocolError) -> None:
        logger.info("protocol error from %s: %s", self.peer, exc)
        reason = (
            DisconnectReason.TOO_MANY_PINGS
            if exc.code == CloseCode.TOO_MANY_PINGS
            else DisconnectReason.PROTOCOL_ERROR
        )
        self._set_closed(_CloseInfo(exc.code, str(exc), False, reason))
        await self._send_close_and_shut(exc.code, str(exc))
        self._cancel()

    async def _run_reader(self) -> None:
        """The reader task: receive, decode, dispatch until the connection ends.

        It never raises for anything the peer does: every ending is recorded as
        the close reason and wakes the application's blocked calls. When the
        peer closed, the application gets to read what was queued and
        ``close_timeout`` more to finish (its last replies), then the
        connection's scope (handler or client body) is cancelled.
        """
        self._reader_running = True
        peer_closed = False
        try:
            peer_closed = await self._read_loop()
        except RemoteProtocolError as exc:
            await self._protocol_failure(exc)
        except ConnectionClosed:
            pass  # a send of ours found the connection closed; reason recorded
        finally:
            self._reader_running = False
            self._mark_receive_done()
        if peer_closed and self._cancel_scope is not None and self._on_data is None:
            while self._received:
                await self._wait_space()
            await trio.sleep(self.close_timeout)
            self._cancel()

    async def _read_loop(self) -> bool:
        """Read until the peer closes (returns True) or we stop (returns False)."""
        stream = self._stream
        # A plain TCP socket is read by descriptor: SocketStream.receive_some
        # would keep three more frames and a context manager alive in every
        # idle connection (~0.7 KB of it), and cost as much again per read.
        sock = None
        if type(stream) is trio.SocketStream and sys.platform != "win32":
            sock = stream.socket
        decoder = self._decoder
        stats = self.stats
        received = self._received
        while True:
            # Decode every complete frame of this read before sending anything,
            # so a burst of PINGs is answered with one send_all. Empty PONGs
            # are only counted (one bytes multiplication at the end, not a
            # list entry per PING); ``out`` holds PONGs with payloads, in order.
            out: list[bytes] = []
            empty = pongs = frames = 0
            while (frame := decoder.next_frame()) is not None:
                frames += 1
                frame_class = type(frame)
                if frame_class is Data:
                    assert isinstance(frame, Data)
                    received.append(frame.payload)
                elif frame_class is Ping:
                    assert isinstance(frame, Ping)
                    stats.pings_received += 1
                    if self._min_ping_interval is not None:
                        self._count_ping_strike()
                    pongs += 1
                    if self.pong_payload is None:
                        empty += 1
                    else:
                        if empty:
                            out.append(_EMPTY_PONG * empty)
                            empty = 0
                        out.append(encode(Pong(self.pong_payload(frame.payload))))
                elif frame_class is Pong:
                    assert isinstance(frame, Pong)
                    self._pong_received(frame.payload)
                elif frame_class is Close:
                    assert isinstance(frame, Close)
                    stats.frames_received += frames
                    stats.last_received = trio.current_time()
                    self._set_closed(
                        _CloseInfo(
                            frame.code,
                            frame.reason,
                            True,
                            DisconnectReason.CLOSED_BY_PEER,
                        )
                    )
                    if pongs:
                        await self._send(_pong_wire(out, empty), pongs)
                    if self._on_data is not None:
                        await self._deliver()
                    return True
                else:
                    raise RemoteProtocolError("unexpected HELLO after the handshake")
            if frames:
                stats.frames_received += frames
                stats.last_received = trio.current_time()
                if received and self._receive_lot:
                    self._receive_lot.unpark_all()
                if self._activity_lot:
                    self._activity_lot.unpark_all()
                if pongs:
                    stats.pongs_sent += pongs
                    self._replying = True
                    await self._send(_pong_wire(out, empty), pongs)
                    self._replying = False
                if received and self._on_data is not None:
                    await self._deliver()
            if decoder.eof:
                self._set_closed(
                    _CloseInfo(
                        None,
                        "stream ended without CLOSE",
                        True,
                        DisconnectReason.CLOSED_BY_PEER,
                    )
                )
                return True
            while len(received) >= self._receive_buffer and not self._stream_closed:
                await self._wait_space()
            self._receiving = True
            data: bytes | bytearray | None
            try:
                if sock is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                else:
                    # Trio's own sequence: a read that succeeds at once is
                    # followed by a schedule point; else wait, then read.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    data = _read_ready(sock)
                    if data is not None:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    while data is None:  # readable, then maybe not: wait again
                        await trio.lowlevel.wait_readable(sock)
                        data = _read_ready(sock)
            except trio.ClosedResourceError:
                return False  # we closed it
            except (trio.BrokenResourceError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno == errno.EBADF:
                    return False  # we closed it
                self._set_closed(
                    _CloseInfo(
                        None,
                        str(exc.__cause__ or exc) or type(exc).__name__,
                        True,
                        DisconnectReason.CONNECTION_LOST,
                    )
                )
                return True
            finally:
                self._receiving = False
            if self._receive_done:
                return False  # kicked or closed as this read completed
            assert data is not None
            stats.bytes_received += len(data)
            decoder.receive_data(data)

    async def _deliver(self) -> None:
        """Per-message handlers: hand this read's DATA over, in order."""
        on_data = self._on_data
        assert on_data is not None
        batch = self._received.copy()
        self._received.clear()  # _read_loop holds this very list
        for payload in batch:
            await on_data(self, payload)

    def _pong_received(self, payload: bytes) -> None:
        self.stats.pongs_received += 1
        sent_at = self._ping_sent_at
        if sent_at is not None:
            if not self._ping_resent:  # Karn: a resent PING gives no sample
                self.rtt.update(trio.current_time() - sent_at)
            self._ping_sent_at = None
        if self.on_pong is not None:
            self.on_pong(payload)
