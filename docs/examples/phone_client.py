"""A phone's connection: it learns the longest heartbeat interval its network
allows, keeps what it learned per network, and reconnects when a link dies.

    python phone_client.py home-wifi

The argument names the network the phone is on (a Wi-Fi name, a carrier):
intervals learned on one say nothing about another. What was learned is kept
in intervals.json, so the next start on that network begins there.
"""

import contextlib
import sys

import trio

import trio_heartbeat


def show_change(change: trio_heartbeat.IntervalChange) -> None:
    if change.new == change.old:
        print(f"interval stays at {change.new:g} s ({change.reason})")
    else:
        print(f"interval {change.old:g} s -> {change.new:g} s ({change.reason})")


def learner_for(
    network: str,
    minimum: float = 60,
    maximum: float = 1800,
    cache: str = "intervals.json",
) -> trio_heartbeat.IntervalLearner:
    # From 1 minute up to 30 minutes (the server's timeout / 2 caps it too):
    # each try 50 % longer once 3 idle periods held; after a lost link, 10 %
    # below the longest that held.
    return trio_heartbeat.IntervalLearner(
        minimum,
        maximum,
        store=trio_heartbeat.JsonIntervalStore(cache),
        key=network,
        on_change=show_change,
    )


async def main(
    learner: trio_heartbeat.IntervalLearner, host: str = "127.0.0.1", port: int = 5005
) -> None:
    # A lost link is found 2 unanswered resends 10 s apart after its PING.
    # jitter=0.1: the waits of phones that reconnected together drift apart
    # (an adaptive interval is a ceiling: jitter only shortens the waits).
    config = trio_heartbeat.ClientConfig(
        retries=2, retry_interval=10, jitter=0.1, client_id="phone-42"
    )
    async for attempt in trio_heartbeat.reconnecting(
        host, port, config=config, adaptive=learner
    ):
        async with attempt as conn:
            print(f"connected; heartbeat every {conn.stats.interval:g} s")
            async for data in conn:
                print("got", data.decode())
        print("ended:", attempt.failure or "closed normally")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
        trio.run(main, learner_for(sys.argv[1] if len(sys.argv) > 1 else "default"))
