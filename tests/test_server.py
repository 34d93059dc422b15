"""Server behaviour in virtual time, over in-memory streams, checked at the wire."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_heartbeat import (
    Close,
    CloseCode,
    ConnectionClosed,
    Data,
    DisconnectReason,
    HeartbeatConnection,
    Hello,
    Ping,
    Pong,
    ServerConfig,
    encode,
    per_message,
    serve_listeners,
)
from trio_heartbeat._kicker import (
    ASLEEP_AT_MOST,
    ASLEEP_UNTIL_QUIET,
    CLEANUPS_WHILE_BEHIND,
)

from .helpers import MemoryListener, RawPeer, echo_upper, tcp_peer

# The behaviour tests run over memory streams and over real TCP sockets (the
# descriptor fast path), in virtual time both. Over TCP the clock jumps only
# once no socket event has come for a cushion of real time: loopback delivers
# synchronously, so nothing is in flight by then. settle() waits with a smaller
# cushion, so it wakes before the clock may jump.
AUTOJUMP_CUSHION = {"memory": 0.0, "tcp": 0.05}
SETTLE_CUSHION = {"memory": 0.0, "tcp": 0.01}


@pytest.fixture(params=["memory", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock(transport: str) -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=AUTOJUMP_CUSHION[transport])


@attrs.define
class Running:
    transport: str
    listener: Any
    nursery: trio.Nursery
    handler_nursery: trio.Nursery
    events: list[tuple[str, str, DisconnectReason | None]]
    peers: list[RawPeer] = attrs.Factory(list)
    #: When each disconnect was reported, by peer.
    disconnected_at: dict[str, float] = attrs.Factory(dict)

    async def connect(self) -> RawPeer:
        if self.transport == "memory":
            peer = RawPeer(await self.listener.connect())
        else:
            peer = await tcp_peer(self.listener.socket.getsockname()[1])
        self.peers.append(peer)
        return peer

    async def client(self, **hello: Any) -> RawPeer:
        peer = await self.connect()
        await peer.hello(**hello)
        return peer

    async def settle(self) -> None:
        """Until every task is blocked (and, over TCP, no socket event is due)."""
        await trio.testing.wait_all_tasks_blocked(SETTLE_CUSHION[self.transport])


@asynccontextmanager
async def running_server(
    transport: str,
    handler: Callable[[HeartbeatConnection], Any] = echo_upper,
    **kwargs: Any,
) -> AsyncIterator[Running]:
    events: list[tuple[str, str, DisconnectReason | None]] = []
    disconnected_at: dict[str, float] = {}

    def disconnected(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        events.append(("disconnect", conn.peer, reason))
        disconnected_at[conn.peer] = trio.current_time()

    # The lag probe's wake-up every virtual second would cost each test a jump
    # per second (and over TCP a real cushion each); the kicker still notices
    # stalls itself. The probe has tests of its own.
    config = kwargs.get("config") or ServerConfig()
    kwargs["config"] = attrs.evolve(config, lag_probe_interval=None)
    async with trio.open_nursery() as nursery, trio.open_nursery() as handlers:
        listeners: list[Any]
        if transport == "memory":
            listeners = [MemoryListener()]
        else:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(
            partial(
                serve_listeners,
                handler,
                listeners,
                handler_nursery=handlers,
                on_connect=lambda c: events.append(("connect", c.peer, None)),
                on_disconnect=disconnected,
                on_refuse=lambda c, r: events.append(("refuse", c.peer, r)),
                **kwargs,
            )
        )
        running = Running(
            transport, listeners[0], nursery, handlers, events, [], disconnected_at
        )
        try:
            yield running
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                for peer in running.peers:
                    await trio.aclose_forcefully(peer.stream)


def server_tasks(server: Running) -> list[str]:
    """What still runs beside the connections: the server's one kicker task."""
    return [t.name.rsplit(".", 2)[-2] + "." + t.name.rsplit(".", 1)[-1]
            for t in server.handler_nursery.child_tasks]  # fmt: skip


HEARTBEAT_TIMEOUT = DisconnectReason.HEARTBEAT_TIMEOUT


# ------------------------------------------------------------ handshake


async def test_hello_is_answered_with_negotiated_values(
    clock: Any, transport: str
) -> None:
    async with running_server(transport) as server:
        peer = await server.connect()
        answer = await peer.hello(interval=25)
        assert answer == Hello(
            {
                "version": 1,
                "interval": 25.0,
                "timeout": 60.0,
                "min_interval": 1.0,
                "max_frame_size": 1 << 20,
            }
        )
        await peer.send(Data(b"hi"))
        assert await peer.receive() == Data(b"HI")


async def test_interval_is_clamped(clock: Any, transport: str) -> None:
    async with running_server(transport, config=ServerConfig(timeout=20)) as server:
        peer = await server.connect()
        assert (await peer.hello(interval=0.01)).fields["interval"] == 1.0
        peer = await server.connect()
        assert (await peer.hello(interval=100)).fields["interval"] == 10.0


async def test_no_hello_is_closed_at_handshake_timeout(
    clock: Any, transport: str
) -> None:
    async with running_server(transport) as server:
        start = trio.current_time()
        peer = await server.connect()
        assert await peer.receive() == Close(7, "no HELLO within 10 s")
        assert trio.current_time() - start == 10
        await peer.expect_eof()
        await server.settle()
        assert server.events == [
            ("refuse", peer.name, DisconnectReason.HANDSHAKE_FAILED)
        ]


async def test_slowloris_hello_is_cut_at_absolute_deadline(
    clock: Any, transport: str
) -> None:
    async with running_server(transport) as server:
        start = trio.current_time()
        peer = await server.connect()
        wire = b'\x01\x40{"version":1,"interval":25,"padding":"xxxxxxxxxxxxxxxxxxxxx"}'
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                for byte in wire:
                    await peer.send_bytes(bytes([byte]))
                    await trio.sleep(1)

            nursery.start_soon(trickle)
            assert await peer.receive() == Close(7, "no HELLO within 10 s")
            assert trio.current_time() - start == 10
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x02\x02hi", CloseCode.PROTOCOL_ERROR),  # DATA before HELLO
        (b"\x03\x00", CloseCode.PROTOCOL_ERROR),  # PING before HELLO
        (b'\x01\x0d{"version":2}', CloseCode.HANDSHAKE_FAILED),
        (b'\x01\x1f{"version":1,"interval":"fast"}', CloseCode.HANDSHAKE_FAILED),
        (b"\x01\x02[]", CloseCode.PROTOCOL_ERROR),
        (b"\x09\x00", CloseCode.PROTOCOL_ERROR),
        # JSON nested past the parser's recursion limit (found by the fuzzer).
        (b"\x01\xa0\x8d\x06" + b"[" * 100_000, CloseCode.PROTOCOL_ERROR),
    ],
)
async def test_bad_handshake(
    clock: Any, transport: str, wire: bytes, code: CloseCode
) -> None:
    async with running_server(transport) as server:
        peer = await server.connect()
        await peer.send_bytes(wire)
        frame = await peer.receive()
        assert isinstance(frame, Close)
        assert frame.code == code
        await peer.expect_eof()


async def test_client_close_during_handshake(clock: Any, transport: str) -> None:
    async with running_server(transport) as server:
        peer = await server.connect()
        await peer.stream.aclose()
        await server.settle()
        assert server.events == [
            ("refuse", peer.name, DisconnectReason.HANDSHAKE_FAILED)
        ]


# ------------------------------------------------------------ liveness


async def test_silent_client_is_kicked_exactly_at_timeout(
    clock: Any, transport: str
) -> None:
    async with running_server(transport) as server:
        peer = await server.client(interval=25)
        await trio.sleep(7)
        await peer.send(Data(b"last words"))
        last_frame = trio.current_time()
        assert await peer.receive() == Data(b"LAST WORDS")
        assert await peer.receive() == Close(1, "nothing received for 60 s")
        assert trio.current_time() - last_frame == 60
        await peer.expect_eof()
        await server.settle()
        assert server.events[-1] == (
            "disconnect",
            peer.name,
            DisconnectReason.HEARTBEAT_TIMEOUT,
        )


async def test_data_under_the_timeout_keeps_a_client(
    clock: Any, transport: str
) -> None:
    async with running_server(transport) as server:
        peer = await server.client()
        for i in range(20):
            await trio.sleep(59.9)
            await peer.send(Data(b"msg %d" % i))
            assert await peer.receive() == Data(b"MSG %d" % i)
        assert server.events[-1][0] == "connect"


async def test_pings_alone_keep_a_client(clock: Any, transport: str) -> None:
    async with running_server(transport) as server:
        peer = await server.client()
        for _ in range(20):
            await trio.sleep(30)
            await peer.send(Ping())
            assert await peer.receive() == Pong()
        assert server.events[-1][0] == "connect"
        await trio.sleep(59)
        await peer.send(Ping())
        assert await peer.receive() == Pong()


async def test_a_frame_still_arriving_counts_as_traffic(
    clock: Any, transport: str
) -> None:
    """A slow uplink: one DATA frame trickles in over 100 s, 4 bytes at a time.
    Bytes keep arriving, so the client is alive; it is kicked 60 s after the
    last byte, not 60 s after the last complete frame."""
    async with running_server(transport) as server:
        peer = await server.client()
        await peer.send_bytes(b"\x02\x64")  # DATA of 100 bytes
        for _ in range(25):
            await trio.sleep(4)
            await peer.send_bytes(b"abcd")
        last_byte = trio.current_time()
        assert await peer.receive() == Data(b"ABCD" * 25)
        assert await peer.receive() == Close(1, "nothing received for 60 s")
        assert trio.current_time() - last_byte == 60


@pytest.mark.parametrize("how", ["config", "env"])
async def test_enforcement_off_never_kicks(
    clock: Any, transport: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    kwargs: dict[str, Any] = {}
    if how == "config":
        kwargs["config"] = ServerConfig(enabled=False)
    else:
        monkeypatch.setenv("TRIO_HEARTBEAT_DISABLE", "1")
    async with running_server(transport, **kwargs) as server:
        peer = await server.client()
        await trio.sleep(3600 * 24)
        await peer.send(Ping())
        assert await peer.receive() == Pong()
        await peer.send(Data(b"still here"))
        assert await peer.receive() == Data(b"STILL HERE")


async def test_kicked_handler_is_cancelled_and_cleans_up(
    clock: Any, transport: str
) -> None:
    log: list[str] = []

    async def handler(conn: HeartbeatConnection) -> None:
        log.append("start")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            log.append("cancelled")
            raise
        finally:
            log.append(f"closed: {conn.disconnect_reason}")

    async with running_server(transport, handler) as server:
        peer = await server.client()
        assert await peer.receive() == Close(1, "nothing received for 60 s")
        await peer.expect_eof()
        # The handler's cleanup already sees why.
        assert log == ["start", "cancelled", f"closed: {HEARTBEAT_TIMEOUT}"]
        await server.settle()
        assert server_tasks(server) == ["Kicker.run"]


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x09\x00", CloseCode.PROTOCOL_ERROR),
        (b"\x02\x80\x80\x80\x80\x01", CloseCode.PROTOCOL_ERROR),
        (b"\x02\x81\x80\x40", CloseCode.FRAME_TOO_LARGE),
        (b"\x05\x00", CloseCode.PROTOCOL_ERROR),
        (b'\x01\x0d{"version":1}', CloseCode.PROTOCOL_ERROR),  # second HELLO
    ],
)
async def test_bad_input_drops_only_that_client(
    clock: Any, transport: str, wire: bytes, code: CloseCode
) -> None:
    async with running_server(transport) as server:
        good = await server.client()
        bad = await server.client()
        await bad.send(Data(b"before"))
        assert await bad.receive() == Data(b"BEFORE")
        await bad.send_bytes(wire)
        frame = await bad.receive()
        assert isinstance(frame, Close)
        assert frame.code == code
        await bad.expect_eof()
        for i in range(3):
            await good.send(Data(b"ok %d" % i))
            assert await good.receive() == Data(b"OK %d" % i)
        reasons = [r for kind, _, r in server.events if kind == "disconnect"]
        assert reasons == [DisconnectReason.PROTOCOL_ERROR]


async def test_oversized_frame_split_over_small_writes(
    clock: Any, transport: str
) -> None:
    async with running_server(
        transport, config=ServerConfig(max_frame_size=1000)
    ) as server:
        peer = await server.client()
        await peer.send_bytes(b"\x02")
        await trio.sleep(1)
        await peer.send_bytes(b"\xe9")
        await trio.sleep(1)
        await peer.send_bytes(b"\x07")  # 1001 bytes declared: rejected now
        assert await peer.receive() == Close(
            3, "frame of 1001 bytes exceeds max_frame_size 1000"
        )


# ------------------------------------------------------------ closing


async def test_client_close_frame_ends_connection(clock: Any, transport: str) -> None:
    async with running_server(transport) as server:
        peer = await server.client()
        await peer.send(Data(b"a"))
        await peer.send(Close(0, "bye"))
        # Closing handshake: the reply in flight still arrives, then CLOSE(0).
        assert await peer.receive() == Data(b"A")
        assert await peer.receive() == Close(0, "")
        await peer.expect_eof()
        await server.settle()
        assert server.events[-1][2] is DisconnectReason.CLOSED_BY_PEER


async def test_data_before_close_reaches_the_handler(
    clock: Any, transport: str
) -> None:
    got: list[bytes] = []

    async def collect(conn: HeartbeatConnection) -> None:
        await trio.sleep(5)  # not reading while the client sends and leaves
        async for data in conn:
            got.append(data)

    async with running_server(transport, collect) as server:
        peer = await server.client()
        for i in range(3):
            await peer.send(Data(b"%d" % i))
        await peer.send(Close(0, ""))
        assert await peer.receive() == Close(0, "")
        await peer.expect_eof()
        assert got == [b"0", b"1", b"2"]


async def test_handler_return_sends_close_normal(clock: Any, transport: str) -> None:
    async def once(conn: HeartbeatConnection) -> None:
        await conn.send(await conn.receive())

    async with running_server(transport, once) as server:
        peer = await server.client()
        await peer.send(Data(b"x"))
        assert await peer.receive() == Data(b"x")
        assert await peer.receive() == Close(0, "")
        await peer.expect_eof()
        await server.settle()
        assert server.events[-1][2] is DisconnectReason.CLOSED_LOCALLY


async def test_handler_error_is_logged_and_others_unaffected(
    clock: Any, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def fragile(conn: HeartbeatConnection) -> None:
        async for data in conn:
            if data == b"boom":
                raise RuntimeError("handler bug")
            await conn.send(data)

    async with running_server(transport, fragile) as server:
        good = await server.client()
        bad = await server.client()
        await bad.send(Data(b"boom"))
        assert await bad.receive() == Close(0, "server error")
        await bad.expect_eof()
        await good.send(Data(b"fine"))
        assert await good.receive() == Data(b"fine")
    assert "handler failed" in caplog.text
    assert "RuntimeError: handler bug" in caplog.text


async def test_handler_seeing_connection_closed_is_normal(
    clock: Any, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def strict(conn: HeartbeatConnection) -> None:
        while True:
            await conn.receive()  # raises ConnectionClosed when the peer leaves

    async with running_server(transport, strict) as server:
        peer = await server.client()
        await peer.send(Close(0, ""))
        assert await peer.receive() == Close(0, "")
        await peer.expect_eof()
        await server.settle()
        assert server.events[-1][2] is DisconnectReason.CLOSED_BY_PEER
    assert "handler failed" not in caplog.text


async def test_receive_after_close_raises(clock: Any, transport: str) -> None:
    errors: list[ConnectionClosed] = []

    async def handler(conn: HeartbeatConnection) -> None:
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            errors.append(exc)
            raise

    async with running_server(transport, handler) as server:
        peer = await server.client()
        await peer.send(Close(4, "too many pings?"))
        assert await peer.receive() == Close(0, "")
        await peer.expect_eof()
        await server.settle()
    (error,) = errors
    assert (error.code, error.reason, error.by_peer) == (4, "too many pings?", True)


async def test_shutdown_sends_close_5_to_every_client(
    clock: Any, transport: str
) -> None:
    async with running_server(transport) as server:
        peers = [await server.client() for _ in range(5)]
        handshaking = await server.connect()
        server.nursery.cancel_scope.cancel()
        for peer in [*peers, handshaking]:
            assert await peer.receive() == Close(5, "server shutting down")
            await peer.expect_eof()
    # The five connected ones are disconnected, the one still handshaking is
    # refused: on_disconnect pairs with on_connect.
    kinds = [(kind, r) for kind, _, r in server.events if kind != "connect"]
    assert sorted(kinds, key=str) == sorted(
        [("disconnect", DisconnectReason.SHUTDOWN)] * 5
        + [("refuse", DisconnectReason.SHUTDOWN)],
        key=str,
    )


async def test_max_connections(clock: Any, transport: str) -> None:
    async with running_server(
        transport, config=ServerConfig(max_connections=2)
    ) as server:
        first = await server.client()
        await server.client()
        third = await server.connect()
        assert await third.receive() == Close(6, "server full (2 connections)")
        await third.expect_eof()
        await first.send(Close(0, ""))
        assert await first.receive() == Close(0, "")
        await first.expect_eof()
        await server.settle()
        fourth = await server.client()
        await fourth.send(Data(b"in"))
        assert await fourth.receive() == Data(b"IN")
        refused = [r for kind, _, r in server.events if kind == "refuse"]
        assert refused == [DisconnectReason.SERVER_FULL]


# ------------------------------------------------------------ extras


async def test_pong_payload_piggyback(clock: Any, transport: str) -> None:
    def unread(conn: HeartbeatConnection, ping: bytes) -> bytes:
        return b"unread=3;" + ping

    async with running_server(transport, pong_payload=unread) as server:
        peer = await server.client()
        await peer.send(Ping(b"p1"))
        assert await peer.receive() == Pong(b"unread=3;p1")


async def test_batched_pings_answered_in_one_send(clock: Any, transport: str) -> None:
    async with running_server(transport) as server:
        peer = await server.client()
        # Three at once: one on time plus the two strikes tolerated.
        await peer.send_bytes(b"\x03\x00" * 3)
        data = await peer.stream.receive_some(65536)
        assert data == b"\x04\x00" * 3


async def test_stats_are_counted(clock: Any, transport: str) -> None:
    conns: list[HeartbeatConnection] = []

    async def handler(conn: HeartbeatConnection) -> None:
        conns.append(conn)
        await echo_upper(conn)

    async with running_server(transport, handler) as server:
        peer = await server.client()
        await peer.send(Ping())
        await peer.receive()
        await peer.send(Data(b"abc"))
        await peer.receive()
        stats = conns[0].stats
        assert stats.pings_received == 1
        assert stats.pongs_sent == 1
        # HELLO + PING + DATA in, HELLO answer + PONG + DATA out
        assert stats.frames_received == 3
        assert stats.frames_sent == 3
        assert stats.bytes_received > 0 and stats.bytes_sent > 0
        assert stats.last_received == trio.current_time()


async def test_no_leaks_after_100_connections(clock: Any, transport: str) -> None:
    async with running_server(transport) as server:
        open_peers: list[tuple[RawPeer, Close]] = []
        for i in range(100):
            peer = await server.client()
            await peer.send(Data(b"x"))
            assert await peer.receive() == Data(b"X")
            if i % 3 == 0:
                await peer.send(Close(0, ""))
                open_peers.append((peer, Close(0, "")))
            elif i % 3 == 1:
                await peer.stream.aclose()
            else:  # left silent, to be kicked
                open_peers.append((peer, Close(1, "nothing received for 60 s")))
        await trio.sleep(61)
        await server.settle()
        assert server_tasks(server) == ["Kicker.run"]
        reasons = [r for kind, _, r in server.events if kind == "disconnect"]
        assert len(reasons) == 100
        assert reasons.count(DisconnectReason.HEARTBEAT_TIMEOUT) == 33
        # The server ended every connection: each peer got its CLOSE, then EOF.
        for peer, last_frame in open_peers:
            assert await peer.receive() == last_frame
            await peer.expect_eof()
        if transport == "memory":
            for stream in server.listener.server_streams:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.send_all(b"x")


async def test_kick_is_logged_with_peer_and_reason(
    clock: Any, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_heartbeat")
    async with running_server(transport) as server:
        peer = await server.client()
        await peer.receive()
        await server.settle()
    kicks = [r for r in caplog.records if r.getMessage().startswith("kick")]
    assert [r.getMessage() for r in kicks] == [
        f"kick {peer.name}: heartbeat timeout [CLOSE 1]: nothing received for 60 s"
    ]


async def test_kicks_while_warnings_are_off_are_never_logged(
    clock: Any, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With the kick lines off (``--log-level ERROR``) a kick keeps nothing
    for its line: one turned back on later logs only the kicks from then."""
    caplog.set_level(logging.ERROR, logger="trio_heartbeat")
    async with running_server(transport) as server:
        quiet = await server.client()
        assert await quiet.receive() == Close(1, "nothing received for 60 s")
        await server.settle()
        caplog.set_level(logging.INFO, logger="trio_heartbeat")
        logged = await server.client()
        assert await logged.receive() == Close(1, "nothing received for 60 s")
        await server.settle()
    reasons = [r for kind, _, r in server.events if kind == "disconnect"]
    assert reasons == [DisconnectReason.HEARTBEAT_TIMEOUT] * 2
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if line.startswith("kick")] == [
        f"kick {logged.name}: heartbeat timeout [CLOSE 1]: nothing received for 60 s"
    ]


async def test_a_burst_of_kicks_logs_after_its_kicks(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 silent together: the kick lines wait while kicks are overdue (a line
    costs about as much as a kick), a few per pass, and each says how long its
    client had been silent when it was kicked."""
    clients = 300
    order: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("kick "):
                order.append("line")
                assert record.__dict__["silent"] == 60.0

    recorder = Recorder()
    logging.getLogger("trio_heartbeat.server").addHandler(recorder)
    try:
        async with running_server("memory", shout) as server:
            original = HeartbeatConnection.end_now

            def spy(conn: HeartbeatConnection, *args: Any) -> bool:
                order.append("kick")
                return original(conn, *args)

            monkeypatch.setattr(HeartbeatConnection, "end_now", spy)
            peers = [await server.client() for _ in range(clients)]
            for peer in peers:
                assert await peer.receive() == Close(1, "nothing received for 60 s")
            await server.settle()
    finally:
        logging.getLogger("trio_heartbeat.server").removeHandler(recorder)
    assert order.count("kick") == order.count("line") == clients
    last_kick = len(order) - 1 - order[::-1].index("kick")
    # Passes of 128 kicks: the two that end with kicks overdue log a few lines
    # each; the rest come once the last kick is out.
    assert order[:last_kick].count("line") <= 2 * CLEANUPS_WHILE_BEHIND


@pytest.mark.parametrize("transport", ["tcp"])
async def test_a_burst_of_answered_kicks_waits_for_the_kicks(
    clock: Any, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 silent together over TCP, each client closing at its CLOSE(1): the
    kicked readers sleep through the answers until no kick has come for
    ASLEEP_UNTIL_QUIET, so no connection ends during the kicks; then each
    wakes, waits its turn once (not again to clean up) and ends."""
    clients = 300
    ended_before: list[int] = []  # at each kick, connections ended so far
    kicked: list[HeartbeatConnection] = []
    kicked_at: list[float] = []

    async with running_server(transport, shout) as server:

        def ended() -> int:
            return sum(1 for event, _, _ in server.events if event == "disconnect")

        original = HeartbeatConnection.end_now

        def spy(conn: HeartbeatConnection, *args: Any) -> bool:
            ended_before.append(ended())
            kicked.append(conn)
            kicked_at.append(trio.current_time())
            return original(conn, *args)

        monkeypatch.setattr(HeartbeatConnection, "end_now", spy)
        peers = [await server.client() for _ in range(clients)]

        async def answer(peer: RawPeer) -> None:
            assert await peer.receive() == Close(1, "nothing received for 60 s")
            await peer.stream.aclose()

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(answer, peer)
        assert len(kicked) == clients
        await trio.sleep_until(kicked_at[-1] + ASLEEP_UNTIL_QUIET - 0.001)
        await server.settle()
        assert ended() == 0  # every answer in, every reader still asleep
        assert not any(conn.answer_held for conn in kicked)
        await trio.sleep_until(kicked_at[-1] + ASLEEP_UNTIL_QUIET)
        await server.settle()
        assert ended() == clients
    assert ended_before == [0] * clients
    assert all(conn.answer_held for conn in kicked)
    assert all(reason is HEARTBEAT_TIMEOUT for _, _, reason in server.events[clients:])


async def test_an_unanswered_kick_ends_at_close_timeout_while_kicks_go_on(
    clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kicked readers sleep until no kick has come for ASLEEP_UNTIL_QUIET; when
    kicks keep coming for longer than close_timeout, a client that never
    answers is still let go exactly close_timeout after its kick."""
    close_timeout = 0.2
    spacing = ASLEEP_UNTIL_QUIET / 2  # kicks closer together than the quiet
    clients = 20  # kicked over 19 x 25 ms, longer than close_timeout
    kicked_at: dict[str, float] = {}
    original = HeartbeatConnection.end_now

    def spy(conn: HeartbeatConnection, *args: Any) -> bool:
        kicked_at[conn.peer] = trio.current_time()
        return original(conn, *args)

    monkeypatch.setattr(HeartbeatConnection, "end_now", spy)
    config = ServerConfig(close_timeout=close_timeout)
    async with running_server("tcp", shout, config=config) as server:
        for _ in range(clients):
            await server.client()  # then silent, and deaf to the CLOSE
            await trio.sleep(spacing)
        await trio.sleep(60 + close_timeout)
        await server.settle()
        assert len(server.disconnected_at) == clients
    assert len(kicked_at) == clients
    assert max(kicked_at.values()) - min(kicked_at.values()) > close_timeout
    for peer, at in kicked_at.items():
        assert server.disconnected_at[peer] == at + close_timeout
    assert {reason for _, _, reason in server.events[clients:]} == {HEARTBEAT_TIMEOUT}


async def test_answered_kicks_sleep_at_most_a_second_while_kicks_go_on(
    clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kicks 25 ms apart for 1.5 s, each client closing at its CLOSE(1): a
    kicked reader sleeps until the kicks are quiet or for ASLEEP_AT_MOST,
    whichever comes first, then ends at once."""
    spacing = ASLEEP_UNTIL_QUIET / 2
    clients = 60
    kicked_at: dict[str, float] = {}
    original = HeartbeatConnection.end_now

    def spy(conn: HeartbeatConnection, *args: Any) -> bool:
        kicked_at[conn.peer] = trio.current_time()
        return original(conn, *args)

    async def answer(peer: RawPeer) -> None:
        assert await peer.receive() == Close(1, "nothing received for 60 s")
        await peer.stream.aclose()

    monkeypatch.setattr(HeartbeatConnection, "end_now", spy)
    config = ServerConfig(close_timeout=5)  # no linger ends before the sleep
    async with (
        running_server("tcp", shout, config=config) as server,
        trio.open_nursery() as nursery,
    ):
        for _ in range(clients):
            nursery.start_soon(answer, await server.client())
            await trio.sleep(spacing)
        await trio.sleep(60 + 2 * ASLEEP_UNTIL_QUIET)
        await server.settle()
        assert len(server.disconnected_at) == clients
    last = max(kicked_at.values())
    assert last - min(kicked_at.values()) > ASLEEP_AT_MOST
    for peer, at in kicked_at.items():
        woken = min(at + ASLEEP_AT_MOST, last + ASLEEP_UNTIL_QUIET)
        assert server.disconnected_at[peer] == woken, (at, woken)
    assert {reason for _, _, reason in server.events[clients:]} == {HEARTBEAT_TIMEOUT}


# ------------------------------------------------------------ ping strikes


async def test_ping_flood_gets_close_4(clock: Any, transport: str) -> None:
    async with running_server(transport, config=ServerConfig(min_interval=2)) as server:
        good = await server.client()
        flooder = await server.client()
        start = trio.current_time()
        for _ in range(3):
            await flooder.send(Ping())
            assert await flooder.receive() == Pong()
            await trio.sleep(0.5)  # faster than min_interval: strikes 1 and 2
        await flooder.send(Ping())  # strike 3
        assert await flooder.receive() == Close(
            4, "more than 2 PINGs in a row sent closer together than min_interval 2 s"
        )
        assert trio.current_time() - start == 1.5
        await flooder.expect_eof()
        await good.send(Data(b"unaffected"))
        assert await good.receive() == Data(b"UNAFFECTED")
        await server.settle()
        reasons = [r for kind, _, r in server.events if kind == "disconnect"]
        assert reasons == [DisconnectReason.TOO_MANY_PINGS]


async def test_pings_on_schedule_are_never_struck(clock: Any, transport: str) -> None:
    async with running_server(transport, config=ServerConfig(min_interval=2)) as server:
        peer = await server.client()
        for _ in range(50):  # exactly min_interval apart, as retries may be
            await peer.send(Ping())
            assert await peer.receive() == Pong()
            await trio.sleep(2)
        # Two early ones in a row are tolerated, and an on-time one resets.
        for _ in range(5):
            for gap in (1, 1, 2):
                await trio.sleep(gap)
                await peer.send(Ping())
                assert await peer.receive() == Pong()


async def test_strikes_not_counted_with_enforcement_off(
    clock: Any, transport: str
) -> None:
    config = ServerConfig(min_interval=2, enabled=False)
    async with running_server(transport, config=config) as server:
        peer = await server.client()
        await peer.send_bytes(b"\x03\x00" * 10)
        data = b""
        while len(data) < 20:
            data += await peer.stream.receive_some(65536)
        assert data == b"\x04\x00" * 10


# ------------------------------------------------------------ slow consumers


class LockstepListener(MemoryListener):
    """Like MemoryListener, but a send blocks until the peer reads it."""

    async def connect(self) -> Any:
        client, server = trio.testing.lockstep_stream_pair()
        self.server_streams.append(server)
        await self._send.send(server)
        return client


async def test_slow_consumer_is_dropped_after_send_timeout(autojump_clock: Any) -> None:
    listener = LockstepListener()
    events: list[DisconnectReason] = []
    dropped = trio.Event()

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        events.append(reason)
        dropped.set()

    async def talker(conn: HeartbeatConnection) -> None:
        await conn.receive()
        while True:
            await conn.send(b"x" * 1000)

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_listeners, talker, [listener],
                config=ServerConfig(send_timeout=10),
                on_disconnect=on_disconnect,
            )
        )  # fmt: skip
        slow = RawPeer(await listener.connect())
        await slow.hello()
        await slow.send(Data(b"go"))  # then it never reads again
        start = trio.current_time()
        await dropped.wait()
        assert events == [DisconnectReason.SLOW_CONSUMER]
        assert trio.current_time() - start == 10
        nursery.cancel_scope.cancel()


async def test_others_unaffected_by_a_slow_consumer(autojump_clock: Any) -> None:
    slow_listener, fast_listener = LockstepListener(), MemoryListener()

    async def handler(conn: HeartbeatConnection) -> None:
        async for data in conn:
            await conn.send(data * 1000)

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve_listeners, handler, [slow_listener, fast_listener])
        )
        slow = RawPeer(await slow_listener.connect())
        await slow.hello()
        await slow.send(Data(b"flood me"))  # the reply will never be read
        fast = RawPeer(await fast_listener.connect())
        await fast.hello()
        for _ in range(5):
            sent = trio.current_time()
            await fast.send(Ping())
            assert await fast.receive() == Pong()
            assert trio.current_time() == sent  # no added latency
            await trio.sleep(1)
        nursery.cancel_scope.cancel()


class DeafListener(MemoryListener):
    """The client's bytes reach the server freely; the server's block until read."""

    async def connect(self) -> Any:
        to_server_send, to_server_receive = trio.testing.memory_stream_one_way_pair()
        to_client_send, to_client_receive = trio.testing.lockstep_stream_one_way_pair()
        server = trio.StapledStream(to_client_send, to_server_receive)
        self.server_streams.append(server)
        await self._send.send(server)
        return trio.StapledStream(to_server_send, to_client_receive)


async def test_ping_flood_without_reading_is_capped(autojump_clock: Any) -> None:
    """A client that PINGs (on schedule, so no strikes) but never reads the PONGs:
    the server holds one unsent PONG batch, stops reading, and drops the client
    as a slow consumer at ``timeout``, while others are served on time."""
    deaf_listener, listener = DeafListener(), MemoryListener()
    reasons: list[tuple[float, DisconnectReason]] = []
    conns: list[HeartbeatConnection] = []
    dropped = trio.Event()

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        reasons.append((trio.current_time(), reason))
        dropped.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_listeners, echo_upper, [deaf_listener, listener],
                config=ServerConfig(timeout=10, min_interval=1),
                on_connect=conns.append, on_disconnect=on_disconnect,
            )
        )  # fmt: skip
        flooder = RawPeer(await deaf_listener.connect())
        await flooder.hello()  # the last thing it ever reads
        other = RawPeer(await listener.connect())
        await other.hello()
        start = trio.current_time()

        async def flood() -> None:
            while True:
                await flooder.send(Ping(b"p" * 1000))
                await trio.sleep(1)

        nursery.start_soon(flood)
        while not dropped.is_set():
            sent = trio.current_time()
            await other.send(Ping())
            assert await other.receive() == Pong()
            assert trio.current_time() == sent  # no added latency
            await trio.sleep(1)
        assert reasons == [(start + 10, DisconnectReason.SLOW_CONSUMER)]
        # It read the first PING only: nothing more was buffered or answered.
        assert conns[0].stats.pings_received == 1
        nursery.cancel_scope.cancel()


async def test_internal_error_costs_one_connection_only(
    clock: Any,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trio_heartbeat import _server

    real_negotiate = _server.negotiate

    def negotiate(request: Any, config: ServerConfig) -> Any:
        if request.get("client_id") == "unlucky":
            raise RuntimeError("a bug")
        return real_negotiate(request, config)

    monkeypatch.setattr(_server, "negotiate", negotiate)
    async with running_server(transport) as server:
        good = await server.client()
        unlucky = await server.connect()
        await unlucky.send(Hello({"version": 1, "client_id": "unlucky"}))
        assert await unlucky.receive() == Close(0, "server error")
        await unlucky.expect_eof()
        await good.send(Data(b"still here"))
        assert await good.receive() == Data(b"STILL HERE")
        later = await server.client()
        await later.send(Data(b"new"))
        assert await later.receive() == Data(b"NEW")
        reasons = [r for kind, _, r in server.events if kind == "refuse"]
        assert reasons == [DisconnectReason.INTERNAL_ERROR]
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage().startswith("internal error on ")
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"


# ------------------------------------------------------------ per-message handlers


@per_message
async def shout(conn: HeartbeatConnection, data: bytes) -> None:
    if data == b"boom":
        raise ValueError("boom")
    if data == b"receive":
        await conn.receive()
    await conn.send(data.upper())


async def test_per_message_handler_answers_in_order_in_one_task(
    clock: Any,
    transport: str,
) -> None:
    async with running_server(transport, shout) as server:
        peer = await server.client()
        await peer.send_bytes(encode(Data(b"a")) + encode(Ping()) + encode(Data(b"b")))
        # Replies keep the order of the frames they answer.
        assert [await peer.receive() for _ in range(3)] == [
            Data(b"A"), Pong(), Data(b"B"),
        ]  # fmt: skip
        # Only the connection's own task runs beside the kicker.
        assert len(server.handler_nursery.child_tasks) == 2
        await peer.send(Data(b"last"))
        await peer.send(Close(0, ""))
        assert await peer.receive() == Data(b"LAST")
        assert await peer.receive() == Close(0, "")
        await peer.expect_eof()
        await server.settle()
        assert server_tasks(server) == ["Kicker.run"]
        assert server.events[-1][2] is DisconnectReason.CLOSED_BY_PEER


async def test_per_message_silent_client_is_kicked(clock: Any, transport: str) -> None:
    async with running_server(transport, shout) as server:
        peer = await server.client()
        start = trio.current_time()
        assert await peer.receive() == Close(1, "nothing received for 60 s")
        assert trio.current_time() - start == 60
        await peer.expect_eof()


@pytest.mark.parametrize(
    ("message", "error"),
    [(b"boom", "ValueError: boom"), (b"receive", "RuntimeError: this connection")],
)
async def test_per_message_handler_error_ends_its_connection_only(
    clock: Any,
    transport: str,
    caplog: pytest.LogCaptureFixture,
    message: bytes,
    error: str,
) -> None:
    async with running_server(transport, shout) as server:
        other = await server.client()
        peer = await server.client()
        await peer.send(Data(message))
        assert await peer.receive() == Close(0, "server error")
        await peer.expect_eof()
        await other.send(Data(b"fine"))
        assert await other.receive() == Data(b"FINE")
        reasons = [r for kind, _, r in server.events if kind == "disconnect"]
        assert reasons == [DisconnectReason.HANDLER_ERROR]
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.exc_info is not None
    assert f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}".startswith(
        error
    )
