"""Tutorial 1: a heartbeat server on 127.0.0.1:5005.

Run it with ``python first_server.py``; stop it with Ctrl-C.
"""

from functools import partial

import trio

import trio_heartbeat


async def handler(conn: trio_heartbeat.HeartbeatConnection) -> None:
    # Called once per client, in the client's own nursery. Iterating yields
    # each DATA payload and ends when the client closes. If the client sends
    # nothing for `timeout` seconds, it gets CLOSE(1) and this is cancelled.
    async for data in conn:
        await conn.send(data.upper())


async def main() -> None:
    config = trio_heartbeat.ServerConfig(timeout=60)
    serve = partial(
        trio_heartbeat.serve_tcp, handler, 5005, host="127.0.0.1", config=config
    )
    async with trio.open_nursery() as nursery:
        # Ctrl-C or SIGTERM: every client gets CLOSE(5), then main() returns.
        nursery.start_soon(trio_heartbeat.cancel_on_signals, nursery.cancel_scope)
        listeners = await nursery.start(serve)  # returns once it listens
        host, port = listeners[0].socket.getsockname()
        print(f"listening on {host}:{port}")


if __name__ == "__main__":
    trio.run(main)
