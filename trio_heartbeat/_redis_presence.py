"""Presence shared by a fleet of servers, in Redis (through coredis).

Keys (``prefix`` ``thb:`` by default), after Centrifuge's presence:

``{prefix}sessions``
    hash: session id → the session as JSON.
``{prefix}expiry``
    sorted set: session id → when it expires (Redis's own clock).
``{prefix}client:{client_id}``
    set: that client's session ids (lookups, the duplicate rule).
``{prefix}replaced:{session id}``
    a tombstone (expires after the TTL): a replaced session is not re-listed
    by its node's next refresh.

Each node refreshes the expiry of its own sessions once per ``ttl / 3``: one
pipeline of one script call per 1,000 sessions, one command per session in
Redis (a Redis that restarted empty is refilled from the live sessions within
one refresh: the script reports the ids it no longer knows). Entries whose
node stopped refreshing (SIGKILL, power loss) expire after ``ttl``: every
script drops expired entries before it reads (and tells the watchers: leave,
``node_lost``). Joins and their duplicate rule run in one script (atomic);
leaves are queued and written within milliseconds. Joins and leaves are
published on ``{prefix}events``; a replaced session's node hears it on
``{prefix}control:{node}`` and ends the connection.

Redis failures never stop a connection: a join that cannot reach Redis in
``timeout`` is admitted unlisted (logged) and listed by the next refresh that
gets through; the node retries with backoff meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ._groups import leaves
from ._presence import (
    Duplicate,
    JoinRefused,
    LeaveReason,
    PresenceEvent,
    PresenceSession,
    PresenceUnavailable,
    ReplacedCallback,
    default_node_id,
    listing_order,
)

__all__ = ["RedisPresence"]

logger = logging.getLogger("trio_heartbeat.presence")

# Expired entries: dropped, and announced as lost with their node. Shared by
# the scripts (Lua has no imports); P (the prefix) is set first. NOW is
# Redis's own clock: one clock for the whole fleet.
_PURGE = """
local function purge(ids)
  for _, id in ipairs(ids) do
    local data = redis.call('HGET', P .. 'sessions', id)
    redis.call('HDEL', P .. 'sessions', id)
    redis.call('ZREM', P .. 'expiry', id)
    if data then
      local cid = cjson.decode(data).client_id
      redis.call('SREM', P .. 'client:' .. cid, id)
      redis.call('PUBLISH', P .. 'events',
        '{"kind":"leave","reason":"node_lost","session":' .. data .. '}')
    end
  end
end
-- A client's sessions that are still listed; the expired ones purged.
local function live_sessions(ckey, now)
  local live, dead = {}, {}
  for _, id in ipairs(redis.call('SMEMBERS', ckey)) do
    local expiry = redis.call('ZSCORE', P .. 'expiry', id)
    if expiry and tonumber(expiry) > now then
      table.insert(live, id)
    else
      table.insert(dead, id)
      redis.call('SREM', ckey, id)
    end
  end
  purge(dead)
  return live
end
local t = redis.call('TIME')
local NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# ARGV: prefix, session id, client id, session JSON, ttl, duplicate.
# Returns {"joined"} or {"rejected", holder JSON}.
_JOIN = (
    "local P = ARGV[1]\n"
    + _PURGE
    + """
local sid, cid, data, ttl, dup = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local ckey = P .. 'client:' .. cid
local others = live_sessions(ckey, NOW)
if dup == 'reject' and #others > 0 then
  return {'rejected', redis.call('HGET', P .. 'sessions', others[1]) or ''}
end
if dup == 'replace' then
  for _, old in ipairs(others) do
    local d = redis.call('HGET', P .. 'sessions', old)
    redis.call('HDEL', P .. 'sessions', old)
    redis.call('ZREM', P .. 'expiry', old)
    redis.call('SREM', ckey, old)
    redis.call('SET', P .. 'replaced:' .. old, '1', 'EX', math.ceil(ttl))
    if d then
      redis.call('PUBLISH', P .. 'control:' .. cjson.decode(d).node, old)
      redis.call('PUBLISH', P .. 'events',
        '{"kind":"leave","reason":"replaced","session":' .. d .. '}')
    end
  end
end
redis.call('HSET', P .. 'sessions', sid, data)
redis.call('ZADD', P .. 'expiry', NOW + ttl, sid)
redis.call('SADD', ckey, sid)
redis.call('PUBLISH', P .. 'events', '{"kind":"join","session":' .. data .. '}')
return {'joined'}
"""
)

# ARGV: prefix, session id, client id, reason. Returns 1 if it was listed.
_LEAVE = """
local P, sid, cid, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local data = redis.call('HGET', P .. 'sessions', sid)
if not data then return 0 end
redis.call('HDEL', P .. 'sessions', sid)
redis.call('ZREM', P .. 'expiry', sid)
redis.call('SREM', P .. 'client:' .. cid, sid)
redis.call('PUBLISH', P .. 'events',
  '{"kind":"leave","reason":"' .. reason .. '","session":' .. data .. '}')
return 1
"""

# ARGV: prefix, ttl, then session ids: pushes their expiry (one command per
# listed session: ZADD XX only touches members that exist). Returns {replaced,
# missing}: the ids replaced meanwhile (their node ends them) and the ids not
# listed (Redis lost them: the node lists them again).
_REFRESH = (
    "local P = ARGV[1]\n"
    + _PURGE
    + """
purge(redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', NOW, 'LIMIT', 0, 1000))
local expiry = NOW + tonumber(ARGV[2])
local replaced, missing = {}, {}
for i = 3, #ARGV do
  local sid = ARGV[i]
  if redis.call('ZADD', P .. 'expiry', 'XX', 'CH', expiry, sid) == 0 then
    if redis.call('EXISTS', P .. 'replaced:' .. sid) == 1 then
      table.insert(replaced, sid)
    else
      table.insert(missing, sid)
    end
  end
end
return {replaced, missing}
"""
)

# ARGV: prefix, ttl, then (session id, client id, session JSON) triples: lists
# them again (after Redis lost them), unless replaced meanwhile.
_RELIST = """
local P = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local sid, cid, data = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('EXISTS', P .. 'replaced:' .. sid) == 0 then
    if redis.call('HSET', P .. 'sessions', sid, data) == 1 then
      redis.call('PUBLISH', P .. 'events', '{"kind":"join","session":' .. data .. '}')
    end
    redis.call('ZADD', P .. 'expiry', NOW + ttl, sid)
    redis.call('SADD', P .. 'client:' .. cid, sid)
  end
end
return 0
"""

# ARGV: prefix, and a client id or "". Returns the listed sessions' JSON.
_READ = (
    "local P = ARGV[1]\n"
    + _PURGE
    + """
if ARGV[2] == '' then
  purge(redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', NOW))
  return redis.call('HVALS', P .. 'sessions')
end
local ids = live_sessions(P .. 'client:' .. ARGV[2], NOW)
if #ids == 0 then return {} end
return redis.call('HMGET', P .. 'sessions', unpack(ids))
"""
)

#: Sessions per refresh script call (several calls go in one pipeline).
REFRESH_CHUNK = 1000
#: Backoff between attempts while Redis is unreachable (seconds).
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


def _redis_errors() -> tuple[type[Exception], ...]:
    from anyio import BrokenResourceError, ClosedResourceError
    from coredis.exceptions import RedisError

    return (
        RedisError, OSError, trio.TooSlowError, BrokenResourceError,
        ClosedResourceError,
    )  # fmt: skip


def _cancelled_quietly(exc: BaseException) -> None:
    """Raise the cancellation in ``exc`` alone if the rest is coredis failing
    to clean up a connection that cancellation cut (it raises as it goes)."""
    if isinstance(exc, trio.Cancelled):
        return
    if isinstance(exc, BaseExceptionGroup):
        cancelled, rest = exc.split(trio.Cancelled)
        if cancelled is not None and (rest is None or redis_failure(rest)):
            raise leaves(cancelled)[0] from None


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def redis_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis being unreachable or failing, and only that
    (coredis raises through its task groups: the errors may come grouped)."""
    errors = _redis_errors()
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(errors)
        return rest is None
    return isinstance(exc, errors)


class RedisPresence:
    """Presence in Redis at ``url`` (``redis://HOST:PORT/DB``), shared by every
    server that uses the same Redis and ``prefix``.

    ``node`` names this server (default ``host:pid``); ``ttl`` is how long a
    session stays listed after its node stops refreshing it (seconds); joins
    wait at most ``timeout`` for Redis before admitting the client unlisted.
    Needs ``pip install 'trio_heartbeat[presence]'`` (coredis).
    """

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        ttl: float = 30.0,
        prefix: str = "thb:",
        timeout: float = 1.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"presence URL must be redis://HOST:PORT/DB, not {url!r}")
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"presence ttl must be a positive number, not {ttl}")
        try:
            import coredis
        except ImportError:  # pragma: no cover - the extra is missing
            raise ImportError(
                "RedisPresence needs coredis: pip install 'trio_heartbeat[presence]'"
            ) from None
        self.url = url
        self.node = node or default_node_id()
        self.ttl = ttl
        self.prefix = prefix
        self.timeout = timeout
        self._client = coredis.Redis.from_url(url, decode_responses=True)
        self._local: dict[str, PresenceSession] = {}
        self._leaves: list[tuple[PresenceSession, LeaveReason]] = []
        self._leave_wakeup = trio.Event()
        self._refresh_now = trio.Event()
        self._replaced: ReplacedCallback | None = None
        self._healthy = False
        self._entered = 0
        # Retries come at least once per refresh period: a Redis that comes
        # back is refilled within one.
        self._retry_max = min(RETRY_MAX, ttl / 3)

    @property
    def healthy(self) -> bool:
        """False from a failed Redis call until one succeeds again."""
        return self._healthy

    # -------------------------------------------------------------- plumbing

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[Any]:
        """The coredis client, entered (coredis clients live in ``async with``)."""
        if self._entered:
            self._entered += 1
            try:
                yield self._client
            finally:
                self._entered -= 1
            return
        async with self._client as client:
            self._entered += 1
            try:
                yield client
            finally:
                self._entered -= 1

    async def _script(self, source: str, args: list[Any]) -> Any:
        async with self._connected() as client:
            return await client.eval(source, keys=[], args=args)

    def _outage(self, what: str, exc: BaseException) -> None:
        if self._healthy:
            logger.warning(
                "presence: Redis at %s unreachable (%s: %s); retrying, "
                "connections go on",
                self.url,
                what,
                _leaf(exc),
                extra={"event": "presence_down", "detail": str(_leaf(exc))},
            )
        self._healthy = False

    def _recovered(self) -> None:
        if not self._healthy:
            logger.info(
                "presence: Redis at %s reachable; %d sessions listed",
                self.url,
                len(self._local),
                extra={"event": "presence_up"},
            )
        self._healthy = True

    # -------------------------------------------------------------- the node

    async def run(
        self,
        replaced: ReplacedCallback,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh this node's sessions, write its leaves, hear its control
        channel; until cancelled. Started before the server accepts anyone.

        Cancelled (the server shuts down), it takes every session it still
        holds off the list at once, reason ``shutdown`` (within ``timeout``;
        otherwise they expire after the TTL): a client that reconnects
        elsewhere is not refused (``"reject"``) or listed twice meanwhile.
        """
        self._replaced = replaced
        try:
            async with self._connected():
                self._healthy = True  # the first failure logs
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._refresher)
                        nursery.start_soon(self._leave_writer)
                        await nursery.start(self._controller)
                        task_status.started()
                finally:
                    with trio.move_on_after(self.timeout, shield=True):
                        await self._leave_all()
        except BaseException as exc:
            _cancelled_quietly(exc)
            raise

    async def _leave_all(self) -> None:
        """Every queued leave, and every session still held, off the list."""
        batch = self._leaves + [
            (session, LeaveReason.SHUTDOWN) for session in self._local.values()
        ]
        self._leaves, self._local = [], {}
        if not batch:
            return
        import coredis

        # A client of its own: the running one's tasks are being cancelled.
        final = coredis.Redis.from_url(self.url, decode_responses=True)
        try:
            async with final:
                await self._write_leaves(batch, final)
        except BaseException as exc:
            if not redis_failure(exc):
                raise
            logger.warning(
                "presence: %d sessions left listed (Redis unreachable): they "
                "expire in %g s",
                len(batch),
                self.ttl,
                extra={"event": "presence_down", "detail": str(_leaf(exc))},
            )

    async def _write_leaves(
        self, batch: list[tuple[PresenceSession, LeaveReason]], client: Any = None
    ) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(self._connected())
            pipe = await stack.enter_async_context(client.pipeline(transaction=False))
            for session, reason in batch:
                args = [self.prefix, session.session_id, session.client_id]
                pipe.eval(_LEAVE, keys=[], args=[*args, reason.value])

    async def _refresher(self) -> None:
        delay = min(RETRY_FIRST, self._retry_max)
        while True:
            try:
                with trio.fail_after(max(self.timeout, 5.0)):
                    await self._refresh()
            except BaseException as exc:
                if not redis_failure(exc):
                    raise
                self._outage("refresh", exc)
                await trio.sleep(delay)
                delay = min(self._retry_max, delay * 2)
                continue
            self._recovered()
            delay = min(RETRY_FIRST, self._retry_max)
            self._refresh_now = trio.Event()
            with trio.move_on_after(self.ttl / 3):
                await self._refresh_now.wait()

    async def _refresh(self) -> None:
        """Push the expiry of every local session; list again any that Redis
        lost (a restart), in one pipeline each way."""
        sessions = list(self._local.values())
        calls: list[list[Any]] = []
        for start in range(0, max(1, len(sessions)), REFRESH_CHUNK):
            args: list[Any] = [self.prefix, self.ttl]
            args += [
                session.session_id
                for session in sessions[start : start + REFRESH_CHUNK]
            ]
            calls.append(args)
        missing: list[PresenceSession] = []
        async with self._connected() as client:
            async with client.pipeline(transaction=False) as pipe:
                results = [pipe.eval(_REFRESH, keys=[], args=args) for args in calls]
            for result in results:  # (after the pipeline ran: outside its with)
                replaced, lost = await result
                for session_id in replaced:
                    self._end_replaced(str(session_id))
                missing += [
                    self._local[str(sid)] for sid in lost if str(sid) in self._local
                ]
            if not missing:
                return
            async with client.pipeline(transaction=False) as pipe:
                for start in range(0, len(missing), REFRESH_CHUNK):
                    args = [self.prefix, self.ttl]
                    for session in missing[start : start + REFRESH_CHUNK]:
                        args += [session.session_id, session.client_id,
                                 session.to_json()]  # fmt: skip
                    pipe.eval(_RELIST, keys=[], args=args)
        logger.info(
            "presence: listed %d sessions again (Redis had lost them)",
            len(missing),
            extra={"event": "presence_relisted"},
        )

    def _end_replaced(self, session_id: str) -> None:
        if self._local.pop(session_id, None) is not None and self._replaced:
            self._replaced(session_id)

    async def _leave_writer(self) -> None:
        delay = min(RETRY_FIRST, self._retry_max)
        while True:
            if not self._leaves:
                self._leave_wakeup = trio.Event()
                await self._leave_wakeup.wait()
            batch, self._leaves = self._leaves, []
            try:
                with trio.fail_after(max(self.timeout, 5.0)):
                    await self._write_leaves(batch)
            except BaseException as exc:
                # Not lost: queued again (a leave written twice is harmless;
                # cancelled, the shutdown writes them), and left locally, so
                # no refresh re-lists them.
                self._leaves = batch + self._leaves
                if not redis_failure(exc):
                    raise
                self._outage("leave", exc)
                await trio.sleep(delay)
                delay = min(self._retry_max, delay * 2)
                continue
            delay = min(RETRY_FIRST, self._retry_max)

    async def _controller(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        channel = f"{self.prefix}control:{self.node}"
        delay = min(RETRY_FIRST, self._retry_max)
        started = False
        while True:
            try:
                async with self._client.pubsub(channels=[channel]) as pubsub:
                    if not started:
                        started = True
                        task_status.started()
                    delay = min(RETRY_FIRST, self._retry_max)
                    async for message in pubsub:
                        if message["type"] == "message":
                            self._end_replaced(str(message["data"]))
            except BaseException as exc:
                if not redis_failure(exc):
                    raise
                if not started:
                    started = True
                    task_status.started()
                self._outage("control channel", exc)
            await trio.sleep(delay)
            delay = min(self._retry_max, delay * 2)

    # -------------------------------------------------------------- the store

    async def join(self, session: PresenceSession, duplicate: Duplicate) -> None:
        self._local[session.session_id] = session
        args = [self.prefix, session.session_id, session.client_id,
                session.to_json(), self.ttl, duplicate]  # fmt: skip
        try:
            with trio.fail_after(self.timeout):
                answer = await self._script(_JOIN, args)
        except BaseException as exc:
            if not redis_failure(exc):
                raise
            self._outage("join", exc)
            logger.warning(
                "presence: %s (%s) admitted unlisted: Redis unreachable",
                session.client_id,
                session.peer,
                extra={"event": "presence_unlisted", "client_id": session.client_id},
            )
            self._refresh_now.set()
            return
        if answer[0] == "rejected":
            del self._local[session.session_id]
            holder = PresenceSession.from_json(answer[1]) if answer[1] else None
            raise JoinRefused(session.client_id, holder)

    def leave(self, session: PresenceSession, reason: LeaveReason) -> None:
        if self._local.pop(session.session_id, None) is None:
            return  # replaced: already off the list
        self._leaves.append((session, reason))
        self._leave_wakeup.set()

    async def online(self) -> list[PresenceSession]:
        return await self._read("")

    async def sessions_of(self, client_id: str) -> list[PresenceSession]:
        return await self._read(client_id)

    async def is_online(self, client_id: str) -> bool:
        return bool(await self._read(client_id))

    async def _read(self, client_id: str) -> list[PresenceSession]:
        try:
            with trio.fail_after(max(self.timeout, 5.0)):
                found = await self._script(_READ, [self.prefix, client_id])
        except BaseException as exc:
            if not redis_failure(exc):
                raise
            raise PresenceUnavailable(
                f"Redis at {self.url} unreachable: {_leaf(exc)}"
            ) from None
        sessions = [PresenceSession.from_json(item) for item in found if item]
        return sorted(sessions, key=listing_order)

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[PresenceEvent]]:
        """Every join and leave on the fleet from now on."""
        try:
            async with (
                self._connected() as client,
                client.pubsub(channels=[f"{self.prefix}events"]) as pubsub,
            ):
                iterator = _events(pubsub)
                try:
                    yield iterator
                finally:
                    await iterator.aclose()  # type: ignore[attr-defined]
        except BaseException as exc:
            _cancelled_quietly(exc)
            raise


async def _events(pubsub: Any) -> AsyncIterator[PresenceEvent]:
    async for message in pubsub:
        if message["type"] != "message":
            continue
        data = json.loads(message["data"])
        reason = data.get("reason")
        yield PresenceEvent(
            data["kind"],
            PresenceSession.from_json(json.dumps(data["session"])),
            LeaveReason(reason) if reason else None,
        )
