"""ReadPause: a blocked reader kept asleep through input, on real sockets."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_heartbeat import _readpause
from trio_heartbeat._readpause import ReadPause

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="pauses only Trio's epoll (Linux)"
)

CUSHION = 0.05  # real seconds for socket events to arrive and be handled


async def _reader(sock: trio.socket.SocketType, woke: list[str]) -> None:
    try:
        await trio.lowlevel.wait_readable(sock)
        woke.append("readable")
    except trio.ClosedResourceError:
        woke.append("closed")


@asynccontextmanager
async def _blocked_reader(
    woke: list[str],
) -> AsyncIterator[tuple[trio.socket.SocketType, trio.socket.SocketType]]:
    """A socket pair whose first end has a task blocked reading it (until
    the block ends, and its nursery with it)."""
    a, b = trio.socket.socketpair()
    with a, b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reader, a, woke)
            await trio.testing.wait_all_tasks_blocked()
            yield a, b


async def test_a_paused_reader_sleeps_through_input_until_resumed() -> None:
    woke: list[str] = []
    with trio.fail_after(10):
        async with _blocked_reader(woke) as (a, b):
            pause = ReadPause()
            assert pause.pause(a.fileno())  # this Trio has what it needs
            assert len(pause) == 1
            await b.send(b"x")
            await trio.testing.wait_all_tasks_blocked(CUSHION)
            assert woke == []
            pause.resume()
            assert len(pause) == 0
        assert woke == ["readable"]  # once its nursery has waited for it


async def test_a_paused_reader_is_cancelled_or_woken_by_a_close_as_usual() -> None:
    woke: list[str] = []
    with trio.fail_after(10):
        a, b = trio.socket.socketpair()
        c, d = trio.socket.socketpair()
        with b, d:
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def cancellable() -> None:
                    with scope:
                        await _reader(c, woke)

                nursery.start_soon(_reader, a, woke)
                nursery.start_soon(cancellable)
                await trio.testing.wait_all_tasks_blocked()
                pause = ReadPause()
                assert pause.pause(a.fileno())
                assert pause.pause(c.fileno())
                a.close()  # Trio's notify_closing wakes the reader
                await trio.testing.wait_all_tasks_blocked()
                assert woke == ["closed"]
                scope.cancel()
            assert scope.cancelled_caught
            pause.resume()  # both gone: nothing to put back, no error
            c.close()
    assert woke == ["closed"]


async def test_resume_wakes_the_oldest_first_or_the_one_named() -> None:
    woke: list[str] = []
    with trio.fail_after(10):
        pairs = [trio.socket.socketpair() for _ in range(3)]
        try:
            async with trio.open_nursery() as nursery:
                for n, (ours, _) in enumerate(pairs):

                    async def read(ours: trio.socket.SocketType, n: int) -> None:
                        await trio.lowlevel.wait_readable(ours)
                        woke.append(f"reader {n}")

                    nursery.start_soon(read, ours, n)
                await trio.testing.wait_all_tasks_blocked()
                pause = ReadPause()
                for n, (ours, theirs) in enumerate(pairs):
                    assert pause.pause(ours.fileno(), until=10.0 + n)
                    await theirs.send(b"x")
                assert pause.next_until == 10.0
                pause.resume(due=9.0)  # none due yet
                await trio.testing.wait_all_tasks_blocked(CUSHION)
                assert woke == []
                pause.resume_fd(pairs[2][0].fileno())
                await trio.testing.wait_all_tasks_blocked(CUSHION)
                assert woke == ["reader 2"]
                pause.resume_fd(pairs[2][0].fileno())  # not paused any more
                pause.resume(5, due=10.5)  # only reader 0's is due
                await trio.testing.wait_all_tasks_blocked(CUSHION)
                assert woke == ["reader 2", "reader 0"]
                assert len(pause) == 1
                assert pause.next_until == 11.0
                pause.resume()
        finally:
            for ours, theirs in pairs:
                ours.close()
                theirs.close()
    assert woke == ["reader 2", "reader 0", "reader 1"]


async def test_no_pause_without_a_lone_reader() -> None:
    """Nobody waiting, a writer waiting, or already paused: refused."""
    woke: list[str] = []
    with trio.fail_after(10):
        a, b = trio.socket.socketpair()
        with a, b:
            pause = ReadPause()
            assert not pause.pause(a.fileno())  # nobody waits on it
            while True:  # fill the send buffer: a writer must wait
                try:
                    os.write(a.fileno(), b"x" * 65536)
                except BlockingIOError:
                    break
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.lowlevel.wait_writable, a)
                nursery.start_soon(_reader, a, woke)
                await trio.testing.wait_all_tasks_blocked()
                assert not pause.pause(a.fileno())  # a writer waits too
                nursery.cancel_scope.cancel()
            assert len(pause) == 0


@pytest.mark.parametrize("missing", ["_NEEDED", "_WAITERS"])
async def test_without_trios_epoll_internals_nothing_is_paused(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Another platform or another Trio (no epoll manager as we know it, or
    no per-descriptor record as we know it): pause() says no, readers wake."""
    monkeypatch.setattr(_readpause, missing, ("_no_such_attribute",))
    woke: list[str] = []
    with trio.fail_after(10):
        async with _blocked_reader(woke) as (a, b):
            assert not ReadPause().pause(a.fileno())
            await b.send(b"x")
    assert woke == ["readable"]
