"""A stateful hypothesis test: a client and a server in virtual time, driven by
rules (send, advance the clock, cut the link, close) in any order. After every
step the liveness verdicts are checked against the documented bounds
(docs/howto.rst):

* the server kicks a client (writes CLOSE 1) exactly ``timeout`` after the last
  bytes it received, and reports the disconnect ``close_timeout`` later (its wait
  for the client's answer, which cannot come over a cut link);
* the client declares the server dead no earlier than (retries + 1) x
  retry_interval after the link died, and no later than interval + (retries + 1)
  x retry_interval after it (sending is no proof of life: a client that keeps
  sending still PINGs once nothing was received for interval);
* while the link is up, nobody is kicked and nobody is declared dead.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from trio_heartbeat import (
    ClientConfig,
    DisconnectReason,
    HeartbeatConnection,
    HeartbeatTimeout,
    ServerConfig,
    connect_stream,
    serve_listeners,
)

from .helpers import MemoryListener

TIMEOUT = 30.0
CLIENT = ClientConfig(interval=10, retries=2, retry_interval=3)
SERVER = ServerConfig(timeout=TIMEOUT, min_interval=1)
DEAD_AFTER = (CLIENT.retries + 1) * CLIENT.retry_interval
#: Float rounding between two ways of adding up the same seconds, nothing more.
EPS = 1e-9


@attrs.define
class Link:
    """Both directions of one connection; once cut, bytes vanish (no FIN, no RST)."""

    cut_at: float | None = None
    #: When the last client byte reached the server.
    last_to_server: float = -math.inf

    def direction(
        self, to_server: bool
    ) -> tuple[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
        send = trio.testing.MemorySendStream()
        receive = trio.testing.MemoryReceiveStream()

        def pump() -> None:
            try:
                data = send.get_data_nowait()
            except trio.WouldBlock:
                return
            if self.cut_at is not None:
                return
            if not data:
                receive.put_eof()
                return
            if to_server:
                self.last_to_server = trio.current_time()
            receive.put_data(data)

        async def async_pump() -> None:
            pump()

        send.send_all_hook = async_pump
        send.close_hook = pump
        return send, receive

    def streams(self) -> tuple[trio.StapledStream[Any, Any], trio.abc.Stream]:
        up_send, up_receive = self.direction(to_server=True)
        down_send, down_receive = self.direction(to_server=False)
        return (
            trio.StapledStream(up_send, down_receive),
            trio.StapledStream(down_send, up_receive),
        )


class CutListener(MemoryListener):
    async def connect_over(self, link: Link) -> trio.StapledStream[Any, Any]:
        client, server = link.streams()
        await self._send.send(server)
        return client


async def consume(conn: HeartbeatConnection) -> None:
    async for _ in conn:
        pass


class Pair:
    """The client and the server, in a Trio run of their own (on a thread, with a
    manual MockClock) that the state machine drives one step at a time."""

    def __init__(self, clock: trio.testing.MockClock) -> None:
        self.clock = clock
        self.link = Link()
        # (reported at, reason, CLOSE written at)
        self.kicks: list[tuple[float, DisconnectReason, float]] = []
        self.client_end: list[tuple[float, str]] = []
        self.last_send = 0.0
        self.closed_at: float | None = None
        self.commands_in, self.commands_out = trio.open_memory_channel[tuple[str, Any]](
            0
        )
        self.finished = trio.Event()

    async def main(self, ready: threading.Event) -> None:
        self.token = trio.lowlevel.current_trio_token()
        listener = CutListener()

        async def client() -> None:
            try:
                stream = await listener.connect_over(self.link)
                async with connect_stream(stream, config=CLIENT) as conn:
                    async for command, payload in self.commands_out:
                        if command == "close":
                            break
                        await conn.send(payload or b"x")
                self.client_end.append((trio.current_time(), "closed"))
            except HeartbeatTimeout:
                self.client_end.append((trio.current_time(), "dead"))

        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_listeners, consume, [listener], config=SERVER,
                    on_disconnect=lambda c, r: self.kicks.append(
                        (trio.current_time(), r, c.last_sent)
                    ),
                )
            )  # fmt: skip
            nursery.start_soon(client)
            await trio.testing.wait_all_tasks_blocked()
            ready.set()
            await self.finished.wait()
            nursery.cancel_scope.cancel()

    # ---- steps, each run in the Trio thread

    async def advance(self, seconds: float) -> None:
        """Move the clock deadline by deadline, letting each one be handled."""
        end = trio.current_time() + seconds
        while True:
            await trio.testing.wait_all_tasks_blocked()
            wait = trio.lowlevel.current_statistics().seconds_to_next_deadline
            if trio.current_time() + wait > end:
                break
            self.clock.jump(max(0.0, wait))
        self.clock.jump(end - trio.current_time())
        await trio.testing.wait_all_tasks_blocked()

    def _active(self) -> bool:
        return not self.client_end and self.closed_at is None

    async def send(self, payload: bytes) -> None:
        if self._active():
            await self.commands_in.send(("send", payload))
            self.last_send = trio.current_time()
            await trio.testing.wait_all_tasks_blocked()

    async def cut(self) -> None:
        if self._active() and self.link.cut_at is None:
            self.link.cut_at = trio.current_time()

    async def close(self) -> None:
        if self._active():
            await self.commands_in.send(("close", None))
            self.closed_at = trio.current_time()
            await trio.testing.wait_all_tasks_blocked()

    async def check(self) -> None:
        """The verdicts so far against the documented bounds."""
        now = trio.current_time()
        link, kicks, client_end = self.link, self.kicks, self.client_end
        if link.cut_at is None:
            if self.closed_at is None:
                assert kicks == [] and client_end == [], (kicks, client_end)
            else:
                closed = self.closed_at
                assert kicks == [(closed, DisconnectReason.CLOSED_BY_PEER, closed)]
                assert client_end == [(closed, "closed")]
            return
        # The link is dead: the server's verdict comes exactly at its bound.
        kick_at = link.last_to_server + TIMEOUT
        reported_at = kick_at + SERVER.close_timeout
        if now < reported_at:
            assert kicks == []
        else:
            assert kicks == [(reported_at, DisconnectReason.HEARTBEAT_TIMEOUT, kick_at)]
        if self.closed_at is not None and self.closed_at <= link.cut_at + DEAD_AFTER:
            return  # closed before the client's verdict could be due
        # Whatever the client keeps sending, it PINGs once nothing was received
        # for interval, so its verdict comes within detection_bound of the cut.
        # EPS: the client sums its retry intervals, the test adds the bound.
        latest = link.cut_at + CLIENT.detection_bound + EPS
        if client_end and client_end[0][1] == "dead":
            dead_at = client_end[0][0]
            assert link.cut_at + DEAD_AFTER - EPS <= dead_at <= latest, (dead_at, link)
        elif self.closed_at is None:
            assert now < latest, (now, latest)

    async def finish(self) -> None:
        """Let every pending verdict fall due; check the final state."""
        await self.advance(TIMEOUT + CLIENT.detection_bound + SERVER.close_timeout + 1)
        await self.check()
        if self.link.cut_at is not None and self.closed_at is None:
            assert self.client_end and self.client_end[0][1] == "dead"


class LivenessMachine(RuleBasedStateMachine):
    """Send, cut the link, advance the clock, close: in any order hypothesis
    likes, the verdicts hold after every step and at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(trio.testing.MockClock())
        self.failure: BaseException | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), self.failure

    def _run(self, ready: threading.Event) -> None:
        try:
            trio.run(self.pair.main, ready, clock=self.pair.clock)
        except BaseException as exc:
            self.failure = exc
            ready.set()

    def _step(self, step: Callable[..., Awaitable[None]], *args: Any) -> None:
        trio.from_thread.run(step, *args, trio_token=self.pair.token)

    @rule(seconds=st.floats(0.01, 45))
    def advance(self, seconds: float) -> None:
        self._step(self.pair.advance, seconds)

    @rule(payload=st.binary(max_size=20))
    def send(self, payload: bytes) -> None:
        self._step(self.pair.send, payload)

    @rule()
    def cut(self) -> None:
        self._step(self.pair.cut)

    @rule()
    def close(self) -> None:
        self._step(self.pair.close)

    @invariant()
    def verdicts_match_the_bounds(self) -> None:
        self._step(self.pair.check)

    def teardown(self) -> None:
        try:
            self._step(self.pair.finish)
        finally:
            trio.from_thread.run_sync(
                self.pair.finished.set, trio_token=self.pair.token
            )
            self.thread.join(10)
        if self.failure is not None:
            raise self.failure


LivenessMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=25, deadline=None
)
TestLiveness = LivenessMachine.TestCase
