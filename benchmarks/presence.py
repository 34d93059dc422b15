"""Presence in Redis at 10,000 sessions over 2 servers: what it costs, how fast
it answers, how soon a dead server's clients disappear.

Run: python benchmarks/presence.py [--sessions 10000] [--rounds 2] [--json F]

Starts a private ``redis-server`` and, per round, two ``python -m
trio_heartbeat serve`` nodes sharing it (``--presence redis://...
--presence-ttl 30``), each with half of the sessions from ``loadgen scale``
(benchmarks/loadgen.c; each client names itself with a ``client_id`` and
PINGs every ``--interval`` s). Per round, once all are listed:

* Redis commands per second at steady state (``INFO stats``, over the
  heartbeat phase): the nodes' refreshes; no command per heartbeat;
* time to list everyone: ``RedisPresence.online()`` and the ``presence``
  command (median of 3);
* CPU per heartbeat of the two servers, against the same load with presence
  off (``--presence memory`` and clients without a ``client_id``: nothing
  listed), rounds alternating on and off;
* in the last "on" round: SIGKILL one node, and the time until its clients
  are off the list (its TTL, 30 s, after its last refresh).

A progress line while it runs; a table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import cpu_seconds
from server import build_loadgen

from trio_heartbeat import RedisPresence


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("presence.py needs redis-server (apt-get install redis-server)")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def redis_commands(port: int) -> int:
    """Commands Redis has processed so far (``INFO stats``)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_commands_processed" not in data or not data.endswith(b"\r\n"):
            data += sock.recv(65536)
    for line in data.decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("no total_commands_processed in INFO stats")


def progress(text: str) -> None:
    print(f"\r{text:<100}", end="", file=sys.stderr, flush=True)


async def start_node(redis_url: str | None, name: str) -> tuple[trio.Process, int]:
    presence = ["--presence", redis_url, "--node-id", name] if redis_url else []
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_heartbeat", "serve", "--port", "0",
         "--timeout", "60", "--min-interval", "1", "--log-level", "ERROR",
         *presence],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        if not chunk:
            sys.exit(f"node {name} ended before listening")
        line += chunk
    return process, int(line.rsplit(b":", 1)[1])


async def run_round(
    args: argparse.Namespace, loadgen: str, redis_port: int, on: bool, last_on: bool,
    scratch: Path,
) -> dict[str, Any]:  # fmt: skip
    url = f"redis://127.0.0.1:{redis_port}/0"
    store = RedisPresence(url, node="benchmark")
    nodes = [await start_node(url if on else None, f"n{i}") for i in (1, 2)]
    half = args.sessions // 2
    gens: list[trio.Process] = []
    result: dict[str, Any] = {"presence": "redis" if on else "off"}
    try:
        for index, (_, port) in enumerate(nodes):
            out = scratch / f"lg{index}.txt"
            argv = [loadgen, "scale", str(port), f"127.0.0.{21 + index}",
                    str(half), str(args.interval), "60", str(out)]  # fmt: skip
            if on:
                argv.append(f"n{index + 1}-")
            gens.append(
                await trio.lowlevel.open_process(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            )
        for gen in gens:  # wait for "connected N S"
            assert gen.stdout is not None
            buffer = b""
            while b"connected" not in buffer:
                buffer += await gen.stdout.receive_some(4096)
        if on:
            started = time.monotonic()
            while len(await store.online()) < args.sessions:
                progress(f"presence on: waiting for {args.sessions:,} listed")
                await trio.sleep(0.2)
            result["listed_after_connect_s"] = round(time.monotonic() - started, 2)
        for gen in gens:
            assert gen.stdin is not None
            await gen.stdin.send_all(b"ping\n")
        await trio.sleep(2)
        pids = [process.pid for process, _ in nodes]
        cpu0, commands0, t0 = cpu_seconds(pids), redis_commands(redis_port), time.time()
        for second in range(int(args.seconds)):
            progress(f"presence {'on' if on else 'off'}: heartbeats, {second} s")
            await trio.sleep(1)
        elapsed = time.time() - t0
        cpu = cpu_seconds(pids) - cpu0
        beats = args.sessions / args.interval * elapsed
        result["cpu_per_heartbeat_us"] = round(1e6 * cpu / beats, 1)
        result["redis_commands_per_s"] = round(
            (redis_commands(redis_port) - commands0) / elapsed, 1
        )
        if on:
            times = []
            for _ in range(3):
                started = time.monotonic()
                listed = await store.online()
                times.append(time.monotonic() - started)
            assert len(listed) == args.sessions, len(listed)
            result["list_ms"] = round(1000 * statistics.median(times), 1)
            cli = []
            for _ in range(3):
                started = time.monotonic()
                listing = await trio.run_process(
                    [sys.executable, "-m", "trio_heartbeat", "presence", "--redis",
                     url], capture_stdout=True,
                )  # fmt: skip
                cli.append(time.monotonic() - started)
            assert listing.stdout.count(b"\n") == args.sessions
            result["list_cli_ms"] = round(1000 * statistics.median(cli), 1)
        if last_on:
            dead, _ = nodes[1]
            dead.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            while len(await store.online()) > args.sessions - half:
                progress(
                    f"node n2 killed {time.monotonic() - killed:.0f} s ago: waiting "
                    "for its clients to drop off"
                )
                await trio.sleep(0.2)
            result["dead_node_gone_s"] = round(time.monotonic() - killed, 1)
    finally:
        for gen in gens:
            gen.kill()
        for process, _ in nodes:
            if process.returncode is None:
                process.terminate()
        for process in [*gens, *(node for node, _ in nodes)]:
            with trio.move_on_after(20):
                await process.wait()
            if process.returncode is None:
                process.kill()
    return result


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    loadgen = build_loadgen()
    if loadgen is None:
        sys.exit("presence.py needs a C compiler (cc) for benchmarks/loadgen.c")
    redis_port = free_port()
    redis = start_redis(redis_port)
    scratch = Path(tempfile.mkdtemp(prefix="presence-"))
    rounds = []
    try:
        order = [True, False] * args.rounds
        for number, on in enumerate(order):
            last_on = on and number == len(order) - 2
            rounds.append(
                await run_round(args, loadgen, redis_port, on, last_on, scratch)
            )
            # Between rounds: an empty Redis, as a fresh fleet would find it.
            with socket.create_connection(("127.0.0.1", redis_port)) as sock:
                sock.sendall(b"FLUSHALL\r\n")
                sock.recv(64)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    print(file=sys.stderr)
    return rounds


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    on = [r for r in rounds if r["presence"] == "redis"]
    off = [r for r in rounds if r["presence"] == "off"]

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows if key in r))

    return {
        "sessions": None,
        "redis_commands_per_s": median(on, "redis_commands_per_s"),
        "list_ms": median(on, "list_ms"),
        "list_cli_ms": median(on, "list_cli_ms"),
        "dead_node_gone_s": median(on, "dead_node_gone_s"),
        "cpu_per_heartbeat_on_us": median(on, "cpu_per_heartbeat_us"),
        "cpu_per_heartbeat_off_us": median(off, "cpu_per_heartbeat_us"),
        "cpu_ratio_on_off": round(
            statistics.median(
                a["cpu_per_heartbeat_us"] / b["cpu_per_heartbeat_us"]
                for a, b in zip(on, off, strict=False)
            ),
            3,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=10.0, metavar="S",
                        help="each client's PING interval")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0, metavar="S",
                        help="heartbeat phase of each round")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of each (on, off), alternating")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="keep the figures here")
    args = parser.parse_args()
    rounds = trio.run(main_async, args)
    figures = summary(rounds)
    figures["sessions"] = args.sessions
    for row in rounds:
        print(row)
    for key, value in figures.items():
        print(f"{key:<28} {value}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rounds": rounds, "summary": figures}, indent=1) + "\n"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
