"""The protocol's rules, on the sans-IO Session alone: no Trio, no sockets, no clock.

Every rule of docs/protocol.rst that concerns one connection is checked here
with plain calls, as h11's tests do: bytes in (with the time they arrived),
events and bytes out.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_heartbeat import (
    Close,
    CloseCode,
    CloseInfo,
    ConnectionClosed,
    Data,
    DisconnectReason,
    EndOfStream,
    Established,
    FrameDecoder,
    Hello,
    HelloReceived,
    LocalProtocolError,
    Negotiated,
    Ping,
    Pong,
    ProtocolFailure,
    Role,
    ServerConfig,
    Session,
    SessionState,
    encode,
    negotiate,
)

NEGOTIATED = Negotiated(interval=25.0, timeout=60.0, min_interval=1.0,
                        max_frame_size=1 << 20)  # fmt: skip
CLIENT_HELLO = encode(Hello({"version": 1, "interval": 25}))
SERVER_HELLO = encode(Hello(NEGOTIATED.to_hello()))


def wire(*frames: Any) -> bytes:
    return b"".join(encode(frame) for frame in frames)


def server(**kwargs: Any) -> Session:
    """A server session past its handshake."""
    session = Session(Role.SERVER, **kwargs)
    (event,) = session.receive_data(CLIENT_HELLO, 0.0)
    assert isinstance(event, HelloReceived)
    session.accept(NEGOTIATED)
    return session


def client() -> Session:
    """A client session past its handshake."""
    session = Session(Role.CLIENT)
    session.hello({"version": 1, "interval": 25})
    (event,) = session.receive_data(SERVER_HELLO, 0.0)
    assert event == Established(NEGOTIATED)
    return session


def failure(events: list[Any]) -> ProtocolFailure:
    assert events and isinstance(events[-1], ProtocolFailure), events
    return events[-1]


# ------------------------------------------------------------ handshake


def test_server_handshake_negotiates_and_opens() -> None:
    session = Session(Role.SERVER)
    assert session.state is SessionState.HANDSHAKE and not session.can_send
    (event,) = session.receive_data(CLIENT_HELLO, 1.0)
    assert event == HelloReceived({"version": 1, "interval": 25})
    assert session.peer_hello == {"version": 1, "interval": 25}
    negotiated = negotiate(event.fields, ServerConfig(timeout=20))
    answer = session.accept(negotiated)
    assert answer == encode(Hello(negotiated.to_hello()))
    assert session.state is SessionState.OPEN and session.can_send
    assert session.negotiated == negotiated


def test_server_holds_frames_sent_right_behind_hello_until_accepted() -> None:
    session = Session(Role.SERVER)
    events = session.receive_data(CLIENT_HELLO + wire(Data(b"early"), Ping()), 1.0)
    assert events == [HelloReceived({"version": 1, "interval": 25})]
    session.accept(NEGOTIATED)
    assert session.next_events(1.0) == [Data(b"early"), encode(Pong())]


@pytest.mark.parametrize(
    ("first", "name"),
    [(Data(b"x"), "DATA"), (Ping(), "PING"), (Pong(), "PONG"), (Close(0, ""), "CLOSE")],
)
def test_anything_but_hello_first_is_close_2(first: Any, name: str) -> None:
    session = Session(Role.SERVER)
    events = session.receive_data(encode(first), 1.0)
    reason = f"expected HELLO, got {name} before the handshake"
    assert failure(events).wire == encode(Close(2, reason))
    assert session.close_info == CloseInfo(
        2, reason, False, DisconnectReason.PROTOCOL_ERROR
    )
    assert session.state is SessionState.CLOSING


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_hello_json_is_strict(constant: bytes) -> None:
    payload = b'{"version":1,"interval":' + constant + b"}"
    session = Session(Role.SERVER)
    events = session.receive_data(bytes([1, len(payload)]) + payload, 1.0)
    close = failure(events).wire
    assert close.startswith(b"\x05") and close[2] == CloseCode.PROTOCOL_ERROR
    assert f"{constant.decode()} is not JSON".encode() in close


def test_reject_sends_close_7_or_6() -> None:
    session = Session(Role.SERVER)
    session.receive_data(CLIENT_HELLO, 1.0)
    assert session.reject(7, "authentication failed") == encode(
        Close(7, "authentication failed")
    )
    assert session.close_info == CloseInfo(
        7, "authentication failed", False, DisconnectReason.HANDSHAKE_FAILED
    )
    full = Session(Role.SERVER)
    full.reject(6, "server full (2 connections)")
    assert full.close_info is not None
    assert full.close_info.disconnect_reason is DisconnectReason.SERVER_FULL


def test_client_handshake_adopts_the_server_values() -> None:
    session = Session(Role.CLIENT)
    assert session.hello({"version": 1, "interval": 30}) == encode(
        Hello({"version": 1, "interval": 30})
    )
    small = Negotiated(interval=10.0, timeout=20.0, min_interval=2.0,
                       max_frame_size=100)  # fmt: skip
    (event,) = session.receive_data(encode(Hello(small.to_hello())), 1.0)
    assert event == Established(small)
    assert session.peer_max_frame_size == 100
    with pytest.raises(ValueError, match="DATA of 101 bytes exceeds the peer's"):
        session.data(b"x" * 101)


def test_client_refuses_a_bad_server_hello_with_close_7() -> None:
    session = Session(Role.CLIENT)
    session.hello({"version": 1})
    bad = Hello({**NEGOTIATED.to_hello(), "interval": "soon"})
    events = session.receive_data(encode(bad), 1.0)
    reason = "server HELLO has invalid 'interval': 'soon'"
    assert failure(events).wire == encode(Close(7, reason))
    assert session.close_info == CloseInfo(
        7, reason, False, DisconnectReason.HANDSHAKE_FAILED
    )


def test_client_sees_a_refusal_instead_of_hello() -> None:
    session = Session(Role.CLIENT)
    session.hello({"version": 1})
    events = session.receive_data(wire(Close(6, "server full")), 1.0)
    assert events == [Close(6, "server full")]
    assert session.state is SessionState.PEER_CLOSED
    error = session.error()
    assert (error.code, error.reason, error.by_peer) == (6, "server full", True)
    assert error.disconnect_reason is DisconnectReason.SERVER_FULL
    # The refusal is answered like any CLOSE.
    assert session.close() == encode(Close(0, ""))
    assert session.state is SessionState.CLOSED


def test_end_of_stream_during_the_handshake() -> None:
    session = Session(Role.SERVER)
    assert session.receive_data(b"", 1.0) == [EndOfStream()]
    assert session.close_info == CloseInfo(
        None, "stream ended during the handshake", True,
        DisconnectReason.HANDSHAKE_FAILED,
    )  # fmt: skip
    assert session.state is SessionState.CLOSED
    assert session.close() == b""


def test_handshake_methods_refuse_misuse() -> None:
    with pytest.raises(LocalProtocolError, match=r"accept\(\) is for the server"):
        Session(Role.CLIENT).accept(NEGOTIATED)
    with pytest.raises(LocalProtocolError, match=r"hello\(\) is for the client"):
        Session(Role.SERVER).hello({"version": 1})
    with pytest.raises(LocalProtocolError, match="the session is open"):
        server().accept(NEGOTIATED)


# ------------------------------------------------------------ open


def test_ping_is_answered_and_pong_echoes_the_payload() -> None:
    session = server()
    assert session.receive_data(wire(Ping()), 5.0) == [encode(Pong())]
    assert session.receive_data(wire(Ping(b"seq=7")), 6.0) == [encode(Pong(b"seq=7"))]
    assert (session.pings_received, session.pongs_sent) == (2, 2)


def test_pong_payload_hook_replaces_the_echo() -> None:
    session = server(pong_payload=lambda ping: b"unread=3;" + ping)
    assert session.receive_data(wire(Ping(b"p")), 5.0) == [encode(Pong(b"unread=3;p"))]


def test_a_burst_of_pings_is_answered_in_one_write() -> None:
    session = server()
    events = session.receive_data(wire(Ping(), Ping(), Ping(b"x"), Ping()), 5.0)
    assert events == [wire(Pong(), Pong(), Pong(b"x"), Pong())]


def test_replies_keep_the_order_of_the_frames_they_answer() -> None:
    session = server()
    events = session.receive_data(
        wire(Ping(), Data(b"a"), Ping(), Ping(), Data(b"b")), 5.0
    )
    assert events == [encode(Pong()), Data(b"a"), wire(Pong(), Pong()), Data(b"b")]


def test_any_byte_received_counts_as_traffic() -> None:
    session = server()
    session.receive_data(b"\x02\x64", 10.0)  # a 100-byte DATA begins
    assert session.last_received == 10.0
    assert session.receive_data(b"x" * 50, 20.0) == []
    assert session.last_received == 20.0
    assert session.receive_data(b"y" * 50, 30.0) == [Data(b"x" * 50 + b"y" * 50)]
    assert session.bytes_received == len(CLIENT_HELLO) + 102


def test_rtt_from_pong_and_karn_rule() -> None:
    session = client()
    session.ping(now=10.0)
    session.receive_data(wire(Pong()), 10.25)
    assert (session.rtt.samples, session.rtt.srtt) == (1, 0.25)
    session.ping(now=20.0)
    session.ping(now=23.0, resend=True)  # the answer matches neither for sure
    assert session.receive_data(wire(Pong()), 23.1) == [Pong()]
    assert session.rtt.samples == 1
    assert session.pongs_received == 2


@pytest.mark.parametrize(
    ("bad", "code", "text"),
    [
        (b"\x09\x00", 2, "unknown frame type 0x09"),
        (b"\x02\x80\x80\x80\x80\x01", 2, "frame length varint longer than 4 bytes"),
        (b"\x02\x81\x80\x40", 3, "frame of 1048577 bytes exceeds max_frame_size"),
        (b"\x05\x00", 2, "CLOSE frame without a reason code"),
        (CLIENT_HELLO, 2, "unexpected HELLO after the handshake"),
    ],
)
def test_protocol_errors_close_with_their_code(
    bad: bytes, code: int, text: str
) -> None:
    session = server()
    events = session.receive_data(wire(Data(b"before")) + bad, 5.0)
    assert events[0] == Data(b"before")  # what came first is still delivered
    info = failure(events).info
    assert info.code == code
    assert info.disconnect_reason is DisconnectReason.PROTOCOL_ERROR
    assert info.reason.startswith(text)
    assert failure(events).wire == encode(Close(code, info.reason))
    # Whatever follows is discarded; the CLOSE is not sent twice.
    assert session.receive_data(wire(Data(b"after"), Ping()), 6.0) == []
    assert session.close() == b""


def test_end_of_stream_inside_a_frame_is_a_protocol_error() -> None:
    session = server()
    events = session.receive_data(b"\x02\x05ab", 5.0) + session.receive_data(b"", 6.0)
    assert failure(events).info.reason.startswith("stream ended inside a frame")


def test_end_of_stream_without_close() -> None:
    session = server()
    assert session.receive_data(b"", 5.0) == [EndOfStream()]
    assert session.close_info == CloseInfo(
        None, "stream ended without CLOSE", True, DisconnectReason.CLOSED_BY_PEER
    )
    assert session.state is SessionState.CLOSED
    with pytest.raises(ConnectionClosed):
        session.data(b"late")


# ------------------------------------------------------------ ping strikes


def striking(**kwargs: Any) -> Session:
    return server(min_ping_interval=2.0, **kwargs)


def test_a_flood_is_struck_out_with_close_4() -> None:
    """PINGs read 0.5 s apart (min 2 s). The first after a quiet spell may have
    been sent any time since the previous read, so the second is not early
    either; then the third and fourth are strikes 1 and 2, the fifth is 3."""
    session = striking()
    now = 10.0
    for _ in range(4):
        assert session.receive_data(wire(Ping()), now) == [encode(Pong())]
        now += 0.5
    assert session.ping_strikes == 2
    events = session.receive_data(wire(Ping()), now)  # strike 3
    reason = "more than 2 PINGs in a row sent closer together than min_interval 2 s"
    assert failure(events).wire == encode(Close(4, reason))
    assert session.close_info == CloseInfo(
        4, reason, False, DisconnectReason.TOO_MANY_PINGS
    )


def test_pings_exactly_min_interval_apart_are_never_struck() -> None:
    session = striking()
    for n in range(100):
        assert session.receive_data(wire(Ping()), 10.0 + 2.0 * n) == [encode(Pong())]
    assert session.ping_strikes == 0


def test_an_on_time_ping_resets_the_strikes() -> None:
    session = striking()
    now = 10.0
    for _ in range(10):
        for gap in (1, 1, 2):  # two early ones, then one on time
            now += gap
            assert session.receive_data(wire(Ping()), now) == [encode(Pong())]
        assert session.ping_strikes == 0


def test_a_backlog_read_at_once_after_a_stall_is_no_flood() -> None:
    """PINGs sent 0.3 s apart (min 0.1) pile up while the reader stalls 1.5 s,
    then arrive in one read: spread over the stall, they were spaced fine."""
    session = server(min_ping_interval=0.1)
    session.receive_data(wire(Ping()), 10.0)
    backlog = wire(*[Ping()] * 5)
    assert session.receive_data(backlog, 11.5) == [wire(*[Pong()] * 5)]
    assert session.ping_strikes == 0
    # The same five in a read that follows the previous one closely are a flood.
    events = session.receive_data(backlog, 11.52)
    assert failure(events).info.code == CloseCode.TOO_MANY_PINGS


def test_max_ping_strikes_0_tolerates_any_number() -> None:
    session = striking(max_ping_strikes=0)
    assert session.receive_data(wire(*[Ping()] * 1000), 10.0) == [
        wire(*[Pong()] * 1000)
    ]


# ------------------------------------------------------------ closing


def test_our_close_then_nothing_more_is_sent_but_replies_still_arrive() -> None:
    session = server()
    assert session.close(0, "bye") == encode(Close(0, "bye"))
    assert session.state is SessionState.CLOSING and not session.can_send
    with pytest.raises(ConnectionClosed):
        session.data(b"late")
    with pytest.raises(ConnectionClosed):
        session.ping(now=5.0)
    # DATA in flight is delivered, a PING gets no PONG, the peer's CLOSE ends it.
    events = session.receive_data(wire(Data(b"reply"), Ping(), Close(0, "")), 5.0)
    assert events == [Data(b"reply"), Close(0, "")]
    assert session.state is SessionState.CLOSED
    assert session.close() == b""


def test_peer_close_then_our_last_replies_then_our_close() -> None:
    session = server()
    events = session.receive_data(wire(Data(b"q"), Close(0, "done"), Data(b"x")), 5.0)
    assert events == [Data(b"q"), Close(0, "done")]  # nothing after its CLOSE
    assert session.state is SessionState.PEER_CLOSED and session.can_send
    assert session.data(b"answer") == encode(Data(b"answer"))
    assert session.receive_data(wire(Ping()), 6.0) == []
    assert session.close() == encode(Close(0, ""))
    assert session.state is SessionState.CLOSED
    assert session.error().disconnect_reason is DisconnectReason.CLOSED_BY_PEER


def test_the_first_reason_wins_and_our_close_carries_it() -> None:
    session = server()
    session.record(
        CloseInfo(1, "nothing received for 60 s", False,
                  DisconnectReason.HEARTBEAT_TIMEOUT)
    )  # fmt: skip
    assert session.close(0, "", DisconnectReason.SHUTDOWN) == encode(
        Close(1, "nothing received for 60 s")
    )
    assert session.error().disconnect_reason is DisconnectReason.HEARTBEAT_TIMEOUT


def test_an_interrupted_send_allows_no_close() -> None:
    session = server()
    session.interrupt(
        CloseInfo(None, "a send was blocked", False, DisconnectReason.SLOW_CONSUMER)
    )
    assert session.close() == b""
    assert session.state is SessionState.CLOSED
    assert session.error().disconnect_reason is DisconnectReason.SLOW_CONSUMER


def test_close_reasons_are_cut_to_a_small_frame() -> None:
    session = server()
    # type, a two-byte length, the code, then 200 characters
    assert len(session.close(0, "x" * 10_000)) == 1 + 2 + 1 + 200


def test_lost_transport() -> None:
    session = server()
    session.lost("[Errno 104] Connection reset by peer")
    assert session.state is SessionState.CLOSED
    assert session.error().disconnect_reason is DisconnectReason.CONNECTION_LOST
    assert session.error().by_peer


def test_the_transition_table_is_complete_for_open_and_closing() -> None:
    for role in Role:
        for frame in (Data, Pong, Close):
            assert (role, SessionState.OPEN, frame) in Session.transitions
        for frame in (Data, Ping, Pong, Close, Hello):
            assert (role, SessionState.CLOSING, frame) in Session.transitions


# ------------------------------------------------------------ generated


FRAMES = st.one_of(
    st.builds(Data, st.binary(max_size=20)),
    st.builds(Ping, st.binary(max_size=5)),
    st.builds(Pong, st.binary(max_size=5)),
    st.builds(Close, st.integers(0, 8), st.text(max_size=10)),
    st.just(Hello({"version": 1})),
)
INPUT = st.lists(
    st.one_of(FRAMES.map(encode), st.binary(min_size=1, max_size=8)), max_size=12
)


def _drive(role: Role, chunks: list[bytes], split: bool) -> tuple[list[Any], bytes]:
    """Feed ``chunks`` (whole, or one byte at a time); non-bytes events and the
    bytes to send, joined."""
    session = Session(role, open=True)
    events: list[Any] = []
    out = b""
    data = b"".join(chunks)
    if split:
        pieces = [data[i : i + 1] for i in range(len(data))]
    else:
        pieces = [data] if data else []
    for piece in [*pieces, b""]:
        for event in session.receive_data(piece, 1.0):
            if isinstance(event, bytes):
                out += event
            elif isinstance(event, ProtocolFailure):
                out += event.wire
                events.append(event.info)
            else:
                events.append(event)
    return events, out


@given(role=st.sampled_from(Role), chunks=INPUT)
def test_whole_or_byte_by_byte_the_session_says_the_same(
    role: Role, chunks: list[bytes]
) -> None:
    assert _drive(role, chunks, split=False) == _drive(role, chunks, split=True)


_ORDER = {
    SessionState.HANDSHAKE: 0,
    SessionState.OPEN: 1,
    SessionState.PEER_CLOSED: 2,
    SessionState.CLOSING: 2,
    SessionState.CLOSED: 3,
}

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), INPUT.map(b"".join)),
        st.tuples(st.just("eof"), st.none()),
        st.tuples(st.just("data"), st.binary(max_size=5)),
        st.tuples(st.just("ping"), st.binary(max_size=5)),
        st.tuples(st.just("close"), st.integers(0, 8)),
        st.tuples(st.just("accept"), st.none()),
        st.tuples(st.just("lost"), st.none()),
    ),
    max_size=20,
)


@given(role=st.sampled_from(Role), operations=OPERATIONS)
def test_generated_sequences_keep_the_rules(
    role: Role, operations: list[tuple[str, Any]]
) -> None:
    """Whatever happens, in any order: the state only moves forward, the first
    reason is kept, nothing is ever sent after our CLOSE, and receive_data
    never raises."""
    session = Session(role, min_ping_interval=1.0)
    if role is Role.CLIENT:
        session.hello({"version": 1})
    now = 0.0
    our_close_sent = False
    first_reason = None
    for name, value in operations:
        now += 0.25
        before = session.state
        sent = b""
        try:
            if name == "receive":
                for event in session.receive_data(value, now):
                    if isinstance(event, bytes):
                        sent += event
                    elif isinstance(event, ProtocolFailure):
                        sent += event.wire
            elif name == "eof":
                session.receive_data(b"", now)
            elif name == "data":
                sent += session.data(value)
            elif name == "ping":
                sent += session.ping(value, now=now)
            elif name == "close":
                sent += session.close(value)
            elif name == "accept" and role is Role.SERVER and session.peer_hello:
                if session.state is SessionState.HANDSHAKE:
                    sent += session.accept(NEGOTIATED)
            elif name == "lost":
                session.lost("gone")
        except ConnectionClosed:
            assert not session.can_send
        if our_close_sent:
            assert sent == b"", (name, sent)
        if Close in _frames_of(sent):
            our_close_sent = True
        assert _ORDER[session.state] >= _ORDER[before], (before, session.state)
        if first_reason is None:
            first_reason = session.close_info
        else:
            assert session.close_info == first_reason
        if session.state is SessionState.CLOSED:
            assert not session.can_send
    assert math.isfinite(now)


def _frames_of(data: bytes) -> set[type]:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    kinds: set[type] = set()
    while (frame := decoder.next_frame()) is not None:
        kinds.add(type(frame))
    return kinds


def test_client_stops_at_the_servers_hello() -> None:
    # Frames behind the HELLO wait for next_events (the reader), not the
    # handshake that returns at Established.
    session = Session(Role.CLIENT)
    session.hello({"version": 1})
    events = session.receive_data(SERVER_HELLO + wire(Data(b"hi"), Ping()), 1.0)
    assert events == [Established(NEGOTIATED)]
    assert session.state is SessionState.OPEN
    assert session.next_events(1.0) == [Data(b"hi"), encode(Pong())]
