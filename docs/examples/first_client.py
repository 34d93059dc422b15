"""Tutorial 1: a heartbeat client.

Start first_server.py, then run ``python first_client.py``.
"""

from __future__ import annotations

import trio

import trio_heartbeat


async def main(port: int = 5005) -> None:
    # PING after 25 s without sending; resend every 5 s; give up after 5 resends.
    config = trio_heartbeat.ClientConfig(interval=25, retries=5, retry_interval=5)
    async with trio_heartbeat.open_connection("127.0.0.1", port, config=config) as conn:
        print("server says ping every", conn.negotiated.interval, "s")
        await conn.send(b"hello")
        reply = await conn.receive()
        print(reply.decode())


if __name__ == "__main__":
    trio.run(main)
