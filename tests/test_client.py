"""Client behaviour in virtual time, against a scripted peer speaking raw frames."""

from __future__ import annotations

import contextlib
import random
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trio_heartbeat import (
    Backoff,
    ClientConfig,
    Close,
    CloseCode,
    ConnectionClosed,
    Data,
    DisconnectReason,
    HeartbeatConnection,
    HeartbeatTimeout,
    Hello,
    Ping,
    Pong,
    Reconnector,
    ServerConfig,
    connect_stream,
    encode,
    serve_listeners,
)

from .helpers import MemoryListener, RawPeer


def server_hello(**overrides: Any) -> Hello:
    fields = {
        "version": 1,
        "interval": 25.0,
        "timeout": 60.0,
        "min_interval": 1.0,
        "max_frame_size": 1 << 20,
    }
    fields.update(overrides)
    return Hello(fields)


async def accept_hello(peer: RawPeer, **overrides: Any) -> Hello:
    hello = await peer.receive()
    assert isinstance(hello, Hello)
    await peer.send(server_hello(**overrides))
    return hello


class ScriptedServer:
    """Records every frame with its arrival time; answers PINGs unless told not to."""

    def __init__(self, peer: RawPeer, *, answer: bool = True, delay: float = 0) -> None:
        self.peer = peer
        self.answer = answer
        self.delay = delay
        self.frames: list[tuple[float, Any]] = []

    def times(self, frame_type: type) -> list[float]:
        return [t for t, f in self.frames if isinstance(f, frame_type)]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while (frame := await self.peer.receive_or_eof()) is not None:
                self.frames.append((trio.current_time(), frame))
                if isinstance(frame, Ping) and self.answer:
                    nursery.start_soon(self._answer, frame)

    async def _answer(self, ping: Ping) -> None:
        await trio.sleep(self.delay)
        # The client may have left meanwhile.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.peer.send(Pong(b"srv:" + ping.payload))


async def start_scripted(
    nursery: trio.Nursery, *, hello: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[trio.abc.Stream, ScriptedServer]:
    """A scripted server; ``hello``: fields of its HELLO answer to override."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    script = ScriptedServer(RawPeer(server_stream), **kwargs)

    async def serve() -> None:
        await accept_hello(script.peer, **(hello or {}))
        await script.run()

    nursery.start_soon(serve)
    return client_stream, script


async def test_hello_carries_the_request(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            hello = await accept_hello(peer, interval=20.0, min_interval=2.0)
            assert dict(hello.fields) == {
                "version": 1,
                "interval": 30.0,
                "retry_interval": 4.0,
                "retries": 3,
                "client_id": "probe-7",
            }

        nursery.start_soon(server)
        config = ClientConfig(
            interval=30, retry_interval=4, retries=3, client_id="probe-7"
        )
        async with connect_stream(client_stream, config=config) as conn:
            assert conn.negotiated.interval == 20.0
            assert conn.negotiated.min_interval == 2.0


async def test_ping_schedule_on_an_idle_link(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery)
        start = trio.current_time()
        async with connect_stream(stream) as conn:
            await trio.sleep(101)
            assert conn.stats.pings_sent == 4
        assert [t - start for t in script.times(Ping)] == [25, 50, 75, 100]


@pytest.mark.parametrize("delay", [0, 3])
async def test_answered_pings_keep_the_interval_shorter_than_the_retry_interval(
    autojump_clock: Any, delay: float
) -> None:
    # interval 2, retry_interval 5: an answer starts the next idle period, whose
    # PING is due 2 s after the last send, before the next attempt would wake
    # the loop. A late answer (3 s) is seen within one interval of arriving.
    config = ClientConfig(interval=2, retry_interval=5, retries=1)
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(
            nursery, delay=delay, hello={"interval": 2.0}
        )
        start = trio.current_time()
        async with connect_stream(stream, config=config):
            await trio.sleep(10.5)
    expected = [2, 4, 6, 8, 10] if delay == 0 else [2, 6, 10]
    assert [t - start for t in script.times(Ping)] == expected


async def test_no_ping_while_traffic_flows_both_ways(autojump_clock: Any) -> None:
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_listeners, echo, [listener])
        async with connect_stream(await listener.connect()) as conn:
            start = trio.current_time()
            for _ in range(10):
                await trio.sleep(20)
                await conn.send(b"busy")
                assert await conn.receive() == b"BUSY"
            assert conn.stats.pings_sent == 0
            # Last exchange at 200; the first PING is due 25 s after it.
            await trio.sleep(24.9)
            assert conn.stats.pings_sent == 0
            await trio.sleep(0.1)
            await trio.testing.wait_all_tasks_blocked()
            assert conn.stats.pings_sent == 1
            assert conn.stats.last_sent - start == 225
        nursery.cancel_scope.cancel()


async def test_sending_is_no_proof_that_the_server_is_there(
    autojump_clock: Any,
) -> None:
    """A chatty client whose server reads but never answers: it PINGs once
    nothing was received for ``interval``, although it never stops sending."""
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery)  # answers PINGs only
        start = trio.current_time()
        async with connect_stream(stream) as conn:
            for _ in range(20):
                await trio.sleep(5)
                await conn.send(b"busy")
            await trio.sleep(1)
        # Every 25 s since the HELLO (the last thing received, then each PONG).
        assert [t - start for t in script.times(Ping)] == [25, 50, 75, 100]


async def test_received_data_does_not_delay_pings(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery)
        start = trio.current_time()
        async with connect_stream(stream) as conn:
            for _ in range(21):
                await script.peer.send(Data(b"news"))
                await trio.sleep(5)
                assert await conn.receive() == b"news"
        assert [t - start for t in script.times(Ping)] == [25, 50, 75, 100]


async def test_dead_server_verdict_at_the_exact_bound(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery, answer=False)
        start = trio.current_time()
        with pytest.raises(HeartbeatTimeout) as info:
            async with connect_stream(stream):
                await trio.sleep_forever()
        # First PING at 25, resent every 5 s, 6 PINGs: dead at 25 + 6 x 5.
        assert trio.current_time() - start == 55
        assert [t - start for t in script.times(Ping)] == [25, 30, 35, 40, 45, 50]
        assert info.value.disconnect_reason is DisconnectReason.HEARTBEAT_TIMEOUT
        assert info.value.reason == "6 PINGs unanswered over 30 s"
        nursery.cancel_scope.cancel()


async def test_blocked_receive_wakes_with_heartbeat_timeout(
    autojump_clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        stream, _ = await start_scripted(nursery, answer=False)
        config = ClientConfig(interval=10, retries=2, retry_interval=3)
        start = trio.current_time()
        with pytest.raises(HeartbeatTimeout):
            async with connect_stream(stream, config=config) as conn:
                try:
                    await conn.receive()
                except HeartbeatTimeout:
                    # The server's answer sets the interval (25); 3 PINGs 3 s apart.
                    assert trio.current_time() - start == 25 + 3 * 3
                    raise
                pytest.fail("receive returned")
        nursery.cancel_scope.cancel()


async def test_blocked_send_wakes_with_heartbeat_timeout(autojump_clock: Any) -> None:
    # A lockstep stream blocks send_all until the peer reads: a stuck server.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    peer = RawPeer(server_stream)
    config = ClientConfig(interval=10, retries=1, retry_interval=2)
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            await accept_hello(peer)
            await trio.sleep_forever()  # never reads again

        nursery.start_soon(server)
        with pytest.raises(HeartbeatTimeout):
            async with connect_stream(client_stream, config=config) as conn:
                await conn.send(b"x" * 10)  # blocks: nobody reads
        nursery.cancel_scope.cancel()


async def test_any_frame_answers_a_ping(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery, answer=False)
        start = trio.current_time()
        async with connect_stream(stream) as conn:
            await trio.sleep(27)  # PING at 25 is unanswered so far
            await script.peer.send(Data(b"late but alive"))
            await trio.sleep(20)
            assert await conn.receive() == b"late but alive"
        # Answered at 27: no resend at 30; next PING 25 s after the first.
        assert [t - start for t in script.times(Ping)] == [25]


async def test_heartbeat_exchange_continues_after_answers(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery, delay=7)
        start = trio.current_time()
        async with connect_stream(stream) as conn:
            await trio.sleep(59)  # not 60: a resend is due at exactly 60
            assert conn.stats.pongs_received == 2
        # Answer comes 7 s late: one resend at +5, then idle again from the
        # resend (the last thing sent), not from the PONG.
        assert [t - start for t in script.times(Ping)] == [25, 30, 55]


async def test_min_interval_raises_retry_interval(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    script = ScriptedServer(RawPeer(server_stream), answer=False)
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            await accept_hello(script.peer, interval=10.0, min_interval=4.0)
            await script.run()

        nursery.start_soon(serve)
        config = ClientConfig(interval=10, retries=2, retry_interval=1)
        start = trio.current_time()
        with pytest.raises(HeartbeatTimeout):
            async with connect_stream(client_stream, config=config):
                await trio.sleep_forever()
        assert [t - start for t in script.times(Ping)] == [10, 14, 18]
        assert trio.current_time() - start == 22
        nursery.cancel_scope.cancel()


async def test_rtt_from_scripted_delays(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    delays = [0.2, 0.4, 0.1]
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            await accept_hello(peer)
            for delay in delays:
                assert isinstance(await peer.receive(), Ping)
                await trio.sleep(delay)
                await peer.send(Pong())
            await trio.sleep_forever()

        nursery.start_soon(serve)
        async with connect_stream(client_stream) as conn:
            await trio.sleep(80)
            rtt = conn.rtt
            assert rtt.samples == 3
            srtt, rttvar = 0.2, 0.1
            for r in delays[1:]:
                rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
                srtt = 0.875 * srtt + 0.125 * r
            assert rtt.srtt == pytest.approx(srtt)
            assert rtt.rttvar == pytest.approx(rttvar)
            assert rtt.latest == pytest.approx(0.1)
        nursery.cancel_scope.cancel()


async def test_resent_ping_gives_no_rtt_sample(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, _ = await start_scripted(nursery, delay=6)
        async with connect_stream(stream) as conn:
            await trio.sleep(40)
            assert conn.stats.pings_sent == 2
            assert conn.rtt.samples == 0  # Karn: the answer may be to either PING


async def test_heartbeat_payloads_both_ways(autojump_clock: Any) -> None:
    pongs: list[bytes] = []
    counter = iter(range(100))
    async with trio.open_nursery() as nursery:
        stream, _ = await start_scripted(nursery)
        async with connect_stream(
            stream,
            ping_payload=lambda: b"seq=%d" % next(counter),
            on_pong=pongs.append,
        ):
            await trio.sleep(51)
    assert pongs == [b"srv:seq=0", b"srv:seq=1"]


async def test_jitter_spreads_the_idle_wait(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery)
        start = trio.current_time()
        config = ClientConfig(jitter=0.2)
        async with connect_stream(stream, config=config, rng=random.Random(4)):
            await trio.sleep(300)
        times = [t - start for t in script.times(Ping)]
        gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
        assert all(20 <= g <= 30 for g in gaps), gaps
        assert len(set(gaps)) == len(gaps)  # not in lockstep


async def test_server_close_surfaces_with_code_and_text(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            await accept_hello(peer)
            await trio.sleep(3)
            await peer.send(Close(CloseCode.SHUTTING_DOWN, "maintenance"))

        nursery.start_soon(serve)
        with pytest.raises(ConnectionClosed) as info:
            async with connect_stream(client_stream) as conn:
                await conn.receive()
        assert (info.value.code, info.value.reason, info.value.by_peer) == (
            5,
            "maintenance",
            True,
        )
        assert "CLOSE 5 SHUTTING_DOWN" in str(info.value)


async def test_refusal_during_handshake(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            await peer.send(Close(CloseCode.SERVER_FULL, "server full"))

        nursery.start_soon(serve)
        with pytest.raises(ConnectionClosed) as info:
            async with connect_stream(client_stream):
                pytest.fail("body ran")
        assert info.value.code == CloseCode.SERVER_FULL


async def test_handshake_timeout(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:

        @nursery.start_soon
        async def silent_server() -> None:
            assert isinstance(await peer.receive(), Hello)
            # Never answers; at 10 s the client gives up with CLOSE(7).
            assert await peer.receive() == Close(
                7, "no HELLO from the server within 10 s"
            )
            assert trio.current_time() - start == 10
            await peer.expect_eof()  # FIN after it; then this side closes

        with pytest.raises(ConnectionClosed) as info:
            async with connect_stream(client_stream):
                pytest.fail("body ran")
    assert trio.current_time() - start == 10
    assert info.value.disconnect_reason is DisconnectReason.HANDSHAKE_FAILED
    assert info.value.reason == "no HELLO from the server within 10 s"
    del server_stream


async def test_bad_server_hello(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            await accept_hello(peer, interval="soon")
            assert await peer.receive() == Close(
                7, "server HELLO has invalid 'interval': 'soon'"
            )

        nursery.start_soon(serve)
        with pytest.raises(ConnectionClosed) as info:
            async with connect_stream(client_stream):
                pytest.fail("body ran")
        assert info.value.code == CloseCode.HANDSHAKE_FAILED


async def test_exit_sends_close_normal(autojump_clock: Any) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_hello, peer)
        async with connect_stream(client_stream) as conn:
            await conn.send(b"bye")
        assert await peer.receive() == Data(b"bye")
        assert await peer.receive() == Close(0, "")
        await peer.expect_eof()


async def test_body_exception_propagates_unwrapped(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, _ = await start_scripted(nursery)
        with pytest.raises(KeyError, match="mine"):
            async with connect_stream(stream):
                raise KeyError("mine")


async def test_disabled_client_never_pings(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        stream, script = await start_scripted(nursery, answer=False)
        async with connect_stream(stream, config=ClientConfig(enabled=False)):
            await trio.sleep(1000)
        assert script.times(Ping) == []


# ------------------------------------------------------------ against our server


async def echo(conn: HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data.upper())


async def test_client_and_server_together(autojump_clock: Any) -> None:
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_listeners, echo, [listener])
        async with connect_stream(await listener.connect()) as conn:
            await conn.send(b"hello")
            assert await conn.receive() == b"HELLO"
            await trio.sleep(3601)  # heartbeats keep it alive for an hour
            assert conn.stats.pings_sent == 3600 // 25
            assert conn.stats.pongs_received == 3600 // 25
            await conn.send(b"still")
            assert await conn.receive() == b"STILL"
        nursery.cancel_scope.cancel()


async def test_replies_in_flight_survive_client_close(autojump_clock: Any) -> None:
    listener = MemoryListener()
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_listeners, echo, [listener])
        stream = await listener.connect()
        async with connect_stream(stream) as conn, trio.open_nursery() as inner:

            async def printer() -> None:
                async for data in conn:
                    got.append(data)

            inner.start_soon(printer)
            for word in (b"a", b"b", b"c"):
                await conn.send(word)
            await conn.aclose()
        assert got == [b"A", b"B", b"C"]
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------ reconnect


def test_backoff_schedule_without_jitter() -> None:
    backoff = Backoff(base=0.5, cap=8, jitter=False)
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    backoff.connection_ended(uptime=10)  # shorter than reset_after (60)
    assert backoff.next_delay() == 8
    backoff.connection_ended(uptime=60)
    assert backoff.next_delay() == 0.5


def test_backoff_full_jitter_stays_in_window() -> None:
    backoff = Backoff(base=1, cap=10, rng=random.Random(1))
    for attempt in range(10):
        window = min(10, 2**attempt)
        delay = backoff.next_delay()
        assert 0 <= delay <= window


def test_backoff_validation() -> None:
    with pytest.raises(ValueError, match="cap must be a positive number, not 0"):
        Backoff(cap=0)


async def test_reconnector_backs_off_and_reports_failures(autojump_clock: Any) -> None:
    listener = MemoryListener()
    attempts: list[float] = []
    failures: list[tuple[str, float]] = []
    server_up = trio.Event()

    async def open_stream() -> trio.abc.Stream:
        attempts.append(trio.current_time())
        if not server_up.is_set():
            raise OSError(111, "Connection refused")
        return await listener.connect()

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        reconnector = Reconnector(
            open_stream,
            backoff=Backoff(base=1, cap=4, jitter=False),
            on_failure=lambda exc, window: failures.append((str(exc), window)),
        )

        async def bring_up_later() -> None:
            await trio.sleep(10)
            await nursery.start(
                partial(
                    serve_listeners, echo, [listener], config=ServerConfig(timeout=30)
                )
            )
            server_up.set()

        nursery.start_soon(bring_up_later)
        async for attempt in reconnector:
            async with attempt as conn:
                await conn.send(b"up")
                assert await conn.receive() == b"UP"
            break
        # Delays 0, 1, 2, 4, 4 -> attempts at 0, 1, 3, 7, 11; the server is up at 10.
        assert [t - start for t in attempts] == [0, 1, 3, 7, 11]
        assert failures == [
            ("[Errno 111] Connection refused", 1.0),
            ("[Errno 111] Connection refused", 2.0),
            ("[Errno 111] Connection refused", 4.0),
            ("[Errno 111] Connection refused", 4.0),
        ]
        assert attempt.number == 1
        assert attempt.delay == 4
        nursery.cancel_scope.cancel()


async def test_reconnector_survives_a_kick_and_records_why(autojump_clock: Any) -> None:
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_listeners, echo, [listener])
        reconnector = Reconnector(
            listener.connect, backoff=Backoff(jitter=False, base=2)
        )
        ended: list[BaseException | None] = []
        async for attempt in reconnector:
            async with attempt as conn:
                if attempt.number == 1:
                    # Simulate a server that stops answering: close from its side.
                    await listener.server_streams[-1].aclose()
                    await conn.receive()
            ended.append(attempt.failure)
            if attempt.number == 2:
                break
        assert len(ended) == 2
        assert isinstance(ended[0], ConnectionClosed)
        assert ended[0].disconnect_reason is DisconnectReason.CLOSED_BY_PEER
        assert ended[1] is None
        assert reconnector.connections == 2
        nursery.cancel_scope.cancel()


async def test_reconnector_doubles_interval_after_close_4(autojump_clock: Any) -> None:
    intervals: list[float] = []

    async def open_stream() -> trio.abc.Stream:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        peer = RawPeer(server_stream)

        async def serve() -> None:
            hello = await peer.receive()
            assert isinstance(hello, Hello)
            intervals.append(hello.fields["interval"])
            await peer.send(server_hello(interval=hello.fields["interval"]))
            if len(intervals) == 1:
                await peer.send(Close(CloseCode.TOO_MANY_PINGS, "slow down"))

        nursery.start_soon(serve)
        return client_stream

    async with trio.open_nursery() as nursery:
        reconnector = Reconnector(
            open_stream,
            config=ClientConfig(interval=10),
            backoff=Backoff(jitter=False, base=1),
        )
        async for attempt in reconnector:
            async with attempt as conn:
                if attempt.number == 1:
                    await conn.receive()
            if attempt.number == 2:
                break
        assert intervals == [10, 20]
        assert reconnector.config.interval == 20
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("behind_it", [[Data(b"welcome")], [Data(b"a"), Pong(b"7")]])
async def test_frames_right_behind_the_servers_hello_are_delivered(
    autojump_clock: Any, behind_it: list[Any]
) -> None:
    # A server that greets in the same write as its HELLO: one read brings both.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    answer = Hello({"version": 1, "interval": 25.0, "timeout": 60.0, "min_interval": 1})
    pongs: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            await server_stream.receive_some()  # the HELLO
            await server_stream.send_all(b"".join(map(encode, [answer, *behind_it])))
            await trio.sleep_forever()

        nursery.start_soon(server)
        async with connect_stream(client_stream, on_pong=pongs.append) as conn:
            for frame in behind_it:
                if isinstance(frame, Data):
                    assert await conn.receive() == frame.payload
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert pongs == [f.payload for f in behind_it if isinstance(f, Pong)]


@pytest.mark.parametrize(
    ("interval", "level"), [(45.0, "WARNING"), (ClientConfig().interval, "INFO")]
)
async def test_a_granted_interval_other_than_asked_is_logged(
    autojump_clock: Any,
    caplog: pytest.LogCaptureFixture,
    interval: float,
    level: str,
) -> None:
    """The server (timeout 30 s) grants 15 s: a warning when the interval was
    chosen, INFO when it was the default (the server decides it anyway)."""
    from trio_heartbeat import HeartbeatServer, ServerConfig, connect_stream

    from .helpers import echo_upper

    listener = MemoryListener()
    server = HeartbeatServer(echo_upper, config=ServerConfig(timeout=30))
    caplog.set_level("INFO", logger="trio_heartbeat.client")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        config = ClientConfig(interval=interval)
        async with connect_stream(await listener.connect(), config=config) as conn:
            assert conn.negotiated is not None and conn.negotiated.interval == 15
        nursery.cancel_scope.cancel()
    grants = [r for r in caplog.records if "grants" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in grants] == [
        (
            level,
            f"<StapledStream> grants a heartbeat interval of 15 s, not the "
            f"{interval:g} s asked (its timeout: 30 s)",
        )
    ]
