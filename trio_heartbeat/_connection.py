"""HeartbeatConnection: a :class:`Session` driven over a transport, with Trio.

The session (``_session.py``) holds every rule; this class only moves bytes,
keeps time and runs tasks:

* one reader task (:meth:`HeartbeatConnection.run_reader`) receives, feeds the
  session, and acts on its events in order: DATA to the application (queued, or
  handed to a per-message handler), replies (PONGs) written where they fall,
  the peer's CLOSE or a protocol error ending the connection;
* one send path, first come first served, so frames never interleave;
* the application's calls: :meth:`send`, :meth:`receive` (or ``async for``),
  :meth:`ping`, :meth:`aclose`.

Servers and clients drive a connection through its named driver methods
(:meth:`~HeartbeatConnection.read_hello`, :meth:`~HeartbeatConnection.accept`,
:meth:`~HeartbeatConnection.handshake`, :meth:`~HeartbeatConnection.run_reader`,
:meth:`~HeartbeatConnection.end`, :meth:`~HeartbeatConnection.end_now`...).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import trio

from ._adaptive import IntervalLearner
from ._config import Negotiated
from ._protocol import DEFAULT_MAX_FRAME_SIZE, Close, CloseCode, Data, Pong
from ._rtt import RttEstimator
from ._session import (
    CloseInfo,
    ConnectionClosed,
    DisconnectReason,
    EndOfStream,
    Established,
    HelloReceived,
    ProtocolFailure,
    Role,
    Session,
    SessionState,
)
from ._trace import TracingTransport, tracing
from ._transport import (
    ReadHold,
    Transport,
    TransportBroken,
    TransportClosed,
    stream_socket,
    transport_for,
)

__all__ = [
    "ConnectionStats",
    "HeartbeatConnection",
    "PingResult",
    "describe_peer",
    "peer_host",
]

logger = logging.getLogger("trio_heartbeat")

# DATA frames the reader queues for the application before it stops reading
# (back-pressure to the peer through TCP instead of unbounded memory).
DEFAULT_RECEIVE_BUFFER: Final = 64

MessageHandler = Callable[["HeartbeatConnection", bytes], Awaitable[object]]


@attrs.frozen
class PingResult:
    """What :meth:`HeartbeatConnection.ping` returns once its PONG arrived."""

    #: Seconds from the PING written to its PONG received.
    rtt: float
    #: The PONG's payload (by default an echo of the PING's).
    payload: bytes


@attrs.define
class _PongWaiter:
    rank: int  # this PING is the rank-th sent; the rank-th PONG answers it
    sent_at: float
    answered: trio.Event = attrs.field(factory=trio.Event)
    result: PingResult | None = None


@attrs.frozen
class ConnectionStats:
    """Counters of one connection, as a snapshot; times are
    ``trio.current_time()`` values."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    pings_sent: int = 0
    pings_received: int = 0
    pongs_sent: int = 0
    pongs_received: int = 0
    #: When bytes were last written.
    last_sent: float = -math.inf
    #: When bytes were last received (any bytes, a partial frame too).
    last_received: float = -math.inf
    #: The φ accrual suspicion level when the snapshot was taken (``None``
    #: with the fixed rule): a server's, of the client's silence; a client's,
    #: of its unanswered PING's wait.
    phi: float | None = None
    #: The heartbeat interval in use, seconds: the negotiated one, or an
    #: adaptive client's current try (``None`` before the handshake).
    interval: float | None = None
    #: An adaptive client's settled interval (``None`` while it is still
    #: learning, and without ``adaptive``).
    learned_interval: float | None = None


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


#: Endings that are the peer's fault: the connection's work is cancelled at once.
_PEER_FAULTS: Final = frozenset(
    {DisconnectReason.PROTOCOL_ERROR, DisconnectReason.TOO_MANY_PINGS}
)
#: States in which this side sends nothing more (its CLOSE is out).
_DONE_SENDING: Final = frozenset({SessionState.CLOSING, SessionState.CLOSED})
_INTERRUPTED: Final = CloseInfo(
    None, "a send was interrupted mid-frame", False, DisconnectReason.CONNECTION_LOST
)


class HeartbeatConnection:
    """A framed, heartbeat-aware connection over a ``trio.abc.Stream``.

    Applications get one from :func:`trio_heartbeat.serve_tcp` (server side) or
    :func:`trio_heartbeat.open_connection` (client side); both run the reader
    task for it. Use :meth:`send` and :meth:`receive` (or ``async for``) for
    application data; liveness is handled for you.

    Made directly on a stream, it skips the handshake (its session starts open).
    """

    __slots__ = (
        "_hold",
        "_on_data",
        "_pong_waiters",
        "_reader_done",
        "_reader_running",
        "_receive_buffer",
        "_receive_lot",
        "_received",
        "_receiving",
        "_replying",
        "_scope",
        "_send_timeout",
        "_send_waiters",
        "_sending",
        "_space_lot",
        "_stream",
        "_stream_closed",
        "_transport",
        "close_timeout",
        "identity",
        "learner",
        "on_pong",
        "peer",
        "session",
        "state",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        session: Session | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        close_timeout: float = 1.0,
        send_timeout: float | None = None,
        receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
        pong_payload: Callable[[bytes], bytes] | None = None,
        on_pong: Callable[[bytes], None] | None = None,
    ) -> None:
        self._stream = stream
        self._transport: Transport = transport_for(stream)
        #: An adaptive client's :class:`IntervalLearner` (else ``None``).
        self.learner: IntervalLearner | None = None
        #: The protocol state machine underneath (sans-IO).
        self.session = session or Session(
            Role.CLIENT,
            max_frame_size=max_frame_size,
            pong_payload=pong_payload,
            open=True,
        )
        if pong_payload is not None:
            self.session.pong_payload = pong_payload
        # Per-connection memory is the product on a server holding many idle
        # connections: the queue is a plain list (at most receive_buffer
        # items), and what only some connections need is made on first use.
        # The send path's lock is a flag, and a FIFO queue only once two
        # senders ever meet (sends are almost never contended).
        self._sending = False
        self._send_waiters: trio.lowlevel.ParkingLot | None = None
        self._received: list[bytes] = []
        self._receive_lot: trio.lowlevel.ParkingLot | None = None
        self._space_lot: trio.lowlevel.ParkingLot | None = None
        self._receive_buffer = receive_buffer
        self._stream_closed = False
        self._reader_running = False
        self._reader_done: trio.Event | None = None
        # The reader is blocked reading the socket, where ending it wakes it.
        self._receiving = False
        # The reader is inside a PONG send (still True if that send was cut):
        # a kick that finds it so means the peer stopped reading, not talking.
        self._replying = False
        self._scope: trio.CancelScope | None = None
        self._on_data: MessageHandler | None = None
        self._pong_waiters: list[_PongWaiter] | None = None
        self._hold = ReadHold()  # see hold_answer
        #: Longest a send may block before the peer counts as a slow consumer
        #: (``None``: no bound; servers set their ``send_timeout``).
        self._send_timeout = send_timeout
        #: How long closing may wait for the CLOSE to go out, and then for the
        #: peer's CLOSE or end of stream.
        self.close_timeout = close_timeout
        #: Called with the payload of every PONG received.
        self.on_pong = on_pong
        #: The peer's address for logs (``host:port``, or the stream's type).
        self.peer = describe_peer(stream)
        if tracing():
            self._transport = TracingTransport(self._transport, self.peer)
        #: What the server's ``authenticate`` hook returned for this client
        #: (``None`` without one).
        self.identity: Any = None
        #: Yours: per-connection application state (a user, a session object...).
        self.state: Any = None

    # ------------------------------------------------------------ state

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying stream (for socket options, TLS details...)."""
        return self._stream

    @property
    def closed(self) -> bool:
        """Whether the connection has ended or is ending."""
        return self.session.close_info is not None

    @property
    def close_error(self) -> ConnectionClosed | None:
        """Why the connection closed, as the exception that calls now raise."""
        info = self.session.close_info
        return None if info is None else info.error()

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why the connection ended (``None`` while it is open)."""
        info = self.session.close_info
        return None if info is None else info.disconnect_reason

    @property
    def negotiated(self) -> Negotiated | None:
        """The values the handshake settled on (``None`` before it)."""
        return self.session.negotiated

    @property
    def peer_hello(self) -> dict[str, Any]:
        """The peer's HELLO fields (empty before the handshake)."""
        return self.session.peer_hello

    @property
    def client_id(self) -> str | None:
        """The ``client_id`` the client gave in its HELLO (``None`` if none)."""
        value = self.session.peer_hello.get("client_id")
        return value if isinstance(value, str) else None

    @property
    def peer_max_frame_size(self) -> int:
        """The largest DATA payload the peer accepts; larger sends are refused."""
        return self.session.peer_max_frame_size

    @peer_max_frame_size.setter
    def peer_max_frame_size(self, value: int) -> None:
        self.session.peer_max_frame_size = value

    @property
    def pong_payload(self) -> Callable[[bytes], bytes] | None:
        """Maps a received PING's payload to its PONG's (``None``: echo it)."""
        return self.session.pong_payload

    @pong_payload.setter
    def pong_payload(self, hook: Callable[[bytes], bytes] | None) -> None:
        self.session.pong_payload = hook

    @property
    def stats(self) -> ConnectionStats:
        """A snapshot of the connection's counters."""
        s = self.session
        return ConnectionStats(
            frames_sent=s.frames_sent,
            frames_received=s.frames_received,
            bytes_sent=s.bytes_sent,
            bytes_received=s.bytes_received,
            pings_sent=s.pings_sent,
            pings_received=s.pings_received,
            pongs_sent=s.pongs_sent,
            pongs_received=s.pongs_received,
            last_sent=s.last_sent,
            last_received=s.last_received,
            phi=s.phi(trio.current_time()) if s.detector is not None else None,
            interval=(
                self.learner.interval
                if self.learner is not None
                else None
                if s.negotiated is None
                else s.negotiated.interval
            ),
            learned_interval=(
                self.learner.interval
                if self.learner is not None and self.learner.settled
                else None
            ),
        )

    @property
    def rtt(self) -> RttEstimator:
        """Smoothed round-trip time from this side's PINGs (RFC 6298)."""
        return self.session.rtt

    @property
    def last_received(self) -> float:
        """When anything was last received (``trio.current_time()``)."""
        return self.session.last_received

    @property
    def last_sent(self) -> float:
        """When anything was last written (``trio.current_time()``)."""
        return self.session.last_sent

    def unread_input(self) -> int | None:
        """Bytes from the peer waiting in the kernel, not read yet (``None``:
        this stream cannot tell). A judge that finds some knows the peer is
        alive, whatever its reader has managed to read."""
        return self._transport.unread_input(self._stream)

    @property
    def replying(self) -> bool:
        """Whether the reader is (or was cut while) writing PONGs: a peer that
        went silent meanwhile stopped reading rather than talking."""
        return self._replying

    # ------------------------------------------------------------ application API

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one DATA frame.

        Raises :class:`ConnectionClosed` (or :class:`HeartbeatTimeout`) once the
        connection is closed, also when it closes while this call is blocked,
        and ``ValueError`` for a payload larger than the peer accepts.
        """
        await self._send(self.session.data(data), bounded=True)

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
            if not self._reader_running and self.session.close_info is not None:
                raise self.session.error()
            if self._stream_closed:
                raise self.session.error()
            if self._receive_lot is None:
                self._receive_lot = trio.lowlevel.ParkingLot()
            await self._receive_lot.park()

    def __aiter__(self) -> HeartbeatConnection:
        return self

    async def __anext__(self) -> bytes:
        """Iterate DATA payloads.

        The iteration stops at a normal close, CLOSE(0) from either side; any
        other ending raises :class:`ConnectionClosed` (or
        :class:`HeartbeatTimeout`) with its reason: kicked (1), the server
        shutting down (5), refused (7), the stream ended without CLOSE or
        broke. As websockets does, so that a loop over the messages ends only
        when the conversation did.
        """
        try:
            return await self.receive()
        except ConnectionClosed as exc:
            if exc.code == CloseCode.NORMAL:
                raise StopAsyncIteration from None
            raise

    async def ping(self, payload: bytes = b"") -> PingResult:
        """Send a PING and wait for its PONG: the round trip and the PONG's payload.

        PONGs answer PINGs in order on one stream, so the answer is the PONG
        that matches this PING's place among all PINGs sent (heartbeats
        included), whatever its payload. Cancel it with your own scope
        (``trio.move_on_after``); it raises :class:`ConnectionClosed` if the
        connection ends first. The heartbeat keeps running meanwhile.
        """
        session = self.session
        # Registered before sending: the PONG may come back at once. The
        # session counts the PING synchronously, as send_heartbeat starts.
        now = trio.current_time()
        waiter = _PongWaiter(session.pings_sent + 1, now)
        if self._pong_waiters is None:
            self._pong_waiters = []
        self._pong_waiters.append(waiter)
        try:
            await self._send(session.ping(payload, now=now))
            await waiter.answered.wait()
        finally:
            if waiter in self._pong_waiters:
                self._pong_waiters.remove(waiter)
        if waiter.result is None:
            raise session.error()
        return waiter.result

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close gracefully: send CLOSE(code), wait for the peer's, close the stream.

        While waiting (at most ``close_timeout``), DATA the peer sent before its
        own CLOSE is still delivered to :meth:`receive`, so replies in flight
        are not lost. Idempotent; sending CLOSE is shielded from cancellation
        and bounded, and the stream is closed even if this is cancelled.
        """
        await self.end(code, reason, DisconnectReason.CLOSED_LOCALLY)

    # ------------------------------------------------------------ driver API

    def bind_scope(self, scope: trio.CancelScope | None) -> None:
        """The scope to cancel when the connection ends underneath its work
        (the server's handler, the client's ``async with`` body)."""
        self._scope = scope

    def cancel(self) -> None:
        """Cancel the bound scope (once; a repeated cancel() still costs)."""
        scope = self._scope
        if scope is not None and not scope.cancel_called:
            scope.cancel()

    async def handshake(self, fields: Mapping[str, Any]) -> Negotiated:
        """Client: send HELLO with ``fields``, read the server's answer.

        Raises :class:`ConnectionClosed` when the server refuses (its CLOSE
        code is on the exception), answers badly (CLOSE 7 sent), or the stream
        ends; the reason is recorded on the connection either way.
        """
        await self._send(self.session.hello(fields))
        while True:
            for event in await self._receive_events():
                if isinstance(event, Established):
                    return event.negotiated
                await self._handshake_event(event)

    async def read_hello(self) -> Mapping[str, Any]:
        """Server: the client's HELLO fields, once they are complete.

        Raises :class:`ConnectionClosed` if anything else comes first (after
        sending CLOSE 2) or the stream ends.
        """
        while True:
            for event in await self._receive_events():
                if isinstance(event, HelloReceived):
                    return event.fields
                await self._handshake_event(event)

    async def accept(self, negotiated: Negotiated) -> None:
        """Server: answer the client's HELLO; the connection is open."""
        await self._send(self.session.accept(negotiated))

    async def send_heartbeat(
        self, payload: bytes = b"", *, resend: bool = False
    ) -> None:
        """Send a PING; a ``resend`` gives no RTT sample (Karn's rule)."""
        await self._send(
            self.session.ping(payload, now=trio.current_time(), resend=resend)
        )

    async def run_reader(self, on_data: MessageHandler | None = None) -> None:
        """The reader task: receive, feed the session, act on its events.

        With ``on_data`` (per-message handlers), each DATA is handed to
        ``on_data(conn, payload)`` in order, from this task; else DATA is
        queued for :meth:`receive`. It never raises for anything the peer
        does: every ending is recorded as the close reason and wakes the
        application's blocked calls. When the peer closed, the application
        gets to read what was queued and ``close_timeout`` more to finish
        (its last replies); then the bound scope is cancelled.
        """
        self._on_data = on_data
        self._reader_running = True
        session = self.session
        try:
            await self._read(session.next_events(trio.current_time()))
            if session.state is SessionState.CLOSING and not session.interrupted:
                await self._linger(in_reader=True)
        finally:
            self._reader_running = False
            self._wake_receivers()
            if self._reader_done is not None:
                self._reader_done.set()
        info = session.close_info
        if info is None or on_data is not None:
            return  # per-message: the server's task carries on from here
        if info.by_peer:
            # The peer ended it: the application reads what was queued, and
            # gets close_timeout more for its last replies.
            if self._scope is not None:
                while self._received:
                    await self._wait_space()
                await trio.sleep(self.close_timeout)
            self.cancel()
        elif info.disconnect_reason in _PEER_FAULTS:
            self.cancel()

    async def wait_input_ended(self) -> None:
        """Return once the reader stopped reading: the peer closed, the stream
        ended or broke, or this side closed. (The connection itself may still
        be finishing: after the peer's end, the application gets
        ``close_timeout`` for its last replies.)"""
        if self.session.close_info is not None and not self._reader_running:
            await trio.lowlevel.checkpoint()
            return
        if self._reader_done is None:
            self._reader_done = trio.Event()
        await self._reader_done.wait()

    async def end(
        self,
        code: int,
        reason: str,
        disconnect_reason: DisconnectReason,
    ) -> None:
        """End the connection from this side: CLOSE, the peer's answer, close.

        The reason is recorded unless another was first; the CLOSE (shielded,
        bounded by ``close_timeout``) carries our first reason. Then the
        stream is half-closed and read, for at most ``close_timeout``, until
        the peer's CLOSE or end of stream, so that our CLOSE is not destroyed
        by a reset; then it is closed, even if this is cancelled. Idempotent.
        """
        session = self.session
        wire = session.close(code, reason, disconnect_reason)
        try:
            if wire:
                if await self._send_close(wire):
                    await self._linger()
            elif session.state is SessionState.CLOSING and not session.interrupted:
                await self._linger()  # our CLOSE went out earlier (a kick)
        finally:
            await self._close_stream()

    @property
    def done_sending(self) -> bool:
        """Whether this side has sent all it ever will: its CLOSE is out, or the
        session ended where no frame may follow."""
        session = self.session
        return session.interrupted or session.state in _DONE_SENDING

    @property
    def can_end_now(self) -> bool:
        """Whether :meth:`end_now` would write its CLOSE at once (a plain TCP
        socket whose send path is free); otherwise :meth:`end` sends it."""
        return (
            self._transport.synchronous
            and not self._sending
            and not self._stream_closed
        )

    def end_now(
        self, code: int | None, reason: str, disconnect_reason: DisconnectReason
    ) -> bool:
        """End the connection without waiting for anything (the server's kick).

        Records the reason. On a plain TCP socket whose send path is free, the
        CLOSE is written only if the kernel takes it at once, and the sending
        direction is shut (FIN). ``code=None`` sends no CLOSE (the peer stopped
        reading). Other streams get their CLOSE from :meth:`end`.

        Returns True when that leaves nothing to cancel: a per-message reader
        blocked on the socket, the connection's one task, reads on until the
        peer answers or :meth:`stop_lingering`, then ends by itself.
        """
        session = self.session
        transport = self._transport
        if code is None:
            session.interrupt(CloseInfo(None, reason, False, disconnect_reason))
        elif not transport.synchronous or self._sending or self._stream_closed:
            # Sent by end(), if the send path and stream allow it then.
            session.record(CloseInfo(code, reason, False, disconnect_reason))
            return False
        else:
            wire = session.close(code, reason, disconnect_reason)
            if wire:
                if transport.write_last(self._stream, wire):  # and FIN after it
                    session.sent(len(wire), trio.current_time())
                else:
                    session.interrupt(session.close_info or _INTERRUPTED)
        if self._receiving and self._on_data is not None:
            if session.state is SessionState.CLOSING and not session.interrupted:
                return True  # the reader reads the answer, then ends
            if transport.shutdown(self._stream, read=True):
                return True  # no CLOSE to answer: the reader wakes at once
        return False

    def hold_answer(self, turn: Callable[[], Awaitable[object]]) -> None:
        """After :meth:`end_now` left the reader blocked on the socket: once
        the peer's answer (or the end of the stream) wakes it, it awaits
        ``turn()`` before it handles the answer, and the connection ends. On
        a plain socket it awaits the turn before it even reads the answer
        (which stays in the kernel meanwhile); on other streams, after.

        The server's kicker passes its cleanup turn: with thousands kicked at
        once, each answer then costs a wake-up and a wait while later kicks
        are due, and the read, the answer's handling and the connection's end
        come after them. A cancelled wait drops the answer (the connection is
        ending anyway).
        """
        self._hold.turn = turn

    @property
    def answer_held(self) -> bool:
        """Whether the reader waited its turn (:meth:`hold_answer`) before it
        handled the peer's answer to our CLOSE."""
        return self._hold.taken

    def stop_lingering(self) -> None:
        """Stop waiting for the peer's answer to our CLOSE: the reader wakes
        at the end of the stream and finishes (see :meth:`end_now`)."""
        if not self._transport.shutdown(self._stream, read=True):
            self._transport.close_now(self._stream)

    async def abort(self, info: CloseInfo) -> None:
        """Close now, without a CLOSE frame, with ``info`` as the reason,
        waking every blocked call (the client's verdict "server dead")."""
        self.session.interrupt(info)
        await self._close_stream()
        self.cancel()

    async def close_stream(self) -> None:
        """Close the stream at once (no CLOSE, no waiting); idempotent."""
        await self._close_stream()

    def _broken(self, exc: TransportBroken) -> ConnectionClosed:
        """Record a broken transport; the error to raise, caused by what broke
        (a TLS certificate refused is a failed handshake, not a lost link)."""
        if exc.tls:
            verify = isinstance(exc.cause, ssl.SSLCertVerificationError)
            self.session.lost(
                str(exc), DisconnectReason.HANDSHAKE_FAILED, by_peer=not verify
            )
        else:
            self.session.lost(str(exc))
        error = self.session.error()
        error.__cause__ = exc.cause
        return error

    # ------------------------------------------------------------ reading

    async def _read(self, events: list[Any]) -> None:
        """Act on events and read more, until the session stops being OPEN
        (or HANDSHAKE-free states that still deliver: CLOSING is left to
        :meth:`_linger`)."""
        session = self.session
        stream = self._stream
        transport = self._transport
        received = self._received
        on_data = self._on_data
        hold = self._hold
        while True:
            for event in events:
                event_class = type(event)
                if event_class is bytes:  # replies (PONGs), in their place
                    self._replying = True
                    await self._write(event)
                    self._replying = False
                elif event_class is Data:
                    if on_data is None:
                        received.append(event.payload)
                        if self._receive_lot:
                            self._receive_lot.unpark_all()
                    else:
                        await on_data(self, event.payload)
                elif event_class is Pong:
                    if self.on_pong is not None:
                        self.on_pong(event.payload)
                    if self._pong_waiters:
                        self._answer_pings(event.payload)
                elif event_class is ProtocolFailure:
                    logger.info("protocol error from %s: %s", self.peer, event.error)
                    self._wake_receivers()
                    if event.wire:
                        await self._send_close(event.wire)
                    return
                elif event_class is Close or event_class is EndOfStream:
                    self._wake_receivers()
                else:  # pragma: no cover - no handshake events after it
                    raise AssertionError(f"unexpected event {event!r}")
            if session.state is not SessionState.OPEN:
                return
            while len(received) >= self._receive_buffer and not self._stream_closed:
                await self._wait_space()
            self._receiving = True
            try:
                data = await transport.receive(stream, hold)
            except TransportClosed:
                return  # we closed it
            except TransportBroken as exc:
                self._broken(exc)
                return
            finally:
                self._receiving = False
            if self._stream_closed:
                return  # kicked or aborted as this read completed
            now = trio.current_time()
            if hold.turn is not None:  # the transport did not wait it
                await hold.wait()
            events = session.receive_data(data, now)

    async def _linger(self, *, in_reader: bool = False) -> None:
        """Our CLOSE is out (and our side half-closed): read on (replies in
        flight are still delivered) until the peer's CLOSE or end of stream,
        for at most ``close_timeout``. Shielded: a closing connection finishes
        closing.

        Where the reader task runs, it does the reading, and others wait for it.
        """
        session = self.session
        with trio.move_on_after(self.close_timeout, shield=True):
            if self._reader_running and not in_reader:
                if self._reader_done is None:
                    self._reader_done = trio.Event()
                await self._reader_done.wait()
                return
            while session.state is SessionState.CLOSING:
                try:
                    data = await self._transport.receive(self._stream)
                except (TransportClosed, TransportBroken):
                    break
                for event in session.receive_data(data, trio.current_time()):
                    if type(event) is Data and self._on_data is None:
                        self._received.append(event.payload)
                        self._wake_receivers()
                if not data:
                    break
        if session.state is SessionState.CLOSING:
            session.give_up()

    async def _receive_events(self) -> list[Any]:
        """Handshake reads: events of the next bytes; ConnectionClosed when the
        stream is closed or broken."""
        session = self.session
        events = session.next_events(trio.current_time())
        if events:
            return events
        try:
            data = await self._transport.receive(self._stream)
        except TransportClosed:
            raise session.error() from None
        except TransportBroken as exc:
            raise self._broken(exc) from exc.cause
        return session.receive_data(data, trio.current_time())

    async def _handshake_event(self, event: Any) -> None:
        """Anything but the awaited HELLO during the handshake ends it."""
        if isinstance(event, ProtocolFailure) and event.wire:
            await self._send_close(event.wire)  # CLOSE for a bad frame or HELLO
        if isinstance(event, (Close, EndOfStream, ProtocolFailure)):
            raise self.session.error()
        raise AssertionError(f"unexpected event during the handshake: {event!r}")

    # ------------------------------------------------------------ sending

    async def _send(self, wire: bytes, *, bounded: bool = False) -> None:
        """Write frames the application (or a heartbeat loop) made.

        ``bounded`` sends (the application's DATA) are limited by the send
        timeout. The reader's PONGs need no such bound: while a PONG is stuck,
        the reader reads nothing, and the server drops the peer as a slow
        consumer at ``timeout``; so the heartbeat path has no cancel scope.
        """
        await self._write(wire, bounded=bounded, check=True)

    async def _write(
        self, wire: bytes, *, bounded: bool = False, check: bool = False
    ) -> None:
        """Write whole frames through the one send path. ``check``: refuse if
        the session may not send any more by the time the path is ours (the
        session's own replies were allowed when it made them)."""
        session = self.session
        if self._stream_closed or session.interrupted:
            raise session.error()
        await self._acquire_send()
        try:
            # Another send may have been first, and ended the session (CLOSE).
            if (
                self._stream_closed
                or session.interrupted
                or (
                    check
                    and not session.can_send
                    and session.state is not SessionState.HANDSHAKE
                )
            ):
                raise session.error()
            try:
                if bounded and self._send_timeout is not None:
                    await self._send_bounded(wire, self._send_timeout)
                else:
                    await self._transport.send_all(self._stream, wire)
            except TransportClosed:
                session.record(_INTERRUPTED)
                raise session.error() from None
            except TransportBroken as exc:
                raise self._broken(exc) from exc.cause
            except BaseException:
                # Cancelled (or worse) mid-send: part of a frame may be on the
                # wire, so no further frame may follow it.
                session.interrupt(_INTERRUPTED)
                raise
            session.sent(len(wire), trio.current_time())
        finally:
            self._release_send()

    async def _send_bounded(self, wire: bytes, limit: float) -> None:
        with trio.move_on_after(limit) as scope:
            await self._transport.send_all(self._stream, wire)
        if scope.cancelled_caught:
            # The peer stopped reading. Part of a frame may be on the wire, so
            # no CLOSE can follow: record why, close, stop the connection.
            self.session.interrupt(
                CloseInfo(
                    None,
                    f"a send was blocked for {limit:g} s: the peer stopped reading",
                    False,
                    DisconnectReason.SLOW_CONSUMER,
                )
            )
            await self._close_stream()
            self.cancel()
            raise self.session.error()

    async def _send_close(self, wire: bytes) -> bool:
        """Write our CLOSE and half-close, shielded and bounded by
        ``close_timeout`` (a peer that stopped reading cannot hold the close
        up); True if the CLOSE went out."""
        if self._stream_closed:
            return False
        with trio.move_on_after(self.close_timeout, shield=True):
            await self._acquire_send()
            try:
                if self._stream_closed:
                    return False
                try:
                    await self._transport.send_all(self._stream, wire)
                except (TransportClosed, TransportBroken):
                    return False
                except BaseException:
                    self.session.interrupt(_INTERRUPTED)
                    raise
                self.session.sent(len(wire), trio.current_time())
                await self._transport.send_eof(self._stream)
                return True
            finally:
                self._release_send()
        self.session.interrupt(_INTERRUPTED)
        return False

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

    # ------------------------------------------------------------ endings

    async def _close_stream(self) -> None:
        if self._stream_closed:
            return
        self._stream_closed = True
        self._wake_receivers()
        if self.session.state is not SessionState.CLOSED:
            self.session.give_up()
        await self._transport.aclose(self._stream)

    def _wake_receivers(self) -> None:
        # Lots are falsy when nobody is parked: no unpark machinery for nothing.
        if self._receive_lot:
            self._receive_lot.unpark_all()
        if self._space_lot:
            self._space_lot.unpark_all()
        if self._pong_waiters and self.session.close_info is not None:
            for waiter in self._pong_waiters:
                waiter.answered.set()  # no result: the connection ended

    def _answer_pings(self, payload: bytes) -> None:
        """The PONG just received answers the PING of the same rank."""
        assert self._pong_waiters is not None
        now = self.session.last_received  # when the read that carried it came
        answered = self.session.pongs_received
        for waiter in self._pong_waiters:
            if waiter.rank == answered:
                waiter.result = PingResult(now - waiter.sent_at, payload)
                waiter.answered.set()

    async def _wait_space(self) -> None:
        if self._space_lot is None:
            self._space_lot = trio.lowlevel.ParkingLot()
        await self._space_lot.park()
