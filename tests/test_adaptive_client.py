"""The adaptive client over a path that forgets idle flows, in virtual time.

``ForgetfulPath`` stands in for a NAT (the real one is in tests/test_nat.py):
a flow idle for ``limit`` seconds or more is forgotten, after which nothing
passes either way, without a word to either end. The server is the real one,
over memory streams.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_heartbeat import (
    Backoff,
    ClientConfig,
    ConnectionClosed,
    DisconnectReason,
    HeartbeatServer,
    HeartbeatTimeout,
    IntervalChange,
    IntervalLearner,
    MemoryIntervalStore,
    Reconnector,
    ServerConfig,
    connect_stream,
)
from trio_heartbeat._client import _hello_fields

from .helpers import MemoryListener, echo_upper


class ForgetfulStream(trio.abc.Stream):
    """The client's end of a path through a NAT that forgets a flow idle for
    ``limit`` seconds: from then on, bytes either way vanish."""

    def __init__(self, inner: trio.abc.Stream, limit: float) -> None:
        self.inner = inner
        self.limit = limit
        self.last_packet = trio.current_time()
        self.forgotten_at: float | None = None

    def _alive(self) -> bool:
        now = trio.current_time()
        if self.forgotten_at is None and now - self.last_packet >= self.limit:
            self.forgotten_at = now
        if self.forgotten_at is None:
            self.last_packet = now
        return self.forgotten_at is None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._alive():
            await self.inner.send_all(data)
        else:
            await trio.lowlevel.checkpoint()  # into the void

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            data = await self.inner.receive_some(max_bytes)
            if not data or self._alive():
                return data

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self.inner.aclose()


SERVER = ServerConfig(timeout=60, min_interval=0.1, lag_probe_interval=None)
CLIENT = ClientConfig(interval=1.0, retries=1, retry_interval=0.5)


async def test_learns_the_limit_of_a_forgetful_path_and_holds_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """NAT limit 5 s; steps of 50 % from 1 s, 2 idle periods each: 1, 1.5,
    2.25 and 3.375 s hold, 5.06 s kills the link (declared dead 1 s later), the
    client reconnects and settles at 3.375 x 0.9 = 3.04 s, then holds it."""
    listener = MemoryListener()
    changes: list[tuple[float, IntervalChange]] = []
    learner = IntervalLearner(
        1.0,
        step=0.5,
        confirmations=2,
        margin=0.1,
        on_change=lambda c: changes.append((trio.current_time(), c)),
    )
    paths: list[ForgetfulStream] = []

    async def open_path() -> trio.abc.Stream:
        path = ForgetfulStream(await listener.connect(), limit=5.0)
        paths.append(path)
        return path

    server = HeartbeatServer(echo_upper, config=SERVER)
    attempts = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        loop = Reconnector(
            open_path, config=CLIENT, backoff=Backoff(jitter=False), adaptive=learner
        )
        assert loop.learner is learner
        async for attempt in loop:
            async with attempt as conn:
                assert conn.learner is learner
                if attempt.number == 1:
                    assert conn.stats.interval == 1.0
                    assert conn.stats.learned_interval is None
                    await trio.sleep_forever()  # until the path is forgotten
                start = trio.current_time()
                await trio.sleep(20 * learner.interval)  # it holds
                assert conn.stats.interval == pytest.approx(3.0375)
                assert conn.stats.learned_interval == pytest.approx(3.0375)
                assert conn.stats.pongs_received >= 19
                held_for = trio.current_time() - start
            attempts.append(attempt)
            if attempt.number == 2:
                break
        nursery.cancel_scope.cancel()
    assert held_for == pytest.approx(20 * 3.0375)
    assert [(c.old, c.new, c.reason) for _, c in changes] == [
        (1.0, 1.5, "longer"),
        (1.5, 2.25, "longer"),
        (2.25, 3.375, "longer"),
        (3.375, pytest.approx(5.0625), "longer"),
        (pytest.approx(5.0625), pytest.approx(3.0375), "settled"),
    ]
    # The first link died once, and only at its first 5.06 s idle period.
    assert paths[0].forgotten_at is not None and len(paths) == 2
    assert paths[1].forgotten_at is None
    assert learner.too_long == pytest.approx(5.0625, abs=0.01)
    assert learner.held == pytest.approx(3.375, abs=0.01)
    assert isinstance(attempts[0].failure, HeartbeatTimeout)
    assert attempts[1].failure is None


async def test_the_hello_asks_for_the_learners_maximum() -> None:
    config = ClientConfig(interval=2.0)
    assert _hello_fields(config)["interval"] == 2.0
    assert _hello_fields(config, IntervalLearner(2.0, 40.0))["interval"] == 40.0
    # No maximum but the server's: ask nothing, get timeout / 2.
    assert "interval" not in _hello_fields(config, IntervalLearner(2.0))


async def test_the_server_caps_the_learner_at_half_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryListener()
    config = ServerConfig(timeout=8, min_interval=0.1, lag_probe_interval=None)
    server = HeartbeatServer(echo_upper, config=config)
    learner = IntervalLearner(1.0, step=1.0, confirmations=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        stream = await listener.connect()
        async with connect_stream(stream, config=CLIENT, adaptive=learner) as conn:
            assert conn.negotiated is not None
            assert conn.negotiated.interval == 4.0
            await trio.sleep(30)
            assert learner.interval == 4.0 and learner.settled
            assert conn.stats.learned_interval == 4.0
            assert server.statistics().connections == 1  # never kicked
        nursery.cancel_scope.cancel()


async def test_what_was_learned_is_kept_per_network_and_restored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryIntervalStore()
    listener = MemoryListener()
    server = HeartbeatServer(echo_upper, config=SERVER)

    async def run(key: str, limit: float, seconds: float) -> IntervalLearner:
        learner = IntervalLearner(
            1.0, step=1.0, confirmations=1, margin=0.0, store=store, key=key
        )
        loop = Reconnector(
            lambda: _forgetful(listener, limit), config=CLIENT, adaptive=learner
        )
        with trio.move_on_after(seconds):
            async for attempt in loop:
                async with attempt:
                    await trio.sleep_forever()
        return learner

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        home = await run("wifi:home", limit=5.0, seconds=60)
        assert home.interval == 4.0 and home.settled
        saved = await store.load("wifi:home")
        assert saved is not None
        assert (saved["interval"], saved["phase"], saved["too_long"]) == (
            4.0,
            "settled",
            pytest.approx(8.0, abs=0.01),
        )
        # Next start on the same network: begins at 4 s, settled.
        again = await run("wifi:home", limit=5.0, seconds=1)
        assert (again.interval, again.settled) == (4.0, True)
        # Another network learns for itself.
        lte = await run("lte", limit=3.0, seconds=60)
        assert lte.interval == 2.0
        assert await store.load("wifi:home") == saved
        nursery.cancel_scope.cancel()


async def _forgetful(listener: MemoryListener, limit: float) -> trio.abc.Stream:
    return ForgetfulStream(await listener.connect(), limit)


async def test_a_fixed_interval_above_the_limit_dies_every_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryListener()
    server = HeartbeatServer(echo_upper, config=SERVER)
    failures = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        fixed = ClientConfig(interval=6.0, retries=1, retry_interval=0.5)
        loop = Reconnector(
            lambda: _forgetful(listener, 5.0),
            config=fixed,
            backoff=Backoff(base=0.5, jitter=False),
        )
        async for attempt in loop:
            async with attempt:
                await trio.sleep_forever()
            failures.append((trio.current_time(), attempt.failure))
            if len(failures) == 3:
                break
        nursery.cancel_scope.cancel()
    # Each link is forgotten at its first 6 s idle period and declared dead
    # 1 s later; reconnects after 0.5 s, then 1 s of backoff.
    assert all(isinstance(f, HeartbeatTimeout) for _, f in failures)
    assert [t for t, _ in failures] == [7.0, 14.5, 22.5]


class ClosingStream(ForgetfulStream):
    """A path through a proxy that closes flows idle for ``limit`` seconds
    (nginx's ``proxy_read_timeout``): the client reads the end of the stream."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            with trio.move_on_at(self.last_packet + self.limit):
                data = await self.inner.receive_some(max_bytes)
                if not data or self._alive():
                    return data
                continue
            self.forgotten_at = trio.current_time()
            return b""


async def test_a_proxy_that_closes_idle_flows_is_learned_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The proxy closes the flow 5 s into the 5.06 s idle period, before its
    PING: 5 s idle was too long; settled at min(3.375, 5 / 1.5) x 0.9 = 3 s."""
    listener = MemoryListener()
    learner = IntervalLearner(1.0, step=0.5, confirmations=2, margin=0.1)
    server = HeartbeatServer(echo_upper, config=SERVER)

    async def open_path() -> trio.abc.Stream:
        return ClosingStream(await listener.connect(), limit=5.0)

    failures = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        loop = Reconnector(open_path, config=CLIENT, adaptive=learner)
        async for attempt in loop:
            async with attempt:
                await trio.sleep(60)
            failures.append(attempt.failure)
            if attempt.number == 2:
                break
        nursery.cancel_scope.cancel()
    print(learner)
    assert learner.settled and learner.interval == pytest.approx(3.0)
    assert learner.too_long == pytest.approx(5.0)
    assert isinstance(failures[0], ConnectionClosed)
    assert failures[0].code is None  # no CLOSE frame: the stream just ended
    assert failures[0].disconnect_reason is DisconnectReason.CLOSED_BY_PEER
    assert failures[1] is None  # 60 s at 3 s: held
