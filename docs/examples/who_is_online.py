"""Who is online: a server that lists its clients, a watcher that prints each
join and leave, and three clients (alice logs in twice).

Run: python who_is_online.py [redis://HOST:PORT/DB]
(the list in this process by default; with a Redis URL, in that Redis)
"""

import sys
from functools import partial

import trio

import trio_heartbeat


async def shout(conn: trio_heartbeat.HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data.upper())


async def show_events(
    presence: trio_heartbeat.Presence,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with presence.watch() as events:
        task_status.started()
        async for event in events:
            why = f" ({event.reason.value})" if event.reason else ""
            print(f"{event.kind:<5} {event.session.client_id}{why}")


async def stay(port: int, client_id: str, seconds: float) -> None:
    """A client named ``client_id``, connected for ``seconds``."""
    config = trio_heartbeat.ClientConfig(client_id=client_id)
    try:
        async with trio_heartbeat.open_connection("127.0.0.1", port, config=config):
            await trio.sleep(seconds)
    except trio_heartbeat.ConnectionClosed as exc:
        print(f"{client_id}'s older session: {exc.reason}")


async def main(url: str | None) -> None:
    presence: trio_heartbeat.Presence
    if url is None:
        presence = trio_heartbeat.MemoryPresence(node="node-1")
    else:
        presence = trio_heartbeat.RedisPresence(url, node="node-1")
    serve = partial(
        trio_heartbeat.serve_tcp, shout, 0, host="127.0.0.1",
        presence=presence, duplicate="replace",  # a new login replaces the old
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(show_events, presence)
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as clients:
            clients.start_soon(stay, port, "alice", 2.0)
            await trio.sleep(0.2)
            clients.start_soon(stay, port, "bob", 0.5)
            await trio.sleep(0.2)
            for session in await presence.online():
                print(f"online: {session.client_id} on {session.node}")
            clients.start_soon(stay, port, "alice", 0.5)  # logs in again
        await trio.sleep(0.2)
        print("online now:", [s.client_id for s in await presence.online()])
        nursery.cancel_scope.cancel()


trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)
