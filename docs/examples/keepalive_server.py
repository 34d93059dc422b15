"""How-to: kernel keepalive beside the heartbeat, on the server.

Run it with ``python keepalive_server.py``; stop it with Ctrl-C.
"""

from functools import partial

import trio

import trio_heartbeat
from trio_heartbeat import AUTO, KeepaliveConfig, ServerConfig

config = ServerConfig(
    timeout=60,
    # First probe after 30 s idle, then every 5 s; 3 unanswered: dropped.
    # user_timeout=AUTO: unacknowledged data is given up at the heartbeat's
    # own bound (TCP_USER_TIMEOUT, Linux).
    keepalive=KeepaliveConfig(idle=30, interval=5, count=3, user_timeout=AUTO),
)


async def shout(conn: trio_heartbeat.HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data.upper())


async def main() -> None:
    serve = partial(
        trio_heartbeat.serve_tcp, shout, 5005, host="127.0.0.1", config=config
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_heartbeat.cancel_on_signals, nursery.cancel_scope)
        await nursery.start(serve)
        print("listening on 127.0.0.1:5005")


if __name__ == "__main__":
    trio.run(main)
