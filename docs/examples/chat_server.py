"""Tutorial 2: heartbeats in your own server, with presence and cleanup.

A tiny chat: every line a client sends goes to everyone else. Who is online is
kept in a registry that the hooks update, so a client that vanished (power loss,
dead NAT mapping) is removed and announced when the heartbeat kicks it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

import trio_heartbeat
from trio_heartbeat import DisconnectReason, HeartbeatConnection


class ChatServer:
    def __init__(self, config: trio_heartbeat.ServerConfig) -> None:
        self.config = config
        self.online: dict[str, HeartbeatConnection] = {}
        # Hooks are synchronous; announcements need sends, which are async, so
        # the hook queues them for one broadcaster task.
        self._announce_in, self._announce_out = trio.open_memory_channel[bytes](100)

    def name_of(self, conn: HeartbeatConnection) -> str:
        # The client's HELLO may carry a client_id; fall back to its address.
        return str(conn.peer_hello.get("client_id") or conn.peer)

    def on_connect(self, conn: HeartbeatConnection) -> None:
        self.online[self.name_of(conn)] = conn
        self._announce_in.send_nowait(b"* %s joined" % self.name_of(conn).encode())

    def on_disconnect(
        self, conn: HeartbeatConnection, reason: DisconnectReason
    ) -> None:
        name = self.name_of(conn)
        if self.online.get(name) is conn:
            del self.online[name]
            text = f"* {name} left ({reason.value})"
            self._announce_in.send_nowait(text.encode())

    async def broadcast(self, message: bytes, *, exclude: object = None) -> None:
        for conn in list(self.online.values()):
            if conn is not exclude:
                # A client that is leaving: its own hook reports it.
                with contextlib.suppress(trio_heartbeat.ConnectionClosed):
                    await conn.send(message)

    async def handler(self, conn: HeartbeatConnection) -> None:
        name = self.name_of(conn).encode()
        async for line in conn:
            await self.broadcast(b"%s: %s" % (name, line), exclude=conn)

    async def announcer(self) -> None:
        async for message in self._announce_out:
            await self.broadcast(message)

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        serve = partial(
            trio_heartbeat.serve_listeners,
            self.handler,
            listeners,
            config=self.config,
            on_connect=self.on_connect,
            on_disconnect=self.on_disconnect,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.announcer)
            await nursery.start(serve)
            task_status.started()


async def main() -> None:
    server = ChatServer(trio_heartbeat.ServerConfig(timeout=30))
    listeners = await trio.open_tcp_listeners(5005, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        # Ctrl-C or SIGTERM: every client gets CLOSE(5), then main() returns.
        nursery.start_soon(trio_heartbeat.cancel_on_signals, nursery.cancel_scope)
        await nursery.start(server.serve, listeners)
        print("listening on 127.0.0.1:5005")


if __name__ == "__main__":
    trio.run(main)
