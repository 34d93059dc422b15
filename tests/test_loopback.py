"""The whole stack on real loopback sockets (port 0, bounded by fail_after)."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import struct
from collections import Counter
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from trio_heartbeat import (
    ClientConfig,
    Close,
    CloseCode,
    Data,
    DisconnectReason,
    FrameDecoder,
    HeartbeatConnection,
    PerMessage,
    Pong,
    ServerConfig,
    SessionState,
    encode,
    open_connection,
    per_message,
)
from trio_heartbeat._transport import SocketTransport

from .helpers import echo_upper, tcp_peer, tcp_server


async def test_thousand_concurrent_clients() -> None:
    clients = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * clients + 100
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    reasons: Counter[DisconnectReason] = Counter()
    all_connected = trio.Event()
    all_disconnected = trio.Event()
    connected = 0

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        reasons.update([reason])
        if sum(reasons.values()) == clients:
            all_disconnected.set()

    def on_connect(conn: HeartbeatConnection) -> None:
        nonlocal connected
        connected += 1
        if connected == clients:
            all_connected.set()

    with trio.fail_after(120):
        async with tcp_server(
            echo_upper, on_connect=on_connect, on_disconnect=on_disconnect
        ) as port:

            async def client(i: int) -> None:
                peer = await tcp_peer(port)
                async with peer.stream:
                    answer = await peer.hello(interval=20)
                    assert answer.fields["interval"] == 20
                    # Hold every connection open at once before the exchange.
                    await all_connected.wait()
                    await peer.send_bytes(encode(Data(b"client %d" % i)) + b"\x03\x00")
                    # The reader answers PING at once; the DATA reply comes from
                    # the handler, so the two may arrive in either order.
                    replies = [await peer.receive() for _ in range(2)]
                    assert sorted(map(repr, replies)) == sorted(
                        [repr(Data(b"CLIENT %d" % i)), repr(Pong())]
                    )
                    await peer.send(Close(0, ""))
                    assert await peer.receive() == Close(0, "")
                    await peer.expect_eof()

            async with trio.open_nursery() as clients_nursery:
                for i in range(clients):
                    clients_nursery.start_soon(client, i)
            await all_disconnected.wait()
    assert reasons == {DisconnectReason.CLOSED_BY_PEER: clients}


async def test_library_client_over_tcp() -> None:
    with trio.fail_after(30):
        async with tcp_server(echo_upper) as port:
            config = ClientConfig(interval=1, retry_interval=1)
            async with open_connection("127.0.0.1", port, config=config) as conn:
                assert conn.peer == f"127.0.0.1:{port}"
                await conn.send(b"over tcp")
                assert await conn.receive() == b"OVER TCP"
                answer = await conn.ping(b"seq=1")
                assert answer.payload == b"seq=1"  # the server echoes it
                assert conn.stats.pongs_received == 1
                assert conn.rtt.srtt == answer.rtt


async def _kick_on_tcp(
    on_data: PerMessage, send_first: bytes
) -> tuple[HeartbeatConnection, DisconnectReason]:
    """One raw client on real TCP: HELLO, ``send_first``, then silence until
    kicked; returns the server's connection and its disconnect reason."""
    connected: list[HeartbeatConnection] = []
    ended: list[DisconnectReason] = []
    done = trio.Event()

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        ended.append(reason)
        done.set()

    config = ServerConfig(timeout=0.4, min_interval=0.2)
    with trio.fail_after(10):
        async with tcp_server(
            on_data,
            config=config,
            on_connect=connected.append,
            on_disconnect=on_disconnect,
        ) as port:
            peer = await tcp_peer(port)
            async with peer.stream:
                await peer.hello(interval=0.2)
                await peer.send_bytes(send_first)
                frames = []
                while (frame := await peer.receive_or_eof()) is not None:
                    frames.append(frame)
                assert frames[-1] == Close(1, "nothing received for 0.4 s")
            await done.wait()
    (conn,) = connected
    (reason,) = ended
    return conn, reason


@contextlib.contextmanager
def _cancels() -> Iterator[list[HeartbeatConnection]]:
    """Records the connections whose work the server cancels (kicks that
    cannot end a connection through its socket alone)."""
    calls: list[HeartbeatConnection] = []
    original = HeartbeatConnection.cancel

    def spy(conn: HeartbeatConnection) -> None:
        calls.append(conn)
        original(conn)

    HeartbeatConnection.cancel = spy  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        HeartbeatConnection.cancel = original  # type: ignore[method-assign]


async def test_kick_wakes_a_waiting_per_message_reader_through_its_socket() -> None:
    async def upper(conn: HeartbeatConnection, data: bytes) -> None:
        await conn.send(data.upper())

    with _cancels() as cancelled:
        conn, reason = await _kick_on_tcp(per_message(upper), encode(Data(b"hi")))
    assert reason is DisconnectReason.HEARTBEAT_TIMEOUT
    # The reader was blocked on the socket: the kick wrote CLOSE and FIN; the
    # client's answer (its end of stream) woke the reader, which waited its
    # turn (none due: at once) and ended by itself, so the kick had nothing to
    # cancel.
    assert cancelled == []
    assert conn.answer_held
    assert conn.stats.frames_sent == 3  # HELLO, DATA "HI", CLOSE


class _Turn:
    """A turn for ``hold_answer`` that says when it is awaited and lets the
    reader through on ``go``."""

    def __init__(self) -> None:
        self.taken = trio.Event()
        self.go = trio.Event()

    async def wait(self) -> None:
        self.taken.set()
        await self.go.wait()


async def test_a_held_answer_is_handled_only_after_its_turn() -> None:
    """``end_now`` then ``hold_answer``: the peer's answer wakes the reader,
    which awaits the turn before it reads the answer (it stays in the
    kernel) and handles it; then it ends."""

    async def ignore(conn: HeartbeatConnection, data: bytes) -> None:
        raise AssertionError(f"no DATA expected, got {data!r}")

    turn = _Turn()
    with trio.fail_after(10):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with listeners[0], await trio.open_tcp_stream("127.0.0.1", port) as peer:
            conn = HeartbeatConnection(await listeners[0].accept())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run_reader, ignore)
                await trio.testing.wait_all_tasks_blocked()
                assert conn.end_now(
                    CloseCode.HEARTBEAT_TIMEOUT,
                    "silent",
                    DisconnectReason.HEARTBEAT_TIMEOUT,
                )  # the reader, blocked on the socket, ends by itself
                conn.hold_answer(turn.wait)
                decoder = FrameDecoder()
                while (data := await peer.receive_some(100)) != b"":
                    decoder.receive_data(data)
                assert decoder.next_frame() == Close(1, "silent")  # then FIN
                answer = encode(Close(1, "silent"))  # the peer's CLOSE back
                await peer.send_all(answer)
                await peer.aclose()
                await turn.taken.wait()
                await trio.testing.wait_all_tasks_blocked()
                # Woken, but neither read nor handled: waiting for its turn.
                assert conn.unread_input() == len(answer)
                assert conn.session.state is SessionState.CLOSING
                assert not conn.answer_held
                turn.go.set()
            await conn.close_stream()
    assert conn.answer_held
    assert conn.session.state is SessionState.CLOSED
    info = conn.session.close_info
    assert info is not None
    assert info.disconnect_reason is DisconnectReason.HEARTBEAT_TIMEOUT


async def test_a_held_read_on_a_stream_waits_its_turn_after_the_read() -> None:
    """On a stream the socket transport cannot wait on itself, the reader
    reads what woke it, then awaits the turn before it handles it."""
    handled: list[bytes] = []

    async def keep(conn: HeartbeatConnection, data: bytes) -> None:
        handled.append(data)

    turn = _Turn()
    with trio.fail_after(10):
        ours, peer = trio.testing.memory_stream_pair()
        conn = HeartbeatConnection(ours)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run_reader, keep)
            await trio.testing.wait_all_tasks_blocked()
            conn.hold_answer(turn.wait)
            await peer.send_all(encode(Data(b"late")))
            await turn.taken.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert handled == []
            assert not conn.answer_held
            turn.go.set()
            await peer.aclose()
    assert handled == [b"late"]
    assert conn.answer_held


async def test_kick_cancels_a_per_message_handler_that_is_still_busy() -> None:
    handler_cancelled = trio.Event()

    async def stuck(conn: HeartbeatConnection, data: bytes) -> None:
        try:
            await trio.sleep_forever()
        finally:
            handler_cancelled.set()

    with _cancels() as cancelled:
        conn, reason = await _kick_on_tcp(per_message(stuck), encode(Data(b"hi")))
    assert reason is DisconnectReason.HEARTBEAT_TIMEOUT
    assert cancelled == [conn]
    assert handler_cancelled.is_set()


async def test_reset_by_the_peer_is_connection_lost_with_the_os_error() -> None:
    ended: list[HeartbeatConnection] = []
    done = trio.Event()

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        ended.append(conn)
        done.set()

    with trio.fail_after(10):
        async with tcp_server(echo_upper, on_disconnect=on_disconnect) as port:
            peer = await tcp_peer(port)
            await peer.hello(interval=20)
            await peer.send(Data(b"x"))
            assert await peer.receive() == Data(b"X")
            # Linger 0: close sends RST, the server's next read fails.
            peer.stream.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            await peer.stream.aclose()
            await done.wait()
    (conn,) = ended
    assert conn.disconnect_reason is DisconnectReason.CONNECTION_LOST
    assert conn.close_error is not None
    reset = errno.ECONNRESET
    assert conn.close_error.reason == f"[Errno {reset}] {os.strerror(reset)}"


TCP_ESTABLISHED = 1  # Linux's tcp_states.h
TCP_INFO_SEGS_OUT = 136  # struct tcp_info's tcpi_segs_out (Linux 4.2+)


async def _stream_pair(family: str) -> tuple[trio.SocketStream, trio.SocketStream]:
    if family == "unix":
        a, b = trio.socket.socketpair()
        return trio.SocketStream(a), trio.SocketStream(b)
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    assert isinstance(server, trio.SocketStream)
    return server, client


async def _read_to_end(stream: trio.SocketStream) -> bytes:
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    return received


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_a_last_frame_is_written_with_the_end_of_stream(family: str) -> None:
    """The kick's CLOSE: the frame, then FIN (corked into one TCP segment on
    Linux; a Unix socket has no TCP_CORK and gets the same result)."""
    with trio.fail_after(10):
        ours, peer = await _stream_pair(family)
        async with ours, peer:
            assert SocketTransport().write_last(ours, encode(Close(1, "bye")))
            assert await _read_to_end(peer) == encode(Close(1, "bye"))


def _segments_out(stream: trio.SocketStream) -> int:
    """TCP segments this socket has sent (Linux's tcp_info.tcpi_segs_out)."""
    info = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, TCP_INFO_SEGS_OUT)[0])


@pytest.mark.skipif(not hasattr(socket, "MSG_MORE"), reason="Linux's MSG_MORE")
@pytest.mark.parametrize("cork", [False, True], ids=["msg_more", "tcp_cork"])
async def test_a_last_frame_and_the_end_of_stream_leave_in_one_segment(
    cork: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kick costs the kernel one delivery: the frame and the FIN in one TCP
    segment, held back by MSG_MORE (or, where that cannot be used, TCP_CORK)."""
    if cork:
        monkeypatch.setattr("trio_heartbeat._transport._MSG_MORE", None)
    with trio.fail_after(10):
        ours, peer = await _stream_pair("tcp")
        async with ours, peer:
            before = _segments_out(ours)
            assert SocketTransport().write_last(ours, encode(Close(1, "bye")))
            assert _segments_out(ours) == before + 1
            assert await _read_to_end(peer) == encode(Close(1, "bye"))
            assert _segments_out(ours) == before + 1  # no second one for it


async def test_a_last_frame_that_does_not_fit_is_not_written() -> None:
    """A peer that stopped reading: the frame would go out in part, so the
    write reports failure and no end of stream follows it."""
    with trio.fail_after(10):
        ours, peer = await _stream_pair("tcp")
        async with ours, peer:
            filler = b"x" * 65536
            with contextlib.suppress(BlockingIOError):
                while True:
                    os.write(ours.socket.fileno(), filler)
            assert not SocketTransport().write_last(ours, encode(Close(1, "bye")))
            # Still open for sending (ESTABLISHED; a FIN would make it FIN_WAIT1).
            state = ours.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            assert state == TCP_ESTABLISHED
