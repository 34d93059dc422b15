"""RedisPresence against a real redis-server: two nodes sharing it, the
duplicate rule across nodes, a node that stops refreshing, Redis restarted
empty, Redis down. Real time (the TTLs run on Redis's clock), each test
bounded by fail_after."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any

import pytest
import trio

from trio_heartbeat import (
    JoinRefused,
    LeaveReason,
    PresenceEvent,
    PresenceSession,
    PresenceUnavailable,
    RedisPresence,
)

from .redis_server import RedisServer, eventually, redis_server

__all__ = ["redis_server"]  # the fixture, used by name


def _session(client_id: str, node: str, number: int = 0) -> PresenceSession:
    return PresenceSession(
        session_id=f"{node}-{client_id}-{number}",
        client_id=client_id,
        node=node,
        peer=f"127.0.0.1:{40000 + number}",
        since=time.time(),
        meta={"n": number},
    )


async def _collect(store: RedisPresence, into: list[PresenceEvent],
                   task_status: Any = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
    async with store.watch() as events:
        task_status.started()
        async for event in events:
            into.append(event)


async def test_two_nodes_share_one_list(redis_server: RedisServer) -> None:
    a = RedisPresence(redis_server.url, node="a", ttl=5)
    b = RedisPresence(redis_server.url, node="b", ttl=5)
    replaced_on_a: list[str] = []
    seen: list[PresenceEvent] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run, replaced_on_a.append)
            await nursery.start(b.run, lambda sid: None)
            await nursery.start(_collect, b, seen)
            alice = _session("alice", "a", 1)
            await a.join(alice, "replace")
            await b.join(_session("bob", "b", 2), "allow")
            listed = await b.online()
            assert [(s.client_id, s.node, s.peer, s.meta) for s in listed] == [
                ("alice", "a", "127.0.0.1:40001", {"n": 1}),
                ("bob", "b", "127.0.0.1:40002", {"n": 2}),
            ]
            assert await b.sessions_of("alice") == [alice]
            assert await a.is_online("bob") and not await a.is_online("carol")
            # reject: refused, whichever node holds the older session
            with pytest.raises(JoinRefused, match="'alice' is already connected"):
                await b.join(_session("alice", "b", 3), "reject")
            # replace: node a is told to end its session
            newer = _session("alice", "b", 4)
            await b.join(newer, "replace")
            with trio.fail_after(2):
                await eventually(lambda: _true(bool(replaced_on_a)))
            assert replaced_on_a == [alice.session_id]
            assert await a.sessions_of("alice") == [newer]
            a.leave(alice, LeaveReason.REPLACED)  # its server's cleanup: no-op
            b.leave(newer, LeaveReason.CLOSED)
            with trio.fail_after(2):
                await eventually(lambda: _not(a.is_online("alice")))
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert [(e.kind, e.session.session_id, e.reason) for e in seen] == [
        ("join", alice.session_id, None),
        ("join", "b-bob-2", None),
        ("leave", alice.session_id, LeaveReason.REPLACED),
        ("join", newer.session_id, None),
        ("leave", newer.session_id, LeaveReason.CLOSED),
    ]


async def test_a_node_that_stops_refreshing_loses_its_sessions_after_the_ttl(
    redis_server: RedisServer,
) -> None:
    watcher = RedisPresence(redis_server.url, node="watcher", ttl=1)
    dying = RedisPresence(redis_server.url, node="dying", ttl=1)
    seen: list[PresenceEvent] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(_collect, watcher, seen)
            # Listed, then never refreshed nor left: as if its process died.
            for number in range(3):
                await dying.join(_session(f"c{number}", "dying", number), "allow")
            lost_at = time.monotonic()
            assert len(await watcher.online()) == 3
            await eventually(lambda: _none(watcher.online()))
            gone_after = time.monotonic() - lost_at
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert gone_after <= 1.5  # the TTL (1 s) since it listed them
    leaves = [e for e in seen if e.kind == "leave"]
    assert sorted(e.session.client_id for e in leaves) == ["c0", "c1", "c2"]
    assert {e.reason for e in leaves} == {LeaveReason.NODE_LOST}


async def test_a_node_that_shuts_down_takes_its_sessions_off_at_once(
    redis_server: RedisServer,
) -> None:
    """Not after the TTL: a client reconnecting elsewhere under "reject"
    would be refused until then."""
    watcher = RedisPresence(redis_server.url, node="watcher", ttl=30)
    node = RedisPresence(redis_server.url, node="leaving", ttl=30)
    seen: list[PresenceEvent] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(_collect, watcher, seen)
            async with trio.open_nursery() as running:
                await running.start(node.run, lambda sid: None)
                for number in range(3):
                    await node.join(_session(f"c{number}", "leaving", number), "allow")
                running.cancel_scope.cancel()  # a graceful shutdown
            assert await watcher.online() == []
            await watcher.join(_session("c0", "elsewhere"), "reject")  # admitted
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    leaves = [e for e in seen if e.kind == "leave"]
    assert sorted(e.session.client_id for e in leaves) == ["c0", "c1", "c2"]
    assert {e.reason for e in leaves} == {LeaveReason.SHUTDOWN}


async def test_redis_restarted_empty_is_refilled_within_a_refresh(
    redis_server: RedisServer,
) -> None:
    node = RedisPresence(redis_server.url, node="n", ttl=3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run, lambda sid: None)
            for number in range(5):
                await node.join(_session(f"c{number}", "n", number), "allow")
            redis_server.stop()
            redis_server.start()  # empty: nothing is saved
            back = time.monotonic()
            await eventually(lambda: _count(_online_or_none(node), 5))
            refilled_after = time.monotonic() - back
            listed = await node.online()
            nursery.cancel_scope.cancel()
    assert refilled_after <= 3 / 3 + 0.5  # one refresh period (ttl / 3)
    assert sorted(s.client_id for s in listed) == [f"c{n}" for n in range(5)]


async def _online_or_none(store: RedisPresence) -> list[PresenceSession]:
    try:
        return await store.online()
    except PresenceUnavailable:
        return []


async def test_redis_down_admits_unlisted_then_lists_when_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    node = RedisPresence(redis_server.url, node="n", ttl=3, timeout=0.5)
    caplog.set_level(logging.INFO, logger="trio_heartbeat.presence")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run, lambda sid: None)
            redis_server.stop()
            started = time.monotonic()
            await node.join(_session("alice", "n"), "reject")  # no exception
            assert time.monotonic() - started < 1.5
            with pytest.raises(PresenceUnavailable, match="unreachable"):
                await node.online()
            assert not node.healthy
            redis_server.start()
            await eventually(lambda: _count(_online_or_none(node), 1))
            [listed] = await node.online()
            assert node.healthy
            nursery.cancel_scope.cancel()
    assert listed.client_id == "alice"
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("presence_down") == 1  # once per outage
    assert "presence_unlisted" in events
    assert "presence_up" in events


async def _true(value: bool) -> bool:
    return value


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def _none(listing: Awaitable[list[PresenceSession]]) -> bool:
    return not await listing


async def _count(listing: Awaitable[list[PresenceSession]], at_least: int) -> bool:
    return len(await listing) >= at_least
