"""Garbage-collection pauses of one `serve` process holding many idle connections.

Run: python benchmarks/gc_pauses.py [--connections 19500] [--seconds 60]

A full (generation 2) collection of CPython walks every object it tracks, and
while it runs the server does nothing else: no PONG, no kick. This runs
``python -m trio_heartbeat serve`` (pinned to core 0) with a ``gc.callbacks``
timer around every collection, opens the connections from this process (core
1), then keeps them heartbeating at ``--rate`` PINGs a second for ``--seconds``,
and prints, per generation, how many collections ran and the longest; and the
PONG latencies (p50, p99, max) over the heartbeat phase.

One process holds at most 20,000 descriptors here, so one server holds
19,500 connections at most (and this process as many).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import PROTOCOLS, LoadGenerator, pin, start_server

# `serve`, with a timer around every collection; the figures go to stdout as
# one line when the server exits (SIGTERM: a graceful exit, atexit runs).
SERVER = """
import atexit, gc, sys, time
from trio_heartbeat._cli import main
pauses = {0: [], 1: [], 2: []}
started = [0.0]
def timer(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses[info["generation"]].append(time.perf_counter() - started[0])
gc.callbacks.append(timer)
def report():
    print(" ".join(
        f"gen{g}:{len(p)}:{max(p, default=0.0):.6f}:{sum(p):.6f}"
        for g, p in pauses.items()
    ), flush=True)
atexit.register(report)
sys.exit(main(["serve", "--port", "0", "--timeout", "3600", "--log-level", "ERROR"]))
"""


async def measure(connections: int, rate: float, seconds: float) -> None:
    process, port = start_server([sys.executable, "-c", SERVER], True)
    try:
        load = LoadGenerator(port, PROTOCOLS["framed"])
        started = trio.current_time()
        await load.connect(connections)
        print(f"{connections} connections open in "
              f"{trio.current_time() - started:.1f} s")  # fmt: skip
        count, latencies = await load.heartbeats(rate, seconds)
        latencies.sort()
        print(
            f"{count} PINGs at {rate:g}/s: PONG latency p50 "
            f"{statistics.median(latencies) * 1e3:.2f} ms, p99 "
            f"{latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms, max "
            f"{latencies[-1] * 1e3:.1f} ms"
        )
        await load.close()
    finally:
        process.terminate()
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        process.wait(timeout=60)
    for field in line.split():
        generation, count, longest, total = field.split(":")
        print(
            f"{generation}: {count} collections, longest "
            f"{float(longest) * 1e3:.1f} ms, {float(total) * 1e3:.0f} ms in all"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=19_500)
    parser.add_argument("--rate", type=float, default=800.0, help="PINGs/s in all")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pin(1)
    trio.run(measure, args.connections, args.rate, args.seconds)


if __name__ == "__main__":
    main()
