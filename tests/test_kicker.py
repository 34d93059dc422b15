"""The kicker's order of work when many connections are due at once (the
server's tests cover each kick's rule and timing)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_heartbeat._kicker import CLEANUPS_WHILE_BEHIND, KICKS_PER_PASS, Kicker
from trio_heartbeat._lag import LagMonitor

TIMEOUT = 60.0


@attrs.define(eq=False)
class FakeSession:
    def silence_allowed(self, timeout: float) -> float:
        return timeout


@attrs.define(eq=False)
class FakeConnection:
    """What the kicker reads of a connection: silent since ``last_received``,
    nothing unread in the kernel; ``kicked`` is set by the kick."""

    last_received: float
    session: FakeSession = attrs.Factory(FakeSession)
    closed: bool = False
    replying: bool = False
    kicked: trio.Event = attrs.Factory(trio.Event)

    def unread_input(self) -> int:
        return 0


async def _burst(clients: int, log: list[str]) -> Kicker:
    """``clients`` silent since the same instant, each ending as the server's
    connections do: woken by its kick, it waits its cleanup turn, then leaves
    the live set."""
    live: set[Any] = set()

    def kick(conn: Any) -> bool:
        log.append("kick")
        conn.kicked.set()
        return False

    kicker = Kicker(TIMEOUT, 1.0, kick, live)

    async def connection(conn: FakeConnection) -> None:
        await conn.kicked.wait()
        if kicker.busy:
            with trio.CancelScope(shield=True):
                await kicker.cleanup_turn()
        log.append("cleanup")
        live.discard(conn)
        kicker.connection_ended()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kicker.run)
        for _ in range(clients):
            conn = FakeConnection(trio.current_time())
            live.add(conn)
            kicker.watch(conn)  # type: ignore[arg-type]
            nursery.start_soon(connection, conn)
        await trio.testing.wait_all_tasks_blocked()
        kicker.stop()
    return kicker


async def test_a_burst_of_kicks_comes_before_the_cleanups(autojump_clock: Any) -> None:
    """300 due at once take three passes of the kicker. While kicks are
    overdue, only a few kicked connections clean up between the passes; the
    rest wait until the last kick is out, then all clean up."""
    clients = 300
    assert 2 * KICKS_PER_PASS < clients < 3 * KICKS_PER_PASS
    log: list[str] = []
    start = trio.current_time()
    kicker = await _burst(clients, log)
    assert log.count("kick") == clients
    assert log.count("cleanup") == clients
    last_kick = len(log) - 1 - log[::-1].index("kick")
    # Pass 1 ends behind (nobody waits yet); pass 2 ends behind and lets
    # CLEANUPS_WHILE_BEHIND through, which run in the round of pass 3 (before
    # or after it: Trio's order within a round is its own). Without the turns,
    # all of pass 1's would clean up before pass 3.
    assert log[:last_kick].count("cleanup") <= CLEANUPS_WHILE_BEHIND
    assert kicker.lateness.count == clients
    assert kicker.lateness.max == 0.0  # virtual time: every kick at its deadline
    assert trio.current_time() - start == TIMEOUT
    assert not kicker.busy


async def test_a_few_kicks_clean_up_without_waiting_for_each_other(
    autojump_clock: Any,
) -> None:
    """Under one pass: the kicks come first, then every cleanup, each in the
    kicker's next round."""
    log: list[str] = []
    await _burst(KICKS_PER_PASS // 2, log)
    assert log == ["kick"] * (KICKS_PER_PASS // 2) + ["cleanup"] * (KICKS_PER_PASS // 2)


async def test_cleanups_waiting_when_the_kicker_ends_all_go_on(
    autojump_clock: Any,
) -> None:
    """A kicker cancelled mid-burst lets every waiting cleanup through (they
    wait shielded: left waiting, they would hang the server's shutdown)."""
    live: set[Any] = set()
    waiting: list[FakeConnection] = []
    cleaned: list[FakeConnection] = []
    conns = [FakeConnection(0.0) for _ in range(3 * KICKS_PER_PASS)]

    def kick(conn: Any) -> bool:
        conn.kicked.set()
        return False

    kicker = Kicker(TIMEOUT, 1.0, kick, live)

    idle: list[trio.CancelScope] = []

    async def connection(conn: FakeConnection) -> None:
        with trio.CancelScope() as scope:
            idle.append(scope)
            await conn.kicked.wait()
        if conn.kicked.is_set() and kicker.busy:
            waiting.append(conn)
            # Shielded as in the server, but bounded: a failure, not a hang.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                await kicker.cleanup_turn()
                cleaned.append(conn)

    with trio.fail_after(TIMEOUT + 10):
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kicker.run)
                for conn in conns:
                    live.add(conn)
                    kicker.watch(conn)  # type: ignore[arg-type]
                    connections.start_soon(connection, conn)
                await trio.sleep(TIMEOUT)
                for _ in range(10):
                    if len(waiting) > len(cleaned):
                        break
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()  # the kicker, with some waiting
            for scope in idle:  # those never kicked
                scope.cancel()
    assert waiting
    assert sorted(map(id, cleaned)) == sorted(map(id, waiting))
    assert not kicker.busy


async def test_a_backlog_of_kicks_is_no_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """300 due at once, each kick taking 1 ms: the last is out 300 ms after
    its deadline. Behind its deadlines, the kicker is not *waking* late, and
    records no stall (which would push every deadline behind it back, over
    and over while the backlog lasts, and hide the lateness from
    ``lateness``, measured against those deadlines). The CPU clock stands
    still here, so any lateness of a wake-up would count in full."""
    clients = 300
    live: set[Any] = set()
    kicked_at: list[float] = []

    def kick(conn: Any) -> bool:
        autojump_clock.jump(0.001)
        kicked_at.append(trio.current_time())
        live.discard(conn)
        return False

    monitor = LagMonitor(cpu_clock=lambda: 0.0)
    kicker = Kicker(TIMEOUT, 1.0, kick, live, monitor=monitor)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(kicker.run)
        for _ in range(clients):
            conn = FakeConnection(start)
            live.add(conn)
            kicker.watch(conn)  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        kicker.stop()
    assert monitor.ledger.total == 0.0
    assert len(kicked_at) == clients
    assert kicked_at[-1] - start == pytest.approx(TIMEOUT + clients * 0.001)
    assert kicker.lateness.max == pytest.approx(clients * 0.001)
