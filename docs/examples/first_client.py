"""Tutorial 1: a heartbeat client. Start first_server.py first."""

import trio

import trio_heartbeat


async def main() -> None:
    # PING after 25 s with nothing sent or received; resend every 5 s;
    # declare the server dead after 5 unanswered resends.
    config = trio_heartbeat.ClientConfig(interval=25, retries=5, retry_interval=5)
    async with trio_heartbeat.open_connection("127.0.0.1", 5005, config=config) as conn:
        # The server may grant another interval than the one asked for.
        print("heartbeat interval:", conn.negotiated.interval, "s")
        await conn.send(b"hello")
        reply = await conn.receive()
        print("reply:", reply.decode())


if __name__ == "__main__":
    trio.run(main)
