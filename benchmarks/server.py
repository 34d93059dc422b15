"""Server cost: memory per idle connection, idle CPU, CPU per heartbeat.

Run: python benchmarks/server.py [--connections 1000 10000] [--rate 2000]

Starts ``python -m trio_heartbeat serve --port 0`` pinned to core 0, and drives it
from this process (a Trio load generator) pinned to core 1. Server memory is
VmRSS and server CPU is utime + stime, both read from /proc/<pid>. Prints a
table; ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import trio

from trio_heartbeat import FrameDecoder, Hello, encode

HELLO = encode(Hello({"version": 1, "interval": 3600}))
PING = b"\x03\x00"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        match = re.search(r"VmRSS:\s+(\d+) kB", status.read())
    assert match
    return int(match.group(1))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pin(cpu: int) -> None:
    cores = os.cpu_count() or 1
    if hasattr(os, "sched_setaffinity") and cores > cpu:
        os.sched_setaffinity(0, {cpu})


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, "-m", "trio_heartbeat", "serve", "--port", "0",
           "--timeout", "3600", "--log-level", "WARNING", *extra]  # fmt: skip
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: pin(0),
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    port = int(line.strip().rsplit(":", 1)[1])
    return process, port


class LoadGenerator:
    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: list[trio.SocketStream] = []

    async def connect(self, total: int) -> None:
        """Grow to `total` connections, each past the HELLO exchange."""

        async def one() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            await stream.send_all(HELLO)
            decoder = FrameDecoder()
            while decoder.next_frame() is None:
                decoder.receive_data(await stream.receive_some(65536))
            self.streams.append(stream)

        limit = trio.CapacityLimiter(200)

        async def limited() -> None:
            async with limit:
                await one()

        async with trio.open_nursery() as nursery:
            for _ in range(total - len(self.streams)):
                nursery.start_soon(limited)

    async def heartbeats(self, rate: float, seconds: float) -> tuple[int, list[float]]:
        """Send PINGs at `rate` per second in aggregate; return count and latencies."""
        latencies: list[float] = []
        streams = self.streams
        period = len(streams) / rate
        start = trio.current_time() + 0.1
        end = start + seconds

        async def drive(index: int, stream: trio.SocketStream) -> None:
            next_at = start + index / rate
            while next_at < end:
                await trio.sleep_until(next_at)
                sent = trio.current_time()
                await stream.send_all(PING)
                await stream.receive_some(2)
                latencies.append(trio.current_time() - sent)
                next_at += period

        async with trio.open_nursery() as nursery:
            for index, stream in enumerate(streams):
                nursery.start_soon(drive, index, stream)
        return len(latencies), latencies

    async def max_rate(self, seconds: float, pipeline: int = 4) -> float:
        """Each connection PINGs back-to-back (pipeline deep); return PONGs/s."""
        done = 0
        end = trio.current_time() + seconds
        batch = PING * pipeline

        async def hammer(stream: trio.SocketStream) -> None:
            nonlocal done
            while trio.current_time() < end:
                await stream.send_all(batch)
                need = 2 * pipeline
                while need:
                    need -= len(await stream.receive_some(need))
                done += pipeline

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for stream in self.streams[:200]:
                nursery.start_soon(hammer, stream)
        return done / (trio.current_time() - started)

    async def close(self) -> None:
        for stream in self.streams:
            await stream.aclose()
        self.streams.clear()


async def measure(args: argparse.Namespace) -> dict[str, object]:
    process, port = start_server(args.server_args)
    results: dict[str, object] = {"server": "python -m trio_heartbeat serve"}
    try:
        await trio.sleep(0.5)
        base = rss_kb(process.pid)
        results["rss_base_kb"] = base
        load = LoadGenerator(port)
        per_conn: dict[str, float] = {}
        for n in sorted(args.connections):
            await load.connect(n)
            await trio.sleep(1.0)
            per_conn[str(n)] = round((rss_kb(process.pid) - base) / n, 2)
        results["kb_per_idle_connection"] = per_conn

        idle_n = len(load.streams)
        before = cpu_seconds(process.pid)
        await trio.sleep(args.idle_seconds)
        idle_pct = (cpu_seconds(process.pid) - before) / args.idle_seconds * 100
        results[f"idle_cpu_percent_{idle_n}"] = round(idle_pct, 2)

        # Heartbeat cost: at most 1,000 connections share the rate.
        hb_streams = load.streams[: args.heartbeat_connections]
        driver = LoadGenerator(port)
        driver.streams = hb_streams
        before = cpu_seconds(process.pid)
        count, latencies = await driver.heartbeats(args.rate, args.heartbeat_seconds)
        used = cpu_seconds(process.pid) - before
        results["heartbeats"] = count
        results["achieved_rate"] = round(count / args.heartbeat_seconds, 1)
        results["cpu_us_per_heartbeat"] = round(used / count * 1e6, 1)
        latencies.sort()
        results["latency_p50_ms"] = round(statistics.median(latencies) * 1e3, 3)
        results["latency_p99_ms"] = round(
            latencies[int(len(latencies) * 0.99)] * 1e3, 3
        )

        results["max_heartbeats_per_s"] = round(await driver.max_rate(args.max_seconds))
        await load.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--heartbeat-connections", type=int, default=1000)
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("server_args", nargs="*", help="extra flags for serve")
    args = parser.parse_args()
    needed = 2 * max(args.connections) + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    pin(1)
    started = time.monotonic()
    results = trio.run(measure, args)
    results["benchmark_seconds"] = round(time.monotonic() - started, 1)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
