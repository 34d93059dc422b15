"""websockets' keepalive server, for comparison: asyncio or native Trio.

Run: python benchmarks/websockets_server.py asyncio|trio [PORT]
(prints "listening on HOST:PORT"; needs ``pip install websockets``)

An echo server with websockets' own keepalive (a PING every 20 s), compression
off: the load generator's heartbeats are WebSocket PING frames, which websockets
answers with PONG by itself. The server's own PINGs are sent but never timed out
(``ping_timeout=None``): the load generator holds 10,000 idle connections without
reading them, and skips those PINGs when it reads.
"""

from __future__ import annotations

import sys
from typing import Any

PING_INTERVAL = 20.0


async def echo(websocket: Any) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for message in websocket:
            await websocket.send(message.upper())
    except ConnectionClosed:
        pass  # the load generator hangs up without a closing handshake


async def run_asyncio(port: int) -> None:
    import asyncio

    from websockets.asyncio.server import serve

    async with serve(
        echo,
        "127.0.0.1",
        port,
        ping_interval=PING_INTERVAL,
        ping_timeout=None,
        compression=None,
    ) as server:
        address = next(iter(server.sockets)).getsockname()
        print(f"listening on {address[0]}:{address[1]}", flush=True)
        await asyncio.get_running_loop().create_future()  # until killed


async def run_trio(port: int) -> None:
    import trio
    from websockets.trio.server import serve

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve(
                echo, port, host="127.0.0.1", ping_interval=PING_INTERVAL,
                ping_timeout=None, compression=None, task_status=task_status,
            )
        )  # fmt: skip
        address = server.listeners[0].socket.getsockname()
        print(f"listening on {address[0]}:{address[1]}", flush=True)


if __name__ == "__main__":
    flavor = sys.argv[1]
    listen_port = int(sys.argv[2]) if len(sys.argv) > 2 else 5005
    if flavor == "asyncio":
        import asyncio

        asyncio.run(run_asyncio(listen_port))
    else:
        import trio

        trio.run(run_trio, listen_port)
