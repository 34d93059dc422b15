"""Tutorial 1: a heartbeat server.

Run it with ``python first_server.py``; stop it with Ctrl-C.
"""

from __future__ import annotations

import trio

import trio_heartbeat


async def handler(conn: trio_heartbeat.HeartbeatConnection) -> None:
    # One call per client, in the client's own nursery. Iterating yields each
    # DATA payload and ends when the client closes. If the client goes silent
    # for `timeout` seconds, this is cancelled and the client gets CLOSE(1).
    async for data in conn:
        await conn.send(data.upper())


async def main(
    port: int = 5005, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
) -> None:
    config = trio_heartbeat.ServerConfig(timeout=60)
    await trio_heartbeat.serve_tcp(
        handler, port, host="127.0.0.1", config=config, task_status=task_status
    )


if __name__ == "__main__":
    trio.run(main)
