"""Tutorial 3: a client that survives network loss.

It reconnects with exponential backoff and full jitter, reports why each
connection ended, shows the measured round-trip time, and reads the unread
count that the server piggybacks on every PONG.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio

import trio_heartbeat


async def main(
    open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    *,
    connections: int = 3,
) -> list[str]:
    events: list[str] = []
    reconnector = trio_heartbeat.Reconnector(
        open_stream or partial(trio.open_tcp_stream, "127.0.0.1", 5005),
        config=trio_heartbeat.ClientConfig(interval=10, retries=2, retry_interval=3),
        backoff=trio_heartbeat.Backoff(base=1, cap=30),
        # Heartbeat data: whatever the server puts in its PONG arrives here.
        on_pong=lambda payload: events.append(f"unread: {payload.decode()}"),
        on_failure=lambda exc, window: events.append(f"failed: {exc}"),
    )
    async for attempt in reconnector:
        async with attempt as conn:
            events.append(f"connected (#{attempt.number})")
            async for data in conn:
                events.append(f"got {data.decode()}")
                if conn.rtt.srtt is not None:
                    events.append(f"rtt {conn.rtt.srtt * 1000:.0f} ms")
        events.append(f"ended: {attempt.failure}")
        if attempt.number == connections:
            break
    return events


if __name__ == "__main__":
    for event in trio.run(main):
        print(event)
