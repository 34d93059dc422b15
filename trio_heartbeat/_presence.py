"""Who is online, and where: the presence of connected clients.

A server with a presence store lists each connection that named itself
(``client_id`` in its HELLO) while it is connected: its session id, client id,
node, peer address, since when, and metadata. Two stores behind one interface:

* :class:`MemoryPresence`: in this process, the default of ``serve``: one
  server answers "who is online" with no other service.
* :class:`RedisPresence`: shared by a fleet of servers through Redis.

Both apply the fleet's rule for a ``client_id`` connecting again
(``duplicate``): ``"allow"`` lists both; ``"replace"`` ends the older session
(CLOSE(8), on whichever node holds it); ``"reject"`` refuses the newcomer
(CLOSE(7)). Both tell watchers of every join and leave (:meth:`watch`).

The server calls :meth:`~Presence.join` during a client's handshake (it decides
the duplicate rule, so it is awaited, bounded by a timeout) and
:meth:`~Presence.leave` when the connection ends (queued: ending a connection
never waits on the store). A heartbeat never touches the store.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol

import attrs
import trio

__all__ = [
    "Duplicate",
    "JoinRefused",
    "LeaveReason",
    "MemoryPresence",
    "Presence",
    "PresenceEvent",
    "PresenceSession",
    "PresenceUnavailable",
    "WatchLagged",
    "default_node_id",
]

#: What to do when a ``client_id`` connects while it is already listed.
Duplicate = Literal["allow", "replace", "reject"]
DUPLICATES: tuple[Duplicate, ...] = ("allow", "replace", "reject")


def default_node_id() -> str:
    """``host:pid``: unique per server process on a fleet."""
    return f"{socket.gethostname()}:{os.getpid()}"


def listing_order(session: PresenceSession) -> tuple[str, float]:
    """Listings are sorted by client id, then by since when."""
    return (session.client_id, session.since)


def new_session_id() -> str:
    return uuid.uuid4().hex


class LeaveReason(enum.Enum):
    """Why a session left the list."""

    #: The client closed, or the connection was lost.
    CLOSED = "closed"
    #: The server kicked it (heartbeat timeout, protocol error, slow reader...).
    KICKED = "kicked"
    #: A newer session of the same ``client_id`` replaced it.
    REPLACED = "replaced"
    #: Its server stopped refreshing it (died, or lost Redis) for ``ttl``.
    NODE_LOST = "node_lost"
    #: Its server shut down.
    SHUTDOWN = "shutdown"


@attrs.frozen
class PresenceSession:
    """One listed connection."""

    #: Unique per connection (random).
    session_id: str
    #: The ``client_id`` the client gave in its HELLO.
    client_id: str
    #: The server (node) that holds the connection.
    node: str
    #: The client's address as that server sees it (``host:port``).
    peer: str
    #: When it connected (Unix time, seconds).
    since: float
    #: Application metadata (JSON-serialisable), e.g. a device name.
    meta: Mapping[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "session_id": self.session_id,
                "client_id": self.client_id,
                "node": self.node,
                "peer": self.peer,
                "since": self.since,
                "meta": dict(self.meta),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PresenceSession:
        data = json.loads(text)
        meta = data.get("meta")
        return cls(
            session_id=str(data["session_id"]),
            client_id=str(data["client_id"]),
            node=str(data["node"]),
            peer=str(data["peer"]),
            since=float(data["since"]),
            meta=meta if isinstance(meta, dict) else {},
        )


@attrs.frozen
class PresenceEvent:
    """A session joined or left (:meth:`Presence.watch`)."""

    kind: Literal["join", "leave"]
    session: PresenceSession
    #: For a leave: why.
    reason: LeaveReason | None = None


class PresenceUnavailable(Exception):
    """The presence store cannot be reached (Redis down): a lookup failed."""


class JoinRefused(Exception):
    """``duplicate="reject"`` and the ``client_id`` is already listed."""

    def __init__(self, client_id: str, holder: PresenceSession | None) -> None:
        where = ""
        if holder is not None:
            where = f" (on {holder.node} since {time.ctime(holder.since)})"
        super().__init__(f"client_id {client_id!r} is already connected{where}")
        self.client_id = client_id
        self.holder = holder


#: Called with a session id this node holds that another session replaced:
#: the server ends that connection with CLOSE(8).
ReplacedCallback = Callable[[str], None]


class Presence(Protocol):
    """What a server needs from a presence store, and what applications ask."""

    #: This server's name in the listing.
    node: str

    @property
    def healthy(self) -> bool:
        """False while the store cannot be reached (joins are admitted
        unlisted meanwhile)."""

    async def run(
        self,
        replaced: ReplacedCallback,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The store's background work while a server runs (refreshes, its
        control channel); ``replaced(session_id)`` ends a local session."""

    async def join(self, session: PresenceSession, duplicate: Duplicate) -> None:
        """List ``session``, applying ``duplicate``; raises
        :class:`JoinRefused` under ``"reject"``."""

    def leave(self, session: PresenceSession, reason: LeaveReason) -> None:
        """Take ``session`` off the list (soon; never blocks)."""

    async def online(self) -> list[PresenceSession]:
        """Every listed session, fleet-wide, by client id then since when."""

    async def sessions_of(self, client_id: str) -> list[PresenceSession]:
        """The listed sessions of ``client_id``, oldest first."""

    async def is_online(self, client_id: str) -> bool:
        """Whether ``client_id`` has a listed session."""

    def watch(self) -> Any:
        """``async with store.watch() as events: async for event in events``:
        every join and leave from now on (:class:`PresenceEvent`)."""


#: Events a watcher may fall behind by before it is dropped.
WATCH_BUFFER = 10_000


class WatchLagged(Exception):
    """A watcher fell more than ``WATCH_BUFFER`` events behind and was dropped."""


class _Watchers:
    """Fan-out of events to watchers, each with a bounded buffer."""

    def __init__(self) -> None:
        self._senders: set[trio.MemorySendChannel[PresenceEvent]] = set()
        self._lagged: set[trio.MemorySendChannel[PresenceEvent]] = set()

    def publish(self, event: PresenceEvent) -> None:
        for sender in list(self._senders):
            try:
                sender.send_nowait(event)
            except trio.WouldBlock:
                self._lagged.add(sender)
                self._senders.discard(sender)
                sender.close()

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[PresenceEvent]]:
        sender, receiver = trio.open_memory_channel[PresenceEvent](WATCH_BUFFER)
        self._senders.add(sender)

        async def events() -> AsyncIterator[PresenceEvent]:
            async for event in receiver:
                yield event
            if sender in self._lagged:
                raise WatchLagged(
                    f"the watcher fell {WATCH_BUFFER} events behind and was dropped"
                )

        iterator = events()
        try:
            yield iterator
        finally:
            self._senders.discard(sender)
            self._lagged.discard(sender)
            sender.close()
            receiver.close()
            await iterator.aclose()  # type: ignore[attr-defined]


class MemoryPresence:
    """Presence kept in this process, for the one server that runs it: the
    embedded default."""

    def __init__(self, node: str | None = None) -> None:
        self.node = node or default_node_id()
        self._sessions: dict[str, PresenceSession] = {}
        self._by_client: dict[str, dict[str, PresenceSession]] = {}
        self._replaced: ReplacedCallback | None = None
        self._watchers = _Watchers()

    @property
    def healthy(self) -> bool:
        """Always: nothing to reach."""
        return True

    async def run(
        self,
        replaced: ReplacedCallback,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._replaced = replaced
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._replaced = None

    async def join(self, session: PresenceSession, duplicate: Duplicate) -> None:
        others = list(self._by_client.get(session.client_id, {}).values())
        if others and duplicate == "reject":
            raise JoinRefused(session.client_id, others[0])
        if duplicate == "replace":
            for old in others:
                self._remove(old, LeaveReason.REPLACED)
                if self._replaced is not None:
                    self._replaced(old.session_id)
        self._sessions[session.session_id] = session
        self._by_client.setdefault(session.client_id, {})[session.session_id] = session
        self._watchers.publish(PresenceEvent("join", session))

    def leave(self, session: PresenceSession, reason: LeaveReason) -> None:
        if session.session_id in self._sessions:
            self._remove(session, reason)

    def _remove(self, session: PresenceSession, reason: LeaveReason) -> None:
        del self._sessions[session.session_id]
        same = self._by_client[session.client_id]
        del same[session.session_id]
        if not same:
            del self._by_client[session.client_id]
        self._watchers.publish(PresenceEvent("leave", session, reason))

    async def online(self) -> list[PresenceSession]:
        return sorted(self._sessions.values(), key=listing_order)

    async def sessions_of(self, client_id: str) -> list[PresenceSession]:
        sessions = self._by_client.get(client_id, {}).values()
        return sorted(sessions, key=listing_order)

    async def is_online(self, client_id: str) -> bool:
        return client_id in self._by_client

    def watch(self) -> Any:
        return self._watchers.watch()
