"""Verdicts both ways: stalls of the judge, backlogs, φ accrual, chatty clients.

The rules without I/O first (the stall ledger, the φ detector, the retry
schedule), then the whole stack in virtual time, where a stall of the process
is the clock jumping while no task runs (``MockClock.jump``).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_heartbeat import (
    ClientConfig,
    Close,
    Data,
    DisconnectReason,
    HeartbeatServer,
    HeartbeatTimeout,
    Hello,
    Negotiated,
    Ping,
    Pong,
    ServerConfig,
    connect_stream,
    encode,
)
from trio_heartbeat._detector import PhiAccrual, phi, suspicion_after
from trio_heartbeat._lag import STALL_TOLERANCE, LagMonitor, StallLedger
from trio_heartbeat._schedule import Action, RetrySchedule

from .helpers import MemoryListener, RawPeer, echo_upper

# ------------------------------------------------------------ the stall ledger


def test_lateness_within_the_tolerance_is_no_stall() -> None:
    ledger = StallLedger(tolerance=0.1)
    assert ledger.observe(10.0, 10.1) == 0.0
    assert ledger.total == 0.0 and ledger.stalled_since(0.0) == 0.0


def test_a_stall_is_counted_once_whoever_sees_it() -> None:
    ledger = StallLedger(tolerance=0.1)
    assert ledger.observe(12.0, 14.0) == 2.0  # the kicker, due at 12
    assert ledger.observe(10.0, 14.0) == 2.0  # the probe, due at 10: from 10 on
    assert ledger.observe(13.0, 14.5) == 0.5  # only what was not yet counted
    assert ledger.total == 4.5
    assert ledger.stalled_since(9.0) == 4.5
    assert ledger.stalled_since(12.0) == 2.5
    assert ledger.stalled_since(14.5) == 0.0
    assert ledger.observe(20.0, 21.0) == 1.0  # another stall, later
    assert ledger.stalled_since(14.0) == 1.5


def test_a_busy_loop_is_no_stall_a_stopped_one_is() -> None:
    """Late wake-ups count as a stall only for the time the loop's thread did
    not run: busy the whole time (a burst of work, a long collection), none;
    not running (SIGSTOP, VM steal, a blocking call), all of it beyond what
    it did run."""
    cpu = [0.0]
    monitor = LagMonitor(tolerance=0.1, cpu_clock=lambda: cpu[0])
    monitor.sample(10.0)
    cpu[0] = 0.5  # on the CPU from 10.0 to 10.5
    assert monitor.observe(10.0, 10.5) == 0.0
    assert monitor.lag_max == 0.5  # still loop lag, as operators see it
    cpu[0] = 1.5  # 1 s of CPU in the 4 s since: not running for 3 s of them
    assert monitor.observe(11.0, 14.5) == pytest.approx(3.0)
    # Counted at the end of the lateness (where a connection read meanwhile
    # gets the more time).
    assert monitor.ledger.stalled_since(11.0) == pytest.approx(3.0)
    assert monitor.ledger.stalled_since(12.0) == pytest.approx(2.5)
    cpu[0] = 1.6  # 0.1 s of CPU in 2 s: stopped longer than the lateness
    assert monitor.observe(15.5, 16.5) == 1.0


def test_without_a_sample_from_before_it_the_whole_lateness_is_a_stall() -> None:
    """Nobody noted the CPU time since the wake-up was due: the loop may have
    been idle or stopped, and the lateness counts in full (never a verdict
    the judge's own absence could have caused)."""
    cpu = [0.0]
    monitor = LagMonitor(tolerance=0.1, cpu_clock=lambda: cpu[0])
    monitor.sample(12.0)
    cpu[0] = 2.0  # busy since 12.0, but the wake-up was due at 11.0
    assert monitor.observe(11.0, 14.0) == 3.0


# ------------------------------------------------------------ φ accrual


def test_phi_matches_its_threshold_and_grows_with_silence() -> None:
    for threshold in (1.0, 3.0, 8.0, 12.0):
        y = suspicion_after(threshold)
        assert phi(y, 0.0, 1.0) == pytest.approx(threshold, abs=1e-9)
    values = [phi(t / 10, 1.0, 0.1) for t in range(0, 40)]
    assert values == sorted(values)


def test_a_steady_peer_is_convicted_soon_after_its_usual_gap() -> None:
    detector = PhiAccrual(5.0, min_std=0.5, acceptable_pause=1.0)
    for _ in range(300):
        detector.gap(5.0)
    assert detector.mean == pytest.approx(5.0)
    assert detector.std == 0.5  # the floor: the gaps did not vary
    verdict = 5.0 + 1.0 + suspicion_after(8.0) * 0.5
    assert detector.verdict_after() == pytest.approx(verdict)
    assert detector.phi(verdict) == pytest.approx(8.0)
    assert detector.phi(5.0) < 0.1


def test_a_jittery_peer_gets_more_time() -> None:
    rng = random.Random(7)
    steady = PhiAccrual(5.0, min_std=0.5, acceptable_pause=1.0)
    jittery = PhiAccrual(5.0, min_std=0.5, acceptable_pause=1.0)
    for _ in range(300):
        steady.gap(5.0)
        jittery.gap(rng.uniform(2.0, 8.0))
    assert jittery.verdict_after() > steady.verdict_after() + 3


def test_no_estimate_means_no_phi_verdict() -> None:
    detector = PhiAccrual(None, min_std=0.1, acceptable_pause=1.0)
    assert detector.verdict_after() == math.inf and detector.phi(100.0) == 0.0
    detector.gap(0.2)
    assert detector.mean == 0.2 and detector.variance == 0.0
    assert detector.verdict_after() == pytest.approx(0.2 + 1.0 + 0.1 * 5.225986644)


# ------------------------------------------------------------ the retry schedule


def test_sending_is_no_proof_of_life() -> None:
    schedule = RetrySchedule(1.0, 0.5, 1)
    # The client sent at 0.9 (and keeps sending), but received last at 0.
    assert schedule.poll(0.9, 0.9, 0.0) is Action.NOTHING
    assert schedule.next_wakeup(0.9, 0.0) == 1.0
    assert schedule.poll(1.0, 0.9, 0.0) is Action.PING
    assert schedule.poll(1.5, 1.4, 0.0) is Action.RESEND
    assert schedule.poll(2.0, 1.9, 0.0) is Action.DEAD  # 1 + (1 + 1) x 0.5


def test_after_a_stall_of_its_own_the_client_probes_afresh() -> None:
    schedule = RetrySchedule(25.0, 5.0, 5)
    assert schedule.poll(25.0, 0.0, 0.0) is Action.PING
    # Asleep from 26 to 100: every resend deadline passed meanwhile.
    schedule.stalled(100.0)
    assert schedule.poll(100.0, 25.0, 0.0) is Action.RESEND  # a fresh PING
    assert schedule.next_wakeup(25.0, 0.0) == 105.0  # a full retry interval
    assert schedule.poll(104.9, 100.0, 0.0) is Action.NOTHING
    assert schedule.poll(100.2, 100.0, 100.1) is Action.NOTHING  # answered


def test_phi_can_declare_the_server_dead_before_the_retries_run_out() -> None:
    detector = PhiAccrual(None, min_std=0.1, acceptable_pause=1.0)
    for _ in range(20):
        detector.gap(0.05)  # round trips of 50 ms
    schedule = RetrySchedule(25.0, 5.0, 5, detector=detector)
    assert schedule.poll(25.0, 0.0, 0.0) is Action.PING
    verdict = 25.0 + detector.verdict_after()
    assert schedule.next_wakeup(25.0, 0.0) == pytest.approx(verdict)
    assert schedule.poll(verdict - 0.01, 25.0, 0.0) is Action.NOTHING
    assert schedule.poll(verdict, 25.0, 0.0) is Action.DEAD
    assert verdict < 25.0 + 6 * 5.0


# ------------------------------------------------------------ in virtual time


async def _server(
    nursery: trio.Nursery, config: ServerConfig, handler: Any = echo_upper
) -> tuple[HeartbeatServer, MemoryListener, list[DisconnectReason]]:
    listener = MemoryListener()
    ended: list[DisconnectReason] = []
    server = HeartbeatServer(
        handler, config=config, on_disconnect=lambda c, r: ended.append(r)
    )
    await nursery.start(server.serve_listeners, [listener])
    return server, listener, ended


async def test_a_stall_longer_than_timeout_kicks_nobody_who_kept_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server is stalled for 4 s (timeout 2). The clients' PINGs of those
    4 s sit in the socket buffers; on waking, the server reads them before it
    judges anyone. A client silent since before the stall is still kicked."""
    config = ServerConfig(timeout=2, min_interval=0.1, lag_probe_interval=None)
    async with trio.open_nursery() as nursery:
        server, listener, ended = await _server(nursery, config)
        pinging = [RawPeer(await listener.connect()) for _ in range(5)]
        for peer in pinging:
            await peer.hello(interval=1)
        silent = RawPeer(await listener.connect())
        await silent.hello(interval=1)
        for peer in pinging:
            await peer.send(Ping())
            assert await peer.receive() == Pong()
        stalled_at = trio.current_time()
        # Bytes sent during the stall land in the server's buffers...
        for stream in listener.server_streams[:5]:
            stream.receive_stream.put_data(encode(Ping()) * 13)  # type: ignore[attr-defined]
        # ... while the server runs nothing for 4 s.
        autojump_clock.jump(4)
        await trio.testing.wait_all_tasks_blocked()
        for peer in pinging:
            replies = [await peer.receive() for _ in range(13)]
            assert replies == [Pong()] * 13
        assert await silent.receive() == Close(1, "nothing received for 2 s")
        # After the stall, a grace in which the readers read what piled up.
        assert trio.current_time() == stalled_at + 4 + STALL_TOLERANCE
        await silent.expect_eof()
        await trio.testing.wait_all_tasks_blocked()
        assert ended == [DisconnectReason.HEARTBEAT_TIMEOUT]
        assert server.statistics().stalled > 0
        nursery.cancel_scope.cancel()


async def test_a_backlog_of_pings_after_a_stall_is_no_flood(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(timeout=60, min_interval=0.1, lag_probe_interval=None)
    async with trio.open_nursery() as nursery:
        _, listener, ended = await _server(nursery, config)
        peer = RawPeer(await listener.connect())
        await peer.hello(interval=1)
        await peer.send(Ping())
        assert await peer.receive() == Pong()
        # 1.5 s of PINGs every 0.3 s, delivered together.
        listener.server_streams[0].receive_stream.put_data(encode(Ping()) * 5)  # type: ignore[attr-defined]
        autojump_clock.jump(1.5)
        assert [await peer.receive() for _ in range(5)] == [Pong()] * 5
        await peer.send(Data(b"still here"))
        assert await peer.receive() == Data(b"STILL HERE")
        assert ended == []
        nursery.cancel_scope.cancel()


async def test_a_client_stalled_itself_probes_afresh_before_any_verdict(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client's process sleeps 60 s (a laptop lid) right after a PING: all
    its resend deadlines pass meanwhile. On waking it sends a fresh PING, gets
    its PONG, and declares nothing."""
    config = ServerConfig(timeout=300, lag_probe_interval=None)
    async with trio.open_nursery() as nursery:
        _, listener, _ = await _server(nursery, config)
        stream = await listener.connect()
        async with connect_stream(stream, config=ClientConfig(interval=25)) as conn:
            await trio.sleep(25)
            await trio.testing.wait_all_tasks_blocked()
            assert conn.stats.pings_sent == 1  # its PING is in flight...
            autojump_clock.jump(60)  # ... when the whole process stops
            await trio.testing.wait_all_tasks_blocked()
            assert conn.stats.pings_sent == 2  # a fresh PING after waking
            assert conn.stats.pongs_received == 2
            await conn.send(b"awake")
            assert await conn.receive() == b"AWAKE"
        nursery.cancel_scope.cancel()


async def test_a_chatty_client_notices_a_dead_server(autojump_clock: Any) -> None:
    """A line every 0.3 s; the server stops answering (it still reads). The
    client PINGs once nothing was received for interval 1, and declares the
    server dead 1 + 2 x 0.5 s after the last thing it received."""
    config = ClientConfig(interval=1, retries=1, retry_interval=0.5)
    # A scripted server that answers the HELLO and one line, then reads
    # everything and answers nothing.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream)
    answered_at: list[float] = []
    async with trio.open_nursery() as nursery:

        @nursery.start_soon
        async def frozen_server() -> None:
            assert isinstance(await peer.receive(), Hello)
            hello = Negotiated(interval=1.0, timeout=60.0, min_interval=0.1,
                               max_frame_size=1 << 20).to_hello()  # fmt: skip
            await peer.send(Hello(hello))
            first = await peer.receive()
            assert first == Data(b"line")
            await peer.send(Data(b"LINE"))
            answered_at.append(trio.current_time())
            while await peer.receive_or_eof() is not None:
                pass  # reads on, answers nothing

        with pytest.raises(HeartbeatTimeout) as dead:
            async with connect_stream(client_stream, config=config) as conn:
                while True:
                    await conn.send(b"line")
                    await trio.sleep(0.3)
        verdict_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert dead.value.reason == "2 PINGs unanswered over 1 s"
    assert verdict_at - answered_at[0] == 1 + 2 * 0.5


async def test_phi_kicks_a_steady_client_soon_after_its_usual_gap(
    autojump_clock: Any,
) -> None:
    """A client that PINGs every 5 s for a minute, then goes silent. With the
    fixed rule it would be kicked 60 s after its last PING; φ, having learnt
    the 5 s rhythm, kicks it when φ reaches 8."""
    config = ServerConfig(timeout=60, min_interval=1, detector="phi",
                          lag_probe_interval=None)  # fmt: skip
    kicked: list[tuple[float, float]] = []
    server = HeartbeatServer(
        echo_upper,
        config=config,
        on_disconnect=lambda c, r: kicked.append((c.last_sent, c.last_received)),
    )
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        peer = RawPeer(await listener.connect())
        await peer.hello(interval=5)
        (conn,) = server.connections
        for _ in range(12):
            await trio.sleep(5)
            await peer.send(Ping())
            assert await peer.receive() == Pong()
        detector = conn.session.detector
        assert detector is not None and detector.mean == pytest.approx(5.0)
        expected = detector.verdict_after()
        assert 5 < expected < 20  # well before the fixed 60 s
        assert await peer.receive() == Close(
            1, f"nothing received for {expected:.1f} s (phi 8.0)"
        )
        await peer.expect_eof()
        await trio.testing.wait_all_tasks_blocked()
        ((close_at, last_received),) = kicked
        assert close_at - last_received == pytest.approx(expected)
        nursery.cancel_scope.cancel()
