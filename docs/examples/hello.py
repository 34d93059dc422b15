"""A heartbeat server and a client in one program: python hello.py"""

from functools import partial

import trio

import trio_heartbeat


async def shout(conn: trio_heartbeat.HeartbeatConnection) -> None:
    async for data in conn:  # a client that falls silent is kicked for you
        await conn.send(data.upper())


async def main() -> None:
    serve = partial(trio_heartbeat.serve_tcp, shout, 0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)  # once it listens, on a free port
        port = listeners[0].socket.getsockname()[1]
        async with trio_heartbeat.open_connection("127.0.0.1", port) as conn:
            await conn.send(b"hello")  # PINGs go out only while the link is idle
            print(await conn.receive())
        nursery.cancel_scope.cancel()


trio.run(main)
