"""Tutorial 2: a per-message handler, the smallest server (one task per client).

Run it with ``python echo_server.py``; stop it with Ctrl-C.
"""

from functools import partial

import trio

import trio_heartbeat


@trio_heartbeat.per_message
async def shout(conn: trio_heartbeat.HeartbeatConnection, data: bytes) -> None:
    # Called from the connection's reader for each DATA, in order. While it
    # awaits, this client's bytes wait too (PINGs included): keep it short.
    await conn.send(data.upper())


async def main() -> None:
    serve = partial(trio_heartbeat.serve_tcp, shout, 5005, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_heartbeat.cancel_on_signals, nursery.cancel_scope)
        await nursery.start(serve)
        print("listening on 127.0.0.1:5005")


if __name__ == "__main__":
    trio.run(main)
