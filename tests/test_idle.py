from __future__ import annotations

import math

import pytest
import trio

from trio_heartbeat import IdleWatchdog, idle_timeout


async def test_fires_after_timeout_without_touch(
    autojump_clock: trio.abc.Clock,
) -> None:
    start = trio.current_time()
    with idle_timeout(60) as watchdog:
        await trio.sleep_forever()
    assert watchdog.fired
    assert trio.current_time() - start == 60


async def test_touch_pushes_deadline(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    with idle_timeout(10) as watchdog:
        for _ in range(5):
            await trio.sleep(9)
            watchdog.touch()
        assert watchdog.deadline == start + 45 + 10
        await trio.sleep_forever()
    assert watchdog.fired
    assert trio.current_time() - start == 55


async def test_not_fired_when_block_ends(autojump_clock: trio.abc.Clock) -> None:
    with idle_timeout(10) as watchdog:
        await trio.sleep(5)
    assert not watchdog.fired


async def test_outer_cancel_is_not_a_firing(autojump_clock: trio.abc.Clock) -> None:
    with trio.move_on_after(5):
        with idle_timeout(10) as watchdog:
            await trio.sleep_forever()
    assert not watchdog.fired


async def test_disabled_never_fires(autojump_clock: trio.abc.Clock) -> None:
    with trio.move_on_after(10_000) as outer:
        with idle_timeout(10, enabled=False) as watchdog:
            watchdog.touch()
            assert watchdog.deadline == math.inf
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert not watchdog.fired


def test_timeout_validated() -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number, not 0"):
        IdleWatchdog(0)
