"""Tutorial 3: a server that puts each client's unread-message count in its PONGs.

Run it with ``python unread_server.py``; stop it with Ctrl-C.
"""

from functools import partial

import trio

import trio_heartbeat

# Unread messages per client id (a mailbox service would keep them).
UNREAD = {"phone-42": 3}


def unread_count(conn: trio_heartbeat.HeartbeatConnection, ping: bytes) -> bytes:
    """The payload of every PONG: how many messages wait for this client."""
    return str(UNREAD.get(conn.client_id or "", 0)).encode()


async def handler(conn: trio_heartbeat.HeartbeatConnection) -> None:
    await conn.send(b"welcome")
    async for data in conn:
        await conn.send(data.upper())


async def main() -> None:
    serve = partial(
        trio_heartbeat.serve_tcp,
        handler,
        5005,
        host="127.0.0.1",
        config=trio_heartbeat.ServerConfig(timeout=30),
        pong_payload=unread_count,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_heartbeat.cancel_on_signals, nursery.cancel_scope)
        listeners = await nursery.start(serve)
        host, port = listeners[0].socket.getsockname()
        print(f"listening on {host}:{port}")


if __name__ == "__main__":
    trio.run(main)
