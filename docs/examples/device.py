"""A device that stays connected to the gateway: readings out, commands in.

Run it with ``python device.py`` beside ``gateway.py``. It reconnects with
backoff whenever the gateway goes away (restarted, network lost), and gives up
only on what retrying cannot cure (a TLS certificate that does not verify).
"""

from __future__ import annotations

import trio

import trio_heartbeat


async def main(
    port: int = 5005,
    *,
    device_id: str = "sensor-1",
    token: str = "s3cret-1",
    readings: int = 3,
    log: list[str] | None = None,
) -> list[str]:
    log = [] if log is None else log
    config = trio_heartbeat.ClientConfig(
        interval=10, retries=2, retry_interval=3, client_id=device_id, token=token
    )
    sent = 0
    async for attempt in trio_heartbeat.reconnecting(
        "127.0.0.1", port, config=config, name="gateway"
    ):
        async with attempt as conn:
            # How many commands wait for us arrives with every PONG.
            conn.on_pong = lambda payload: log.append(f"waiting: {payload.decode()}")
            answer = await conn.ping()  # returns when its PONG is back
            log.append(f"connected, round trip {answer.rtt * 1000:.1f} ms")
            async with trio.open_nursery() as nursery:

                @nursery.start_soon
                async def commands() -> None:
                    async for data in conn:
                        command = data.decode().removeprefix("do ")
                        log.append(f"doing {command}")
                        await conn.send(f"ack {command}".encode())

                while sent < readings:
                    await conn.send(f"temperature={20 + sent}".encode())
                    sent += 1
                    await trio.sleep(1)
                await conn.aclose()  # done: CLOSE(0) ends commands() too
        # The connection ended: attempt.failure says why (None: we closed it).
        log.append(f"ended: {attempt.failure or 'done'}")
        if attempt.failure is None:
            break
    return log


if __name__ == "__main__":
    for line in trio.run(main):
        print(line)
