"""Low-noise A/B figure: time per PING/PONG round trip, client and server in one
process on one core.

Run: taskset -c 0 python benchmarks/ping_roundtrip.py [--count 5000] [--rounds 5]

Less realistic than benchmarks/server.py (no second core, one connection), but
steady enough to compare two versions of the code run after run: the best of
several rounds is printed, in microseconds per round trip.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import trio

import trio_heartbeat


async def echo(conn: trio_heartbeat.HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data)


async def measure(count: int, rounds: int) -> float:
    # min_interval 1e-6: back-to-back PINGs are the point here, not strikes.
    config = trio_heartbeat.ServerConfig(timeout=3600, min_interval=1e-6)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio_heartbeat.serve_tcp, echo, 0, host="127.0.0.1", config=config)
        )
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            trio_heartbeat.encode(trio_heartbeat.Hello({"version": 1}))
        )
        await stream.receive_some()
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(count):
                await stream.send_all(b"\x03\x00")
                await stream.receive_some(2)
            best = min(best, (time.perf_counter() - started) / count)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    micros = trio.run(measure, args.count, args.rounds)
    rounds = args.rounds
    print(f"PING/PONG round trip, client + server: {micros:.1f} us (best of {rounds})")


if __name__ == "__main__":
    main()
