"""A client and a server in virtual time, driven by hypothesis-generated sequences
of operations (send, advance the clock, cut the link, close). After every step the
liveness verdicts are checked against the documented bounds (docs/howto.rst):

* the server kicks a client exactly ``timeout`` after the last frame it received;
* the client declares the server dead no earlier than (retries + 1) x
  retry_interval after the link died, and no later than interval + (retries + 1)
  x retry_interval after its last send;
* while the link is up, nobody is kicked and nobody is declared dead.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.01, 45)),
        st.tuples(st.just("send"), st.binary(max_size=20)),
        st.tuples(st.just("cut"), st.none()),
        st.tuples(st.just("close"), st.none()),
    ),
    max_size=25,
)


async def scenario(ops: list[tuple[str, Any]]) -> None:
    link = Link()
    listener = CutListener()
    kicks: list[tuple[float, DisconnectReason]] = []
    client_end: list[tuple[float, str]] = []
    last_send = 0.0
    commands_in, commands_out = trio.open_memory_channel[tuple[str, Any]](0)

    async def client() -> None:
        try:
            stream = await listener.connect_over(link)
            async with connect_stream(stream, config=CLIENT) as conn:
                async for command, payload in commands_out:
                    if command == "close":
                        break
                    await conn.send(payload or b"x")
            client_end.append((trio.current_time(), "closed"))
        except HeartbeatTimeout:
            client_end.append((trio.current_time(), "dead"))

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_listeners, consume, [listener], config=SERVER,
                on_disconnect=lambda c, r: kicks.append((trio.current_time(), r)),
            )
        )  # fmt: skip
        nursery.start_soon(client)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        closed_at: float | None = None

        def check() -> None:
            now = trio.current_time()
            if link.cut_at is None:
                if closed_at is None:
                    assert kicks == [] and client_end == [], (kicks, client_end)
                return
            # The link is dead: verdicts come exactly at their bounds.
            kick_at = link.last_to_server + TIMEOUT
            if now < kick_at:
                assert kicks == []
            else:
                assert kicks == [(kick_at, DisconnectReason.HEARTBEAT_TIMEOUT)]
            if closed_at is not None and closed_at <= link.cut_at + DEAD_AFTER:
                return  # closed before any verdict could be due
            if client_end and client_end[0][1] == "dead":
                dead_at = client_end[0][0]
                assert dead_at >= link.cut_at + DEAD_AFTER, (dead_at, link.cut_at)
                assert dead_at <= max(link.cut_at, last_send) + CLIENT.detection_bound
            elif closed_at is None:
                assert now < max(link.cut_at, last_send) + CLIENT.detection_bound

        for op, value in ops:
            if op == "advance":
                await trio.sleep(value)
            elif client_end or closed_at is not None:
                continue
            elif op == "send":
                await commands_in.send(("send", value))
                last_send = trio.current_time()
            elif op == "cut" and link.cut_at is None:
                link.cut_at = trio.current_time()
            elif op == "close":
                await commands_in.send(("close", None))
                closed_at = trio.current_time()
            await trio.testing.wait_all_tasks_blocked()
            check()
        # Let every pending verdict fall due, then check the final state.
        await trio.sleep(TIMEOUT + CLIENT.detection_bound + 1)
        check()
        if link.cut_at is None:
            if closed_at is None:
                assert kicks == [] and client_end == []
            else:
                assert kicks == [(closed_at, DisconnectReason.CLOSED_BY_PEER)]
                assert client_end == [(closed_at, "closed")]
        elif closed_at is None:
            assert client_end and client_end[0][1] == "dead"
        assert trio.current_time() > start
        nursery.cancel_scope.cancel()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_liveness_verdicts_match_the_documented_bounds(
    ops: list[tuple[str, Any]],
) -> None:
    trio.run(scenario, ops, clock=trio.testing.MockClock(autojump_threshold=0))
