"""The session: every rule of the protocol for one connection, either role, sans-IO.

In the manner of h11 and wsproto, a :class:`Session` does no I/O and keeps no
clock: bytes go in through :meth:`Session.receive_data` with the time they
arrived, events come out, and the methods that make frames return the bytes to
send. The Trio layer (:class:`~trio_heartbeat.HeartbeatConnection`) only moves
those bytes, keeps time and runs tasks, so every rule here can be tested with
plain function calls:

* the HELLO exchange and who may send what before it;
* PING answered by PONG, echoing the PING's payload unless a hook replaces it;
  PINGs closer together than ``min_ping_interval`` are strikes;
* PONG matched to the last PING for the round-trip time (Karn's rule: never
  from a resent PING);
* the close handshake: after sending CLOSE a side sends nothing more, and keeps
  reading (replies in flight, then the peer's CLOSE or end of stream);
* the liveness inputs: when anything was last received and last sent;
* why the connection ended, recorded once: the first reason wins.

The state is one enum; which frame is allowed in which state is one table
(:data:`_TRANSITIONS`); "may I still send a frame?" is :attr:`Session.can_send`.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import attrs

from ._config import DEFAULT_MAX_PING_STRIKES as MAX_PING_STRIKES
from ._config import HandshakeError, Negotiated
from ._detector import PhiAccrual
from ._protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    Close,
    CloseCode,
    Data,
    Frame,
    FrameDecoder,
    Hello,
    LocalProtocolError,
    Ping,
    Pong,
    ProtocolError,
    RemoteProtocolError,
    encode,
)
from ._rtt import RttEstimator

__all__ = [
    "MAX_PING_STRIKES",
    "CloseInfo",
    "ConnectionClosed",
    "DisconnectReason",
    "EndOfStream",
    "Established",
    "Event",
    "HeartbeatTimeout",
    "HelloReceived",
    "ProtocolFailure",
    "Role",
    "Session",
    "SessionState",
]

# Float slack when comparing a PING's spacing with min_ping_interval: resends
# are scheduled exactly min_interval apart and must never be struck.
_EPSILON: Final = 1e-9
#: A CLOSE's text is diagnostic; it is cut to this many characters so that a
#: long error message never makes a large frame.
MAX_CLOSE_REASON: Final = 200

_EMPTY_PONG: Final = encode(Pong())


@functools.lru_cache(maxsize=64)
def _close_wire(code: int, reason: str) -> bytes:
    """A CLOSE frame's bytes. A burst of kicks sends the same one thousands of
    times (the fixed rule's reason): encoded once, not once per kick."""
    return encode(Close(code, reason))


class DisconnectReason(enum.Enum):
    """Why a connection ended, as hooks, logs and exceptions report it."""

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
    #: A newer session of the same ``client_id`` replaced it (presence,
    #: ``duplicate="replace"``).
    REPLACED = "replaced"
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
        if self.disconnect_reason not in _SAYS_WHO:
            code += f", by {side}"
        text = f": {self.reason}" if self.reason else ""
        return f"{self.disconnect_reason.value} ({code}){text}"


# Reasons whose own words say which side ended the connection.
_SAYS_WHO: Final = frozenset(
    {DisconnectReason.CLOSED_BY_PEER, DisconnectReason.CLOSED_LOCALLY}
)


class HeartbeatTimeout(ConnectionClosed):
    """The peer went silent: the heartbeat declared it dead."""


@attrs.frozen
class CloseInfo:
    """Why a connection ended: what :class:`ConnectionClosed` will say.

    ``code`` is the CLOSE code sent or received (``None``: no CLOSE frame),
    ``by_peer`` whether the peer ended it.
    """

    code: int | None
    reason: str
    by_peer: bool
    disconnect_reason: DisconnectReason
    error_class: type[ConnectionClosed] = ConnectionClosed

    def error(self) -> ConnectionClosed:
        """The exception that calls on the closed connection raise."""
        return self.error_class(
            self.code,
            self.reason,
            by_peer=self.by_peer,
            disconnect_reason=self.disconnect_reason,
        )


_CLOSED_LOCALLY: Final = CloseInfo(
    CloseCode.NORMAL, "", False, DisconnectReason.CLOSED_LOCALLY
)


class Role(enum.Enum):
    """Which end of the connection a session plays."""

    CLIENT = "client"
    SERVER = "server"


class SessionState(enum.Enum):
    """Where a session is in its life; each state says what may be sent.

    ============ ===================================== ==========================
    state        meaning                               this side may send
    ============ ===================================== ==========================
    HANDSHAKE    HELLOs not yet exchanged              HELLO, or CLOSE to refuse
    OPEN         the handshake is done                 any frame
    PEER_CLOSED  the peer's CLOSE came first           last replies, then CLOSE
    CLOSING      our CLOSE is out; reading on until    nothing
                 the peer's CLOSE or end of stream
    CLOSED       done in both directions               nothing
    ============ ===================================== ==========================
    """

    HANDSHAKE = "handshake"
    OPEN = "open"
    PEER_CLOSED = "peer closed"
    CLOSING = "closing"
    CLOSED = "closed"


# ---------------------------------------------------------------- events
#
# What receive_data() returns, in the order the frames arrived. DATA, PONG and
# CLOSE frames are events as they are (frozen attrs classes from _protocol).
# A ``bytes`` item is a reply to send *at that point* (PONGs; consecutive
# PONGs come as one item, so a burst of PINGs is answered with one write), so
# that replies keep the order of the frames they answer.


@attrs.frozen
class HelloReceived:
    """Server: the client's HELLO; answer with :meth:`Session.accept` or
    :meth:`Session.reject`."""

    fields: Mapping[str, Any]


@attrs.frozen
class Established:
    """Client: the server's HELLO was valid; the session is open."""

    negotiated: Negotiated


@attrs.frozen
class EndOfStream:
    """The peer ended its side of the stream (it sends nothing more)."""


@attrs.frozen
class ProtocolFailure:
    """The peer broke the protocol. ``wire`` is the CLOSE that says so (``b""``
    if none can be sent); the session is now CLOSING."""

    error: ProtocolError | HandshakeError
    info: CloseInfo
    wire: bytes


Event = (
    HelloReceived | Established | Data | Pong | Close | EndOfStream | ProtocolFailure
)
_END_OF_STREAM: Final = EndOfStream()

_Handler = Callable[["Session", Any, float, list[Any]], None]


class Session:
    """The protocol state machine of one connection, for either role.

    Create one per connection. Server::

        session = Session(Role.SERVER)
        events = session.receive_data(data, now)   # -> [HelloReceived(...)]
        wire = session.accept(negotiate(events[0].fields, config))

    Client::

        session = Session(Role.CLIENT)
        wire = session.hello({"version": 1, "interval": 25})
        events = session.receive_data(data, now)   # -> [Established(...)]

    ``now`` is any monotonic clock in seconds (the Trio layer passes
    ``trio.current_time()``). ``b""`` passed to :meth:`receive_data` means the
    peer ended the stream. ``min_ping_interval`` turns on the ping-strike rule
    (servers enforcing heartbeats): more than ``max_ping_strikes`` PINGs in a
    row *sent* closer together than it end the session with CLOSE(4).
    ``pong_payload`` maps a PING's payload to its PONG's (default: echo it
    back). A session made with ``open=True`` skips the handshake.
    """

    __slots__ = (
        "_decoder",
        "_earliest_ping",
        "_input_done",
        "_ping_resent",
        "_ping_sent_at",
        "_rtt",
        "bytes_received",
        "bytes_sent",
        "close_info",
        "data_received",
        "detector",
        "frames_received",
        "frames_sent",
        "interrupted",
        "last_received",
        "last_sent",
        "max_ping_strikes",
        "min_ping_interval",
        "negotiated",
        "peer_hello",
        "peer_max_frame_size",
        "ping_strikes",
        "pings_received",
        "pings_sent",
        "pong_payload",
        "pongs_received",
        "pongs_sent",
        "role",
        "state",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        min_ping_interval: float | None = None,
        max_ping_strikes: int = MAX_PING_STRIKES,
        pong_payload: Callable[[bytes], bytes] | None = None,
        open: bool = False,
    ) -> None:
        self.role = role
        #: Where the session is (read it; the session's methods change it).
        self.state = SessionState.OPEN if open else SessionState.HANDSHAKE
        self._decoder = FrameDecoder(max_frame_size)
        #: Sending stopped without a whole CLOSE (see :meth:`interrupt`): no
        #: frame, not even CLOSE, may follow.
        self.interrupted = False
        # Nothing more will be decoded: the end of the stream was fed, or the
        # decoder failed. What arrives after is discarded.
        self._input_done = False
        #: Why the connection ended (or is ending); the first reason wins.
        self.close_info: CloseInfo | None = None
        #: The values that apply, once the handshake is done.
        self.negotiated: Negotiated | None = None
        #: The peer's HELLO fields, once received.
        self.peer_hello: dict[str, Any] = {}
        #: The largest DATA the peer accepts (the negotiated max_frame_size).
        self.peer_max_frame_size = max_frame_size
        #: PINGs sent closer together than this are strikes (None: not counted).
        self.min_ping_interval = min_ping_interval
        #: Strikes in a row tolerated; one more is CLOSE(4) (0: no limit).
        self.max_ping_strikes = max_ping_strikes
        #: Maps a PING's payload to its PONG's; None echoes the payload.
        self.pong_payload = pong_payload
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.pings_sent = 0
        self.pings_received = 0
        #: DATA frames received.
        self.data_received = 0
        self.pongs_sent = 0
        self.pongs_received = 0
        #: When bytes were last written / received (the caller's clock).
        self.last_sent = -math.inf
        self.last_received = -math.inf
        # The earliest the last PING can have been sent, under the spacing rule.
        self._earliest_ping = -math.inf
        self.ping_strikes = 0
        self._ping_sent_at: float | None = None
        self._ping_resent = False
        self._rtt: RttEstimator | None = None
        #: φ accrual detector (None: the fixed rule). A server's learns the gaps
        #: between the client's heartbeats; a client's, its PINGs' round trips.
        self.detector: PhiAccrual | None = None

    # ------------------------------------------------------------ state

    @property
    def can_send(self) -> bool:
        """Whether a frame may be sent now (the one place that decides it)."""
        return (
            self.state is SessionState.OPEN or self.state is SessionState.PEER_CLOSED
        ) and not self.interrupted

    @property
    def closed(self) -> bool:
        """Whether the connection has ended or is ending (a reason is recorded)."""
        return self.close_info is not None

    @property
    def rtt(self) -> RttEstimator:
        """Smoothed round-trip time of this side's PINGs (RFC 6298)."""
        if self._rtt is None:
            self._rtt = RttEstimator()
        return self._rtt

    def phi(self, now: float) -> float | None:
        """The φ suspicion level now (``None`` without a φ detector): a
        server's, of the client's silence; a client's, of its unanswered PING's
        wait (0 while nothing is outstanding)."""
        detector = self.detector
        if detector is None:
            return None
        if self.role is Role.SERVER:
            return detector.phi(now - self.last_received)
        sent_at = self._ping_sent_at
        return 0.0 if sent_at is None else detector.phi(now - sent_at)

    def silence_allowed(self, timeout: float) -> float:
        """Server: how long the client may stay silent before it is kicked:
        ``timeout``, or sooner where the φ detector reaches its threshold."""
        if self.detector is None:
            return timeout
        return min(timeout, self.detector.verdict_after())

    def error(self) -> ConnectionClosed:
        """The exception for "this connection is closed", with its reason."""
        return (self.close_info or _CLOSED_LOCALLY).error()

    def record(self, info: CloseInfo) -> None:
        """Record why the connection ends, unless a reason is already recorded."""
        if self.close_info is None:
            self.close_info = info

    # ------------------------------------------------------------ sending

    def hello(self, fields: Mapping[str, Any]) -> bytes:
        """Client: the HELLO that opens the handshake."""
        self._expect(Role.CLIENT, "hello")
        self.frames_sent += 1
        return encode(Hello(dict(fields)))

    def accept(self, negotiated: Negotiated) -> bytes:
        """Server: answer the client's HELLO with the values that apply."""
        self._expect(Role.SERVER, "accept")
        self.state = SessionState.OPEN
        self.negotiated = negotiated
        self.peer_max_frame_size = negotiated.max_frame_size
        self.frames_sent += 1
        return encode(Hello(negotiated.to_hello()))

    def reject(self, code: int, reason: str) -> bytes:
        """Server: refuse the client (handshake failed, server full...)."""
        category = (
            DisconnectReason.SERVER_FULL
            if code == CloseCode.SERVER_FULL
            else DisconnectReason.HANDSHAKE_FAILED
        )
        return self.close(code, reason, category)

    def data(self, payload: bytes | bytearray | memoryview) -> bytes:
        """A DATA frame; raises :class:`ConnectionClosed` once nothing may be
        sent, ``ValueError`` for a payload larger than the peer accepts."""
        if len(payload) > self.peer_max_frame_size:
            raise ValueError(
                f"DATA of {len(payload)} bytes exceeds the peer's max_frame_size "
                f"{self.peer_max_frame_size}"
            )
        if not self.can_send:
            raise self.error()
        self.frames_sent += 1
        return encode(Data(payload))

    def ping(self, payload: bytes = b"", *, now: float, resend: bool = False) -> bytes:
        """A PING; a ``resend`` gives no RTT sample when answered (Karn)."""
        if not self.can_send:
            raise self.error()
        self.pings_sent += 1
        self.frames_sent += 1
        if resend:
            self._ping_resent = True
        else:
            self._ping_sent_at = now
            self._ping_resent = False
        return encode(Ping(payload))

    def close(
        self,
        code: int = CloseCode.NORMAL,
        reason: str = "",
        disconnect_reason: DisconnectReason = DisconnectReason.CLOSED_LOCALLY,
        *,
        error_class: type[ConnectionClosed] = ConnectionClosed,
    ) -> bytes:
        """End the session from this side: the CLOSE to send, or ``b""``.

        The reason is recorded unless one already is. The CLOSE carries the first
        reason of *ours* (a kick recorded earlier, a protocol error); after the
        peer's CLOSE it is our reply. Nothing can be sent once our CLOSE is out
        or a send was cut mid-frame, and then this returns ``b""``.
        """
        self.record(CloseInfo(code, reason, False, disconnect_reason, error_class))
        if self.interrupted:
            self.state = SessionState.CLOSED
            return b""
        if self.state is SessionState.CLOSING or self.state is SessionState.CLOSED:
            return b""
        ours = self.close_info
        assert ours is not None
        if ours.by_peer or ours.code is None:
            ours = CloseInfo(code, reason, False, disconnect_reason)
        self.state = (
            SessionState.CLOSED
            if self.state is SessionState.PEER_CLOSED
            else SessionState.CLOSING
        )
        self.frames_sent += 1
        return _close_wire(ours.code or 0, ours.reason[:MAX_CLOSE_REASON])

    def interrupt(self, info: CloseInfo) -> None:
        """A send was cut mid-frame (cancelled, or blocked too long), or we stop
        without a CLOSE: part of a frame may be on the wire, so no frame may
        follow. Records ``info``."""
        self.interrupted = True
        self.record(info)

    def give_up(self) -> None:
        """Stop waiting for the peer's CLOSE or end of stream: the connection
        is over (its stream is being closed)."""
        self.state = SessionState.CLOSED

    def lost(
        self,
        reason: str,
        disconnect_reason: DisconnectReason = DisconnectReason.CONNECTION_LOST,
        *,
        by_peer: bool = True,
    ) -> None:
        """The transport broke (reset, gone, TLS refused): nothing more in
        either direction."""
        self.record(CloseInfo(None, reason, by_peer, disconnect_reason))
        self.state = SessionState.CLOSED

    def sent(self, nbytes: int, now: float) -> None:
        """Report that ``nbytes`` bytes of frames made here were written at ``now``.

        Frames are counted when they are made (``frames_sent``), bytes and time
        when the writing is done.
        """
        self.bytes_sent += nbytes
        self.last_sent = now

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray, now: float) -> list[Event | bytes]:
        """Take bytes received at ``now`` (``b""``: end of stream); the events.

        Any byte counts as a sign of life (``last_received``), also the first
        bytes of a frame still arriving.
        """
        previous = self.last_received
        if data:
            self.bytes_received += len(data)
            self.last_received = now
        state = self.state
        if (
            self._input_done
            or state is SessionState.PEER_CLOSED
            or state is SessionState.CLOSED
        ):
            # After a protocol error, the peer's CLOSE or the end of the
            # stream, what arrives is discarded.
            if data:
                return []
            return [self._end_of_stream()]
        self._decoder.receive_data(data)
        if not data:
            self._input_done = True
        return self.next_events(now, since=previous)

    def next_events(
        self, now: float, *, since: float = -math.inf
    ) -> list[Event | bytes]:
        """The events of frames already received but not yet returned.

        ``since`` is when bytes were received before these (the PINGs among
        them may have been sent any time after it). A server stops at the
        client's HELLO (until :meth:`accept`), so that frames the client sent
        right behind it are read in the OPEN state.
        """
        events: list[Event | bytes] = []
        decoder = self._decoder
        # Consecutive PONGs go out as one write: counted here, added to
        # ``events`` as one bytes item when another event (or the end) comes.
        empty_pongs = 0
        pongs: list[bytes] | None = None
        detector = self.detector
        while True:
            state = self.state
            if state is SessionState.HANDSHAKE and self.peer_hello:
                break  # the server's decision on the HELLO comes first
            try:
                frame = decoder.next_frame()
            except RemoteProtocolError as exc:
                self._input_done = True
                self._flush_pongs(events, empty_pongs, pongs)
                self._fail(exc, events)
                return events
            if frame is None:
                break
            self.frames_received += 1
            frame_class = type(frame)
            if frame_class is Ping and state is SessionState.OPEN:
                # The heartbeat path, kept inline.
                payload = frame.payload  # type: ignore[union-attr]
                self.pings_received += 1
                if detector is not None and since > -math.inf:
                    # The gap the heartbeat closed: from the bytes before it.
                    detector.gap(now - since)
                    detector = None  # the read's other PINGs are a backlog
                if self.min_ping_interval is not None and not self._spaced(now, since):
                    self._flush_pongs(events, empty_pongs, pongs)
                    self._fail(self._strike_error(), events)
                    return events
                self.pongs_sent += 1
                self.frames_sent += 1
                hook = self.pong_payload
                if hook is None and not payload:
                    empty_pongs += 1
                    continue
                if pongs is None:
                    pongs = []
                if empty_pongs:
                    pongs.append(_EMPTY_PONG * empty_pongs)
                    empty_pongs = 0
                pongs.append(encode(Pong(payload if hook is None else hook(payload))))
                continue
            if empty_pongs or pongs:
                self._flush_pongs(events, empty_pongs, pongs)
                empty_pongs, pongs = 0, None
            handler = _TRANSITIONS.get((self.role, state, frame_class))
            try:
                if handler is None:
                    self._unexpected(frame, state)
                else:
                    handler(self, frame, now, events)
            except (RemoteProtocolError, HandshakeError) as exc:
                self._fail(exc, events)
                return events
            if self.state is SessionState.CLOSED or (
                self.state is SessionState.PEER_CLOSED
            ):
                break  # nothing valid follows the peer's CLOSE
            if state is SessionState.HANDSHAKE:
                # A client stops at the server's HELLO: what the server sent
                # right behind it is the reader's to deliver, once it runs.
                break
        if pongs is None:  # the usual case, inline: PINGs without payloads
            if empty_pongs:
                events.append(
                    _EMPTY_PONG if empty_pongs == 1 else _EMPTY_PONG * empty_pongs
                )
        else:
            self._flush_pongs(events, empty_pongs, pongs)
        # The decoder raises TruncatedFrameError at the end of the stream inside
        # a frame, so an exhausted buffer at EOF is a clean end.
        state = self.state
        if (
            self._input_done
            and state is not SessionState.CLOSED
            and state is not SessionState.PEER_CLOSED
            and decoder.buffered == 0
        ):
            events.append(self._end_of_stream())
        return events

    @staticmethod
    def _flush_pongs(
        events: list[Event | bytes], empty: int, pongs: list[bytes] | None
    ) -> None:
        if pongs is None:
            if empty:
                events.append(_EMPTY_PONG if empty == 1 else _EMPTY_PONG * empty)
            return
        if empty:
            pongs.append(_EMPTY_PONG * empty)
        events.append(pongs[0] if len(pongs) == 1 else b"".join(pongs))

    def _spaced(self, now: float, since: float) -> bool:
        """Judge a PING read at ``now`` by its spacing *as sent*; False when it
        is one strike too many.

        The PINGs of one read may have been sent any time after the previous
        read (``since``): a backlog that piled up while the reader stalled, or
        that a congested path delivered together, was spread over that time.
        So each PING gets the earliest send time the spacing rule allows: one
        ``min_ping_interval`` after the previous PING's, and not before
        ``since``. Needing a time after ``now`` means the client really sends
        faster than allowed: a strike. A real flood keeps doing that read after
        read; a backlog does not.
        """
        interval = self.min_ping_interval
        assert interval is not None
        earliest = max(self._earliest_ping + interval, since)
        if earliest > now + _EPSILON:
            self.ping_strikes += 1
            self._earliest_ping = now
            return not (0 < self.max_ping_strikes < self.ping_strikes)
        self.ping_strikes = 0
        self._earliest_ping = earliest
        return True

    def _strike_error(self) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"more than {self.max_ping_strikes} PINGs in a row sent closer "
            f"together than min_interval {self.min_ping_interval:g} s",
            CloseCode.TOO_MANY_PINGS,
        )

    def _end_of_stream(self) -> EndOfStream:
        state = self.state
        if state is SessionState.HANDSHAKE:
            self.record(
                CloseInfo(
                    None,
                    "stream ended during the handshake",
                    True,
                    DisconnectReason.HANDSHAKE_FAILED,
                )
            )
            self.state = SessionState.CLOSED
        elif state is SessionState.OPEN:
            self.record(
                CloseInfo(
                    None,
                    "stream ended without CLOSE",
                    True,
                    DisconnectReason.CLOSED_BY_PEER,
                )
            )
            self.state = SessionState.CLOSED
        elif state is SessionState.CLOSING:
            self.state = SessionState.CLOSED
        # PEER_CLOSED: the peer is done; we may still send our reply.
        return _END_OF_STREAM

    def _fail(
        self, error: ProtocolError | HandshakeError, events: list[Event | bytes]
    ) -> None:
        """The peer broke the protocol: record it, and queue our CLOSE if we can."""
        if isinstance(error, HandshakeError):
            code: int = CloseCode.HANDSHAKE_FAILED
            reason = DisconnectReason.HANDSHAKE_FAILED
        else:
            code = error.code
            reason = (
                DisconnectReason.TOO_MANY_PINGS
                if code == CloseCode.TOO_MANY_PINGS
                else DisconnectReason.PROTOCOL_ERROR
            )
        # The peer's bytes are the cause; our frames say nothing about them.
        # Dropped, the traceback cannot tie the error, the frames that raised
        # it and the events list holding it into a cycle that only the cyclic
        # collector could free (the connection with it).
        error.__traceback__ = None
        self._input_done = True  # what follows a violation is discarded
        if self.state is SessionState.CLOSING or self.state is SessionState.CLOSED:
            # Our CLOSE is out already: the rest is discarded.
            if self._decoder.eof:
                self.state = SessionState.CLOSED
            return
        wire = self.close(code, str(error), reason)
        info = self.close_info
        assert info is not None
        events.append(ProtocolFailure(error, info, wire))

    def _unexpected(self, frame: Frame, state: SessionState) -> None:
        if state is SessionState.HANDSHAKE:
            raise RemoteProtocolError(
                f"expected HELLO, got {frame.frame_type.name} before the handshake"
            )
        if isinstance(frame, Hello):
            raise RemoteProtocolError("unexpected HELLO after the handshake")
        # CLOSING or PEER_CLOSED: frames after a CLOSE are discarded.

    # ------------------------------------------------------------ transitions

    def _on_server_hello(self, frame: Hello, now: float, events: list[Any]) -> None:
        self.peer_hello = dict(frame.fields)
        events.append(HelloReceived(frame.fields))

    def _on_client_hello(self, frame: Hello, now: float, events: list[Any]) -> None:
        self.peer_hello = dict(frame.fields)
        negotiated = Negotiated.from_hello(frame.fields)  # HandshakeError: CLOSE 7
        self.negotiated = negotiated
        self.peer_max_frame_size = negotiated.max_frame_size
        self.state = SessionState.OPEN
        events.append(Established(negotiated))

    def _on_refusal(self, frame: Close, now: float, events: list[Any]) -> None:
        """Client: the server closed instead of answering HELLO (full, refused)."""
        self.record(CloseInfo(frame.code, frame.reason, True, _refusal(frame.code)))
        self.state = SessionState.PEER_CLOSED
        events.append(frame)

    def _on_data(self, frame: Data, now: float, events: list[Any]) -> None:
        self.data_received += 1
        events.append(frame)

    def _on_ignored(self, frame: Frame, now: float, events: list[Any]) -> None:
        """A PING while closing: no frame may follow our CLOSE, so no PONG."""

    def _on_pong(self, frame: Pong, now: float, events: list[Any]) -> None:
        self.pongs_received += 1
        sent_at = self._ping_sent_at
        if sent_at is not None:
            if not self._ping_resent:  # Karn: a resent PING gives no sample
                sample = max(0.0, now - sent_at)
                self.rtt.update(sample)
                if self.detector is not None and self.role is Role.CLIENT:
                    self.detector.gap(sample)
            self._ping_sent_at = None
        events.append(frame)

    def _on_close(self, frame: Close, now: float, events: list[Any]) -> None:
        self.record(
            CloseInfo(frame.code, frame.reason, True, DisconnectReason.CLOSED_BY_PEER)
        )
        self.state = SessionState.PEER_CLOSED
        events.append(frame)

    def _on_close_reply(self, frame: Close, now: float, events: list[Any]) -> None:
        """The peer's CLOSE answering ours: the close handshake is complete."""
        self.state = SessionState.CLOSED
        events.append(frame)

    def _expect(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise LocalProtocolError(f"{what}() is for the {role.value} side")
        if self.state is not SessionState.HANDSHAKE:
            raise LocalProtocolError(
                f"{what}() belongs to the handshake, and the session is "
                f"{self.state.value}"
            )

    # For tests and the docs: the state machine as a table.
    transitions: ClassVar[Mapping[tuple[Role, SessionState, type], str]]


def _refusal(code: int) -> DisconnectReason:
    if code == CloseCode.SERVER_FULL:
        return DisconnectReason.SERVER_FULL
    if code == CloseCode.SHUTTING_DOWN:
        return DisconnectReason.SHUTDOWN
    return DisconnectReason.HANDSHAKE_FAILED


def _table() -> dict[tuple[Role, SessionState, type], _Handler]:
    S = SessionState
    table: dict[tuple[Role, SessionState, type], _Handler] = {
        (Role.SERVER, S.HANDSHAKE, Hello): Session._on_server_hello,
        (Role.CLIENT, S.HANDSHAKE, Hello): Session._on_client_hello,
        (Role.CLIENT, S.HANDSHAKE, Close): Session._on_refusal,
    }
    for role in Role:
        table[(role, S.OPEN, Data)] = Session._on_data
        table[(role, S.OPEN, Pong)] = Session._on_pong
        table[(role, S.OPEN, Close)] = Session._on_close
        # Our CLOSE is out: replies in flight still arrive, PINGs get no PONG.
        table[(role, S.CLOSING, Data)] = Session._on_data
        table[(role, S.CLOSING, Ping)] = Session._on_ignored
        table[(role, S.CLOSING, Pong)] = Session._on_pong
        table[(role, S.CLOSING, Close)] = Session._on_close_reply
        table[(role, S.CLOSING, Hello)] = Session._on_ignored
    return table


#: (role, state, frame type) -> what happens. A combination missing here is a
#: protocol error (before the handshake, or a second HELLO) or, after a CLOSE,
#: a frame that is discarded.
_TRANSITIONS: Final = _table()
Session.transitions = {key: handler.__name__ for key, handler in _TRANSITIONS.items()}
