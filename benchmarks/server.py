"""Server cost: memory per idle connection, idle CPU, CPU per heartbeat.

Run: python benchmarks/server.py [--servers NAME ...] [--json F] [--rst F] [--svg F]

For each server in turn: start it pinned to core 0 and drive it from this
process (a Trio load generator) pinned to core 1. Server memory is VmRSS and
server CPU is utime + stime, both read from /proc/<pid>. The servers:

* ``trio_heartbeat``: ``python -m trio_heartbeat serve --port 0``;
* ``bare-trio``: benchmarks/bare_trio_server.py, the floor of what Trio can do
  for the same protocol; ``bare-trio-frozen`` is the same with its startup
  objects frozen out of the garbage collector (``gc.freeze()``), as ``serve``
  does;
* ``websockets-asyncio`` / ``websockets-trio``: benchmarks/websockets_server.py,
  heartbeats being WebSocket PINGs (needs ``pip install websockets``);
* ``legacy-c``: the classic C++ epoll heartbeat server that ``--protocol
  legacy`` talks to, built with g++ from its sources (not shipped with the
  project; the directory is ``THB_LEGACY_SOURCES``, by default
  ``../shared/reference`` beside the checkout), heartbeats being its
  ``HeartBeat`` / ``OK``;
* ``trio_heartbeat-2-workers``: ``serve --workers 2``, not pinned.

The max-rate phase is driven by benchmarks/loadgen.c (compiled with cc on the
fly; ``--python-loadgen`` uses this process instead), so that the load generator
is not what limits the rate. Its pipeline depth is 4 (``BENCH_PIPELINE``).

The machine's speed drifts, so compare the ratios printed at the end (taken in
one run), not absolute figures across runs.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from trio_heartbeat import FrameDecoder, Hello, encode

HELLO = encode(Hello({"version": 1, "interval": 3600}))
PING = b"\x03\x00"
BENCHMARKS = Path(__file__).resolve().parent
REFERENCE = Path(
    os.environ.get(
        "THB_LEGACY_SOURCES", BENCHMARKS.parent.parent / "shared" / "reference"
    )
)
WS_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class ReplyCounter:
    def feed(self, data: bytes) -> int:
        """Take received bytes; return how many heartbeat answers they completed."""
        raise NotImplementedError


class ByteCounter(ReplyCounter):
    """Fixed-size answers (PONG, the C server's OK): count bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.partial = 0

    def feed(self, data: bytes) -> int:
        total = self.partial + len(data)
        self.partial = total % self.size
        return total // self.size


class FrameCounter(ReplyCounter):
    """WebSocket: count PONG frames, skip the server's own keepalive PINGs."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> int:
        buffer = self.buffer + data
        pongs = 0
        while len(buffer) >= 2:
            size = buffer[1] & 0x7F  # control frames: payload < 126
            if len(buffer) < 2 + size:
                break
            pongs += (buffer[0] & 0x0F) == 0xA
            buffer = buffer[2 + size :]
        self.buffer = buffer
        return pongs


class Protocol:
    """How the load generator opens a connection and sends one heartbeat."""

    def __init__(
        self, name: str, ping: bytes, reply: int, pipeline: int, handshake: str
    ) -> None:
        self.name = name
        self.handshake_mode = handshake  # for loadgen.c: framed, http or none
        self.ping = ping
        self.reply = reply  # bytes of the answer to one heartbeat
        self.pipeline = pipeline  # heartbeats in flight in the max-rate phase

    def counter(self) -> ReplyCounter:
        return FrameCounter() if self.name == "websocket" else ByteCounter(self.reply)

    async def handshake(self, stream: trio.SocketStream) -> None:
        if self.name == "framed":
            await stream.send_all(HELLO)
            decoder = FrameDecoder()
            while decoder.next_frame() is None:
                decoder.receive_data(await stream.receive_some(65536))
        elif self.name == "websocket":
            await stream.send_all(WS_UPGRADE)
            response = b""
            while not response.endswith(b"\r\n\r\n"):
                response += await stream.receive_some(1)
            assert response.startswith(b"HTTP/1.1 101"), response


#: Heartbeats each connection keeps in flight in the max-rate phase.
PIPELINE = int(os.environ.get("BENCH_PIPELINE", "4"))
PROTOCOLS = {
    "framed": Protocol("framed", PING, 2, pipeline=PIPELINE, handshake="framed"),
    # A client PING: FIN + opcode 9, masked (all-zero key), no payload.
    "websocket": Protocol(
        "websocket", b"\x89\x80\0\0\0\0", 2, pipeline=PIPELINE, handshake="http"
    ),
    # The C server reads heartbeats with strcmp and edge-triggered epoll: one
    # at a time, or it stalls.
    "legacy": Protocol("legacy", b"HeartBeat", 9, pipeline=1, handshake="none"),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """The process and its descendants (a --workers supervisor has children)."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in children.read().split():
                pids += tree(int(child))
    return pids


def rss_kb(pid: int) -> int:
    total = 0
    for each in tree(pid):
        with open(f"/proc/{each}/status") as status:
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read())
        assert match
        total += int(match.group(1))
    return total


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for each in tree(pid):
        with open(f"/proc/{each}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def pin(cpu: int) -> None:
    cores = os.cpu_count() or 1
    if hasattr(os, "sched_setaffinity") and cores > cpu:
        os.sched_setaffinity(0, {cpu})


def unpin() -> None:
    """Every core again (children inherit this process's core 1 otherwise)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


MAX_RATE_CONNECTIONS = 200


def build_loadgen() -> str | None:
    """loadgen.c compiled, once per version of its source (kept in the
    temporary directory under its hash); None without a C compiler."""
    import hashlib
    import shutil
    import tempfile

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = BENCHMARKS / "loadgen.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"trio_heartbeat-loadgen-{digest}"
    if not out.exists():
        building = out.with_name(f"{out.name}.{os.getpid()}")
        subprocess.run([compiler, "-O2", "-o", str(building), str(source)],
                       check=True)  # fmt: skip
        building.replace(out)  # whole, even with another run building it too
    return str(out)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_legacy_server(port: int) -> list[str]:
    """Compile the classic C++ server for ``port`` (its port is a macro)."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="legacy-server-")) / "seed_server"
    subprocess.run(
        ["g++", "-O2", "-pthread", f"-DSER_PORT={port}", "-DSERVER_TIMEOUT=3600",
         "-o", str(out), str(REFERENCE / "seed_server.cpp")],
        check=True,
    )  # fmt: skip
    return [str(out)]


PROTOCOL_OF = {
    "websockets-asyncio": "websocket",
    "websockets-trio": "websocket",
    "legacy-c": "legacy",
}
#: Where each version of trio_heartbeat runs from (its working directory, so
#: that it imports that checkout's package whatever directory this ran in).
CHECKOUTS: dict[str, Path] = {"trio_heartbeat": BENCHMARKS.parent.resolve()}


def baseline_checkout(path: str) -> Path:
    """``--baseline``: a checkout of this project (a git worktree, say), said
    which commit when git can tell. A directory that only holds a package
    (an old copy) would run some unknown code as "the baseline"."""
    root = Path(path).resolve()
    if (
        not (root / "pyproject.toml").is_file()
        or not (root / "trio_heartbeat" / "__init__.py").is_file()
    ):
        raise SystemExit(f"--baseline {path}: not a checkout of trio_heartbeat")
    described = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"baseline: {root} ({described or 'not a git checkout'})")
    return root


SERVERS = {
    # --min-interval 1e-6: the load generator PINGs far faster than any real
    # client (and pipelines them); ping strikes would close its connections.
    "trio_heartbeat": [sys.executable, "-m", "trio_heartbeat", "serve", "--port", "0",
                       "--timeout", "3600", "--min-interval", "1e-6",
                       "--log-level", "WARNING"],
    "bare-trio": [sys.executable, str(Path(__file__).with_name("bare_trio_server.py")),
                  "0"],
    "bare-trio-frozen": [sys.executable,
                         str(Path(__file__).with_name("bare_trio_server.py")),
                         "0", "--freeze-gc"],
    "websockets-asyncio": [sys.executable, str(BENCHMARKS / "websockets_server.py"),
                           "asyncio", "0"],
    "websockets-trio": [sys.executable, str(BENCHMARKS / "websockets_server.py"),
                        "trio", "0"],
    "legacy-c": [],  # built per run: its port is a compile-time macro
    # Not pinned: its workers are meant to use both cores (and so compete with
    # the load generator on a 2-core machine).
    "trio_heartbeat-2-workers": [sys.executable, "-m", "trio_heartbeat", "serve",
                                 "--port", "0", "--timeout", "3600", "--workers", "2",
                                 "--min-interval", "1e-6", "--log-level", "WARNING"],
}  # fmt: skip
UNPINNED = {"trio_heartbeat-2-workers"}


def start_server(
    cmd: list[str], pinned: bool, cwd: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server printing "... PORT" first; ``cwd``: its working directory
    (a checkout's root, for ``python -m``/``-c`` put it first on the path)."""
    if not cmd:  # the C server: a fixed port, and it prints per message
        port = free_port()
        process = subprocess.Popen(
            build_legacy_server(port),
            stdout=subprocess.DEVNULL,
            preexec_fn=(lambda: pin(0)) if pinned else unpin,
        )
        time.sleep(0.5)
        return process, port
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        preexec_fn=(lambda: pin(0)) if pinned else unpin,
        cwd=cwd,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    port = int(line.strip().rsplit(":", 1)[1])
    return process, port


class LoadGenerator:
    def __init__(self, port: int, protocol: Protocol) -> None:
        self.port = port
        self.protocol = protocol
        self.streams: list[trio.SocketStream] = []

    async def connect(self, total: int) -> None:
        """Grow to `total` connections, each past the HELLO exchange."""

        async def one() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            await self.protocol.handshake(stream)
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

        ping = self.protocol.ping

        async def drive(index: int, stream: trio.SocketStream) -> None:
            next_at = start + index / rate
            counter = self.protocol.counter()
            while next_at < end:
                await trio.sleep_until(next_at)
                sent = trio.current_time()
                await stream.send_all(ping)
                while not counter.feed(await stream.receive_some(65536)):
                    pass
                latencies.append(trio.current_time() - sent)
                next_at += period

        async with trio.open_nursery() as nursery:
            for index, stream in enumerate(streams):
                nursery.start_soon(drive, index, stream)
        return len(latencies), latencies

    async def max_rate(self, seconds: float) -> float:
        """Each connection PINGs back-to-back (pipeline deep); return PONGs/s."""
        done = 0
        end = trio.current_time() + seconds
        pipeline = self.protocol.pipeline
        batch = self.protocol.ping * pipeline

        async def hammer(stream: trio.SocketStream) -> None:
            nonlocal done
            counter = self.protocol.counter()
            while trio.current_time() < end:
                await stream.send_all(batch)
                answered = 0
                while answered < pipeline:
                    answered += counter.feed(await stream.receive_some(65536))
                done += pipeline

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for stream in self.streams[:MAX_RATE_CONNECTIONS]:
                nursery.start_soon(hammer, stream)
        return done / (trio.current_time() - started)

    async def max_rate_c(self, seconds: float, loadgen: str) -> float:
        """As max_rate, driven by loadgen.c (one epoll thread, ~1 µs a reply)."""
        protocol = self.protocol
        result = await trio.run_process(
            [loadgen, str(self.port), str(MAX_RATE_CONNECTIONS), str(seconds),
             str(protocol.pipeline), protocol.handshake_mode, protocol.ping.hex(),
             str(protocol.reply)],
            capture_stdout=True,
        )  # fmt: skip
        return float(result.stdout.split()[-1])

    async def close(self) -> None:
        for stream in self.streams:
            await stream.aclose()
        self.streams.clear()


async def measure(args: argparse.Namespace, name: str) -> dict[str, object]:
    process, port = start_server(
        SERVERS[name], name not in UNPINNED, CHECKOUTS.get(name)
    )
    protocol = PROTOCOLS[PROTOCOL_OF.get(name, "framed")]
    results: dict[str, object] = {"server": name}
    try:
        await trio.sleep(0.5)
        base = rss_kb(process.pid)
        results["rss_base_kb"] = base
        load = LoadGenerator(port, protocol)
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
        driver = LoadGenerator(port, protocol)
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
        results["latency_max_ms"] = round(latencies[-1] * 1e3, 3)

        if args.loadgen is not None:
            rate = await driver.max_rate_c(args.max_seconds, args.loadgen)
        else:
            rate = await driver.max_rate(args.max_seconds)
        results["max_heartbeats_per_s"] = round(rate)
        await load.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def median_of(results: list[dict[str, object]]) -> dict[str, object]:
    """Per-key median of several rounds (numbers, and dicts of numbers)."""
    merged: dict[str, object] = {}
    for key, first in results[0].items():
        values = [r[key] for r in results]
        if isinstance(first, dict):
            merged[key] = {
                k: statistics.median(v[k] for v in values)  # type: ignore[index]
                for k in first
            }
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            merged[key] = statistics.median(values)  # type: ignore[type-var]
        else:
            merged[key] = first
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--heartbeat-connections", type=int, default=1000)
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="median of N rounds")
    parser.add_argument(
        "--python-loadgen",
        action="store_true",
        help="drive the max-rate phase from Python instead of loadgen.c",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--rst", help="also write a reStructuredText table here")
    parser.add_argument("--svg", help="also draw a bar chart (SVG) here")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run trio_heartbeat from the checkout in DIR (another version, "
        "e.g. a git worktree of main) as 'trio_heartbeat-baseline', for A/B "
        "figures taken in the same run",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["trio_heartbeat", "bare-trio"],
        choices=[*SERVERS, "trio_heartbeat-baseline"],
    )
    args = parser.parse_args()
    if args.baseline:
        # Both versions start the same way, from their checkout's directory on
        # PYTHONPATH and as the working directory (which ``python -m`` puts
        # first on the path: started in this checkout's root, the baseline
        # would run this checkout's code). The same code installed (editable)
        # against on PYTHONPATH once came out 1.20x in CPU per heartbeat and
        # 0.95x in max rate.
        command = SERVERS["trio_heartbeat"]
        CHECKOUTS["trio_heartbeat-baseline"] = baseline_checkout(args.baseline)
        for name, checkout in CHECKOUTS.items():
            SERVERS[name] = ["env", f"PYTHONPATH={checkout}", *command]
        if "trio_heartbeat-baseline" not in args.servers:
            args.servers.append("trio_heartbeat-baseline")
    if "legacy-c" in args.servers and not (REFERENCE / "seed_server.cpp").exists():
        print(f"skipping legacy-c: no seed_server.cpp in {REFERENCE} "
              "(set THB_LEGACY_SOURCES)", file=sys.stderr)  # fmt: skip
        args.servers.remove("legacy-c")
    needed = 2 * max(args.connections) + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    args.loadgen = None if args.python_loadgen else build_loadgen()
    pin(1)
    # Rounds alternate the servers, and their order, so drift in the machine's
    # speed hits all of them alike; each figure is the median over the rounds.
    rounds: dict[str, list[dict[str, object]]] = {name: [] for name in args.servers}
    for number in range(args.rounds):
        for name in args.servers[:: 1 if number % 2 == 0 else -1]:
            started = time.monotonic()
            results = trio.run(measure, args, name)
            results["benchmark_seconds"] = round(time.monotonic() - started, 1)
            rounds[name].append(results)
    runs = [median_of(rounds[name]) for name in args.servers]
    keys = list(runs[0])
    width = max(len(k) for k in keys)
    print(f"{'':<{width}}  " + "  ".join(f"{r['server']!s:>18}" for r in runs[:]))
    for key in keys[1:]:
        print(f"{key:<{width}}  " + "  ".join(f"{r[key]!s:>18}" for r in runs))
    ratios = ratios_of(runs)
    if args.baseline:
        ratios += round_ratios(
            rounds["trio_heartbeat"], rounds["trio_heartbeat-baseline"]
        )
    for line in ratios:
        print(line)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"runs": runs, "ratios": ratios}, out, indent=2)
    if args.rst:
        Path(args.rst).write_text(rst_table(runs))
    if args.svg:
        Path(args.svg).write_text(svg_chart(runs))


def round_ratios(ours: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[str]:
    """This checkout against the baseline round by round (each pair ran back to
    back): the median of those ratios, and each."""
    lines = ["trio_heartbeat / trio_heartbeat-baseline, median of the rounds' ratios:"]
    for key in ("cpu_us_per_heartbeat", "max_heartbeats_per_s"):
        each = [float(a[key]) / float(b[key]) for a, b in zip(ours, base, strict=True)]
        lines.append(f"  {key}: {statistics.median(each):.2f}x "
                     f"(each: {', '.join(f'{x:.2f}' for x in each)})")  # fmt: skip
    return lines


def _by_name(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["server"]): r for r in runs}


def ratios_of(runs: list[dict[str, Any]]) -> list[str]:
    """trio_heartbeat against the bare Trio floor and websockets, same run."""
    by = _by_name(runs)
    ours = by.get("trio_heartbeat")
    lines: list[str] = []
    if ours is None:
        return lines
    others = ("trio_heartbeat-baseline", "bare-trio", "websockets-trio",
              "websockets-asyncio", "legacy-c")  # fmt: skip
    for other in others:
        if other not in by:
            continue
        them = by[other]
        lines.append(f"trio_heartbeat / {other}:")
        for key in ("cpu_us_per_heartbeat", "max_heartbeats_per_s"):
            lines.append(f"  {key}: {float(ours[key]) / float(them[key]):.2f}x")
        for n, kb in ours["kb_per_idle_connection"].items():
            base = them["kb_per_idle_connection"][n]
            ratio = f"{kb / base:.2f}x" if base > 0 else "-"
            lines.append(f"  kb_per_idle_connection at {n}: {kb} vs {base} ({ratio})")
    workers = by.get("trio_heartbeat-2-workers")
    if workers is not None:
        scaling = float(workers["max_heartbeats_per_s"]) / float(
            ours["max_heartbeats_per_s"]
        )
        lines.append(f"2 workers / 1 worker, max_heartbeats_per_s: {scaling:.2f}x")
    return lines


Run = dict[str, Any]

COLUMNS: list[tuple[str, Callable[[Run], Any]]] = [
    ("KB/idle conn, 1k", lambda r: r["kb_per_idle_connection"].get("1000", "")),
    ("KB/idle conn, 10k", lambda r: r["kb_per_idle_connection"].get("10000", "")),
    ("idle CPU %", lambda r: next(v for k, v in r.items() if k.startswith("idle_"))),
    ("CPU µs/heartbeat", lambda r: r["cpu_us_per_heartbeat"]),
    ("p99 ms at 2k/s", lambda r: r["latency_p99_ms"]),
    ("max ms at 2k/s", lambda r: r.get("latency_max_ms", "")),
    ("max heartbeats/s", lambda r: r["max_heartbeats_per_s"]),
]


def rst_table(runs: list[dict[str, Any]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    lines.append("   * - server")
    lines += [f"     - {title}" for title, _ in COLUMNS]
    for run in runs:
        lines.append(f"   * - {run['server']}")
        lines += [f"     - {get(run)}" for _, get in COLUMNS]
    return "\n".join(lines) + "\n"


def svg_chart(runs: list[dict[str, Any]]) -> str:
    """Two bar charts side by side: CPU per heartbeat and memory per connection."""
    panels: list[tuple[str, Callable[[Run], float]]] = [
        ("server CPU per heartbeat (µs)", lambda r: float(r["cpu_us_per_heartbeat"])),
        (
            "memory per idle connection at 10k (KB)",
            lambda r: float(r["kb_per_idle_connection"].get("10000", 0)),
        ),
    ]
    bar_h, gap, label_w, panel_w = 18, 6, 190, 260
    height = 40 + len(runs) * (bar_h + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + 2 * panel_w + 40}"'
        f' height="{height}" font-family="sans-serif" font-size="12">'
    ]
    for p, (title, get) in enumerate(panels):
        x0 = label_w + p * (panel_w + 20)
        top = max(get(r) for r in runs) or 1.0
        parts.append(f'<text x="{x0}" y="16" font-weight="bold">{title}</text>')
        for i, run in enumerate(runs):
            y = 30 + i * (bar_h + gap)
            if p == 0:
                parts.append(f'<text x="4" y="{y + 13}">{run["server"]}</text>')
            value = get(run)
            w = max(1.0, (panel_w - 60) * value / top)
            color = "#2a7ab8" if run["server"] == "trio_heartbeat" else "#9aa5b1"
            parts.append(
                f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}"'
                f' fill="{color}"/>'
            )
            parts.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 13}">{value:g}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
