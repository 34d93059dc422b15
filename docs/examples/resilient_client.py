"""Tutorial 3: a client that survives network loss.

It reconnects with exponential backoff and full jitter, says why each
connection ended, and prints the unread count that the server puts in every
PONG. Start unread_server.py first, then ``python resilient_client.py``; stop
it with Ctrl-C.
"""

import contextlib

import trio

import trio_heartbeat


def show_unread(payload: bytes) -> None:
    # Called with the payload of every PONG: data that costs no extra request.
    if payload:
        print("unread messages:", payload.decode())


def show_failure(exc: BaseException, next_window: float) -> None:
    if getattr(exc, "connecting", False):  # only failed connects; ends are below
        print(f"could not connect ({exc}); next try within {next_window:.0f} s")


async def main() -> None:
    # PING after 5 idle seconds; the server is dead after 2 unanswered resends
    # 2 s apart: at most 5 + 3 x 2 = 11 s after the link went silent.
    config = trio_heartbeat.ClientConfig(
        interval=5, retries=2, retry_interval=2, client_id="phone-42"
    )
    async for attempt in trio_heartbeat.reconnecting(
        "127.0.0.1",
        5005,
        config=config,
        backoff=trio_heartbeat.Backoff(base=1, cap=30),
        on_pong=show_unread,
        on_failure=show_failure,
    ):
        async with attempt as conn:
            print(f"connected (connection #{attempt.number})")
            async for data in conn:
                print("got", data.decode())
        # The connection ended: a dead server, a CLOSE, the network gone.
        print("ended:", attempt.failure or "closed normally")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
        trio.run(main)
