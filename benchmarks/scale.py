"""100,000 heartbeat clients against ``serve --workers N`` on one machine.

Run: python benchmarks/scale.py [--clients 100000] [--workers 6]
        [--json F] [--svg F]

Starts ``python -m trio_heartbeat serve --workers N`` (with ``--metrics-port``)
and opens ``--clients`` connections with ``loadgen scale`` (benchmarks/loadgen.c,
built with cc): several load generator processes, each from its own source
address in 127.0.0.0/8 (one address has only about 28,000 ephemeral ports, and
one process at most the machine's descriptor limit). The clients propose a
``--interval`` of 25 s and the server kicks after ``--timeout`` 60 s.

The load generators run at nice ``--loadgen-nice`` (10): on a server of its
own, the clients' share of the work (reading each CLOSE, closing the socket,
the kernel's half of loopback) would not take the server's two cores, as here
it would at the server's priority (``--loadgen-nice 0``; ``kick_accuracy.py``
keeps its clients off the server's core likewise). Arrivals are the kernel's
receive times (loadgen.c), so the clients' figures do not depend on their
priority. Then:

1. **connect**: every client connects and completes its HELLO exchange
   (at most 64 handshakes in flight per load generator): time to accept all,
   RSS per connection (the workers' resident memory, after - before);
2. **idle**: ``--idle`` seconds with nobody sending: the server's CPU;
3. **heartbeat**: every client PINGs once per interval, spread evenly
   (100,000 clients at one per 25 s: 4,000 PINGs/s), for ``--seconds``:
   PONG latency p50/p99/max, PINGs waiting over 100 ms, CPU per heartbeat;
4. **silent**: ``--silent`` of the clients send one last PING together and
   fall silent while the rest keep heartbeating: kick lateness, server side
   (the ``trio_heartbeat_kick_lateness_seconds`` histogram: when the server
   acted against when each client was due; in all and per worker), client
   side (CLOSE(1) arrival against last PING + timeout), and the server's
   lateness as the clients saw it, with a real p99 (CLOSE(1) arrival against
   the arrival of the PONG to that PING + timeout: the server read the PING
   just before it answered). A kicked client closes its socket when its
   CLOSE(1) arrives, as a live one does; with ``--silent-hold`` it answers
   nothing and keeps the socket open to the end, as a hung client or one whose
   network is gone would (the kernel still acknowledges here).

Every PING must be answered; the run fails otherwise. The load generators'
CPU per heartbeat is reported beside the server's. A progress line shows
while it runs; a table at the end. ``--json`` keeps the figures and the
per-second record, ``--svg`` draws it; ``--draw F.json --svg F.svg`` redraws a
kept record. Needs about 1.5 GB of memory per 100,000 connections (both ends),
and a descriptor limit (``ulimit -Hn``) of at least clients / workers + 100.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import build_loadgen

#: Seconds around each burst (the silent clients' last PINGs; their kicks)
#: whose PONGs are reported apart from the steady heartbeats'.
BURST = 5.0
#: Connections per load generator process (within one source address's ports
#: and one process's descriptors).
PER_LOADGEN = 16_000
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (IPv4)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def fetch_metrics(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/metrics.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.load(response)
        return data


def histogram_quantile(buckets: list[list[Any]], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (Prometheus's
    ``histogram_quantile`` without the interpolation: an upper bound)."""
    total = sum(count for _, count in buckets)
    seen = 0
    for le, count in buckets:
        seen += count
        if seen >= q * total:
            return math.inf if le == "inf" else float(le)
    return math.inf


def kick_p99_le_ms(figures: dict[str, Any]) -> float:
    """A bound on the kick lateness's p99 (ms) from a metrics snapshot: its
    bucket's upper bound, or the maximum if that is lower."""
    return 1000 * min(
        histogram_quantile(figures["kick_lateness_buckets"], 0.99),
        float(figures["kick_lateness_max"]),
    )


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Loadgen:
    """One ``loadgen scale`` process and its latest counts."""

    def __init__(self, process: trio.Process, out: Path, clients: int) -> None:
        self.process = process
        self.out = out
        self.clients = clients
        self.connected_after: float | None = None
        self.ready = self.sent = self.answered = self.kicked = 0
        self.worst_ms = 0.0  # since the last tick
        self.done: dict[str, int] = {}

    async def command(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                word, *values = raw.decode().split()
                if word == "tick":
                    self.ready, self.sent, self.answered, self.kicked = map(
                        int, values[:4]
                    )
                    self.worst_ms = max(self.worst_ms, float(values[4]))
                elif word == "connected":
                    self.connected_after = float(values[1])
                elif word == "done":
                    self.done = {values[i]: int(values[i + 1]) for i in range(0, 10, 2)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loadgen = build_loadgen()
    if loadgen is None:
        sys.exit("scale.py needs a C compiler (cc) for benchmarks/loadgen.c")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.clients / args.workers + 100 > hard:
        sys.exit(
            f"{args.clients:,} clients over {args.workers} workers need "
            f"{args.clients // args.workers + 100:,} descriptors per worker; "
            f"the hard limit is {hard:,}: more --workers, or raise it"
        )
    count = math.ceil(args.clients / PER_LOADGEN)
    shares = [args.clients // count + (i < args.clients % count) for i in range(count)]
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="scale-"))
    scratch.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (before any task)
    record: list[list[float]] = []  # [t, ready, sent, answered, kicked, worst ms]
    phases: dict[str, float] = {}
    lag: dict[str, float] = {}  # the worst loop lag so far, at each phase's end
    per_worker: list[dict[str, float]] = []  # each worker's kick figures
    server = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_heartbeat", "serve", "--workers",
         str(args.workers), "--port", "0", "--metrics-port", "0",
         "--timeout", str(args.timeout), "--min-interval", "1",
         "--log-level", "ERROR"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    gens: list[Loadgen] = []
    try:
        assert server.stdout is not None
        lines = b""
        while lines.count(b"\n") < 2:
            chunk = await server.stdout.receive_some(4096)
            if not chunk:
                sys.exit("serve ended before listening")
            lines += chunk
        port = int(lines.split(b"\n")[0].rsplit(b":", 1)[1])
        metrics_port = int(lines.split(b"\n")[1].rsplit(b":", 1)[1].split(b"/")[0])
        if args.workers == 1:  # serve is the server itself
            workers, pids, worker_ports = [server.pid], [server.pid], [metrics_port]
        else:
            with trio.fail_after(30):
                while len(workers := children(server.pid)) < args.workers:  # noqa: ASYNC110
                    await trio.sleep(0.1)  # (another process: nothing to wait on)
            pids = [server.pid, *workers]
            with trio.fail_after(30):  # each worker: the shared port, its metrics'
                while not all(own := [listening_ports(w) - {port} for w in workers]):  # noqa: ASYNC110
                    await trio.sleep(0.1)  # (other processes: nothing to wait on)
            worker_ports = [min(ports) for ports in own]
        rss_before = rss_bytes(workers)
        async with trio.open_nursery() as nursery:
            start = time.monotonic()

            def elapsed() -> float:
                return time.monotonic() - start

            for index, share in enumerate(shares):
                out = scratch / f"loadgen-{index}.txt"
                process = await trio.lowlevel.open_process(
                    [loadgen, "scale", str(port), f"127.0.0.{11 + index}",
                     str(share), str(args.interval), str(args.timeout), str(out)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    preexec_fn=partial(os.nice, args.loadgen_nice),
                )  # fmt: skip
                gen = Loadgen(process, out, share)
                gens.append(gen)
                nursery.start_soon(gen.read)

            async def progress(phase: str) -> None:
                ready = sum(g.ready for g in gens)
                sent = sum(g.sent for g in gens)
                answered = sum(g.answered for g in gens)
                kicked = sum(g.kicked for g in gens)
                worst = max(g.worst_ms for g in gens)
                for g in gens:
                    g.worst_ms = 0.0
                record.append([round(elapsed(), 2), ready, sent, answered, kicked,
                               worst])  # fmt: skip
                print(
                    f"\r{elapsed():6.0f} s  {phase:<9} connected {ready:>7,}  "
                    f"PINGs {sent:>9,}  answered {answered:>9,}  kicked "
                    f"{kicked:>6,}  slowest PONG this second {worst:7.1f} ms ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

            async def scrape(name: str) -> dict[str, Any]:
                figures = await trio.to_thread.run_sync(fetch_metrics, metrics_port)
                lag[name] = figures["loop_lag_max"] * 1000
                return figures

            async def phase(name: str, until: Any) -> None:
                while not until():
                    await trio.sleep(1)
                    await progress(name)

            await phase("connect", lambda: all(g.connected_after for g in gens))
            phases["connected"] = elapsed()
            accept_all = max(g.connected_after or 0 for g in gens)
            await trio.sleep(3)  # let the workers settle (freeze, collections)
            figures = await scrape("connect")
            assert figures["connections"] == args.clients, figures["connections"]
            rss_after = rss_bytes(workers)
            phases["idle"] = elapsed()
            cpu0 = cpu_seconds(pids)
            idle_end = elapsed() + args.idle
            await phase("idle", lambda: elapsed() >= idle_end)
            idle_cpu = (cpu_seconds(pids) - cpu0) / args.idle
            await scrape("idle")

            for gen in gens:
                await gen.command("ping")
            phases["heartbeat"] = elapsed()
            sent0 = sum(g.sent for g in gens)
            cpu0 = cpu_seconds(pids)
            gen_pids = [g.process.pid for g in gens]
            gen_cpu0 = cpu_seconds(gen_pids)
            beat_end = elapsed() + args.seconds
            await phase("heartbeat", lambda: elapsed() >= beat_end)
            beat_cpu = cpu_seconds(pids) - cpu0
            gen_cpu = cpu_seconds(gen_pids) - gen_cpu0
            beats = sum(g.sent for g in gens) - sent0
            await scrape("heartbeat")

            silent_shares = [
                args.silent // count + (i < args.silent % count) for i in range(count)
            ]
            hold = " hold" if args.silent_hold else ""
            for gen, silent in zip(gens, silent_shares, strict=True):
                await gen.command(f"silent {silent}{hold}")
            phases["silent"] = elapsed()
            burst_end = elapsed() + BURST
            await phase("silent", lambda: elapsed() >= burst_end)
            await scrape("burst")
            give_up = elapsed() + args.timeout + 30
            await phase(
                "silent",
                lambda: (
                    sum(g.kicked for g in gens) >= args.silent or elapsed() > give_up
                ),
            )
            await trio.sleep(1)  # the kicked connections' cleanup
            figures = await scrape("kicks")
            for worker_port in worker_ports:
                part = await trio.to_thread.run_sync(fetch_metrics, worker_port)
                per_worker.append({
                    "kicked": part["kick_lateness_count"],
                    "kick_p99_le_ms": kick_p99_le_ms(part),
                    "kick_max_ms": round(1000 * part["kick_lateness_max"], 1),
                    "loop_lag_max_ms": round(1000 * part["loop_lag_max"], 1),
                })  # fmt: skip
            for gen in gens:
                await gen.command("stop")
            phases["end"] = elapsed()
            await phase("stop", lambda: all(g.done for g in gens))
            print(file=sys.stderr)
            nursery.cancel_scope.cancel()
    finally:
        for gen in gens:
            if gen.process.returncode is None:
                gen.process.kill()
        server.terminate()
        with trio.move_on_after(30):
            await server.wait()
        if server.returncode is None:
            server.kill()
    # PONGs by when their PING was sent: in steady heartbeats, or around the
    # two bursts (the silent clients' last PINGs, all at once; their kicks).
    steady: list[float] = []
    bursts: list[float] = []
    kicks: list[float] = []
    kicks_pong: list[float] = []  # against the PONG's arrival: the server's view
    silent_at = start + phases["silent"]
    kick_at = silent_at + args.timeout
    for gen in gens:
        for line in gen.out.read_text().splitlines():
            kind, *values = line.split()
            if kind == "kick":
                kicks.append(float(values[0]) * 1000)
                if values[1] != "nan":
                    kicks_pong.append(float(values[1]) * 1000)
                continue
            sent_at, latency = float(values[0]), float(values[1]) * 1000
            in_burst = (  # PINGs just before a burst wait in its rounds too
                silent_at - BURST <= sent_at < silent_at + BURST
                or kick_at - BURST <= sent_at < kick_at + BURST
            )
            (bursts if in_burst else steady).append(latency)
    if not args.keep:
        shutil.rmtree(scratch)
    steady.sort()
    bursts.sort()
    kicks.sort()
    kicks_pong.sort()
    totals = {key: sum(g.done.get(key, 0) for g in gens) for key in gens[0].done}
    return {
        "when": time.strftime("%Y-%m-%d"),
        "clients": args.clients,
        "workers": args.workers,
        "loadgens": count,
        "loadgen_nice": args.loadgen_nice,
        "interval_s": args.interval,
        "timeout_s": args.timeout,
        "silent": args.silent,
        "silent_hold": args.silent_hold,
        "accept_all_s": round(accept_all, 2),
        "rss_per_connection_kb": round(
            (rss_after - rss_before) / args.clients / 1024, 2
        ),
        "idle_cpu_percent": round(100 * idle_cpu, 2),
        "heartbeats_per_s": round(beats / args.seconds),
        "cpu_per_heartbeat_us": round(1e6 * beat_cpu / beats, 1) if beats else None,
        "loadgen_cpu_per_heartbeat_us": (
            round(1e6 * gen_cpu / beats, 1) if beats else None
        ),
        "pong_count": len(steady),
        "pong_p50_ms": round(percentile(steady, 0.5), 3),
        "pong_p99_ms": round(percentile(steady, 0.99), 3),
        "pong_max_ms": round(steady[-1], 1),
        "pongs_over_100ms": sum(1 for v in steady if v > 100),
        "burst_pong_count": len(bursts),
        "burst_pong_p99_ms": round(percentile(bursts, 0.99), 1),
        "burst_pong_max_ms": round(bursts[-1], 1),
        "loop_lag_max_ms_by_phase": {k: round(v, 1) for k, v in lag.items()},
        "sent": totals.get("sent", 0),
        "answered": totals.get("answered", 0),
        "unanswered": totals.get("unanswered", 0),
        "unexpected_ends": totals.get("unexpected", 0),
        "kicked": totals.get("kicked", 0),
        "kick_server_p99_le_ms": kick_p99_le_ms(figures),
        "kick_server_max_ms": round(figures["kick_lateness_max"] * 1000, 1),
        "kick_client_p50_ms": round(percentile(kicks, 0.5), 1) if kicks else None,
        "kick_client_p99_ms": round(percentile(kicks, 0.99), 1) if kicks else None,
        "kick_client_max_ms": round(kicks[-1], 1) if kicks else None,
        **(
            {
                "kick_pong_p50_ms": round(percentile(kicks_pong, 0.5), 1),
                "kick_pong_p99_ms": round(percentile(kicks_pong, 0.99), 1),
                "kick_pong_max_ms": round(kicks_pong[-1], 1),
            }
            if kicks_pong
            else {}
        ),
        "per_worker": per_worker,
        "loop_lag_max_ms": round(figures["loop_lag_max"] * 1000, 1),
        "stalled_s": round(figures["stalled_seconds"], 3),
        "phases": {k: round(v, 1) for k, v in phases.items()},
        "record": record,
    }


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The report, line by line."""
    lag = ", ".join(f"{k} {v:.0f}" for k, v in r["loop_lag_max_ms_by_phase"].items())
    return [
        ("clients, workers", f"{r['clients']:,} over {r['workers']} workers"),
        ("load generators", f"{r['loadgens']}, at nice {r.get('loadgen_nice', 0)}"),
        ("time to accept all", f"{r['accept_all_s']:.1f} s"),
        ("RSS per connection", f"{r['rss_per_connection_kb']:.2f} KB"),
        ("idle CPU (all workers)", f"{r['idle_cpu_percent']:.1f} % of a core"),
        ("heartbeats per second", f"{r['heartbeats_per_s']:,}"),
        ("CPU per heartbeat", f"{r['cpu_per_heartbeat_us']} µs"),
        *([("  the load generators' share", f"{r['loadgen_cpu_per_heartbeat_us']} µs")]
          if r.get("loadgen_cpu_per_heartbeat_us") else []),
        ("PONG latency p50 / p99",
         f"{r['pong_p50_ms']:.2f} / {r['pong_p99_ms']:.2f} ms"),
        ("slowest PONG", f"{r['pong_max_ms']:.1f} ms"),
        ("PONGs over 100 ms", f"{r['pongs_over_100ms']:,} of {r['pong_count']:,}"),
        ("around the bursts: p99 / slowest",
         f"{r['burst_pong_p99_ms']:.1f} / {r['burst_pong_max_ms']:.1f} ms "
         f"({r['burst_pong_count']:,} PONGs)"),
        ("PINGs unanswered", f"{r['unanswered']:,} of {r['sent']:,}"),
        ("kicked (silent at once)", f"{r['kicked']:,} of {r['silent']:,}"
         + (", sockets held open" if r.get("silent_hold") else "")),
        ("kick lateness, server: p99 / max",
         f"≤ {r['kick_server_p99_le_ms']:.1f} / {r['kick_server_max_ms']:.1f} ms"),
        ("kick lateness, client: p99 / max",
         f"{r['kick_client_p99_ms']:.1f} / {r['kick_client_max_ms']:.1f} ms"),
        *([("kick lateness, after the PONG: p50 / p99 / max",
            f"{r['kick_pong_p50_ms']:.1f} / {r['kick_pong_p99_ms']:.1f} / "
            f"{r['kick_pong_max_ms']:.1f} ms")] if r.get("kick_pong_max_ms") else []),
        *([("  each worker: kicks, p99 ≤ / max ms", ", ".join(
            f"{w['kicked']:,} {w['kick_p99_le_ms']:.0f}/{w['kick_max_ms']:.0f}"
            for w in r["per_worker"]))] if r.get("per_worker") else []),
        ("worst loop lag (any worker)", f"{r['loop_lag_max_ms']:.1f} ms"),
        ("  so far, at each phase's end", lag),
    ]  # fmt: skip


def table(result: dict[str, Any]) -> str:
    return "\n".join(f"{name:<34} {value}" for name, value in rows(result))


def draw(result: dict[str, Any]) -> str:
    """An SVG: connections open (top) and the slowest PONG of each second
    (bottom, with the 250 ms line), the phases marked."""
    record = result["record"]
    width, left, right = 820, 80, 20
    top_panel, bottom_panel, gap, top = 150, 190, 75, 30
    height = top + top_panel + gap + bottom_panel + 50
    seconds = max(row[0] for row in record)
    worst = max(max(row[5] for row in record), 1.0)
    scale_ms = max(300.0, worst * 1.1)

    def x(t: float) -> float:
        return left + (width - left - right) * t / seconds

    def y_conn(v: float) -> float:
        return top + top_panel - top_panel * v / result["clients"]

    base = top + top_panel + gap + bottom_panel

    def y_ms(v: float) -> float:
        return base - bottom_panel * v / scale_ms

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="14">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for y0, y1 in ((top, top + top_panel), (base - bottom_panel, base)):
        out.append(
            f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y1}" stroke="black"/>'
        )
        out.append(f'<line x1="{left}" y1="{y1}" x2="{width - right}" y2="{y1}" '
                   'stroke="black"/>')  # fmt: skip
    for frac in (0, 0.5, 1):
        value = result["clients"] * frac
        out.append(f'<text x="{left - 6}" y="{y_conn(value) + 5:.1f}" '
                   f'text-anchor="end">{value / 1000:g}k</text>')  # fmt: skip
    step = 100 if scale_ms <= 600 else 250
    ms = 0
    while ms <= scale_ms:
        out.append(f'<text x="{left - 6}" y="{y_ms(ms) + 5:.1f}" '
                   f'text-anchor="end">{ms} ms</text>')  # fmt: skip
        ms += step
    out.append(f'<text x="{left + 6}" y="{top - 8}">connections open</text>')
    out.append(f'<text x="{left + 6}" y="{base - bottom_panel - 8}">'
               "slowest PONG in each second</text>")  # fmt: skip
    path = " ".join(f"{x(r[0]):.1f},{y_conn(r[1] - r[4]):.1f}" for r in record)
    out.append(f'<polyline points="{path}" fill="none" stroke="#2471a3" '
               'stroke-width="2.5"/>')  # fmt: skip
    for r in record:
        if r[5] > 0:
            out.append(f'<line x1="{x(r[0]):.1f}" y1="{base}" x2="{x(r[0]):.1f}" '
                       f'y2="{y_ms(r[5]):.1f}" stroke="#2471a3" '
                       'stroke-width="2"/>')  # fmt: skip
    out.append(
        f'<line x1="{left}" y1="{y_ms(250):.1f}" x2="{width - right}" '
        f'y2="{y_ms(250):.1f}" stroke="#c0392b" stroke-dasharray="6 4"/>'
    )
    out.append(f'<text x="{width - right - 4}" y="{y_ms(250) - 6:.1f}" '
               'text-anchor="end" fill="#c0392b">250 ms</text>')  # fmt: skip
    kick_at = result["phases"]["silent"] + result["timeout_s"]
    labels = {
        "idle": result["phases"]["idle"],
        f"{result['heartbeats_per_s']:,} PINGs/s": result["phases"]["heartbeat"],
        f"{result['silent']:,} fall silent": result["phases"]["silent"],
        "kicked": kick_at,
    }
    for row, (label, at) in enumerate(labels.items()):
        out.append(f'<line x1="{x(at):.1f}" y1="{top}" x2="{x(at):.1f}" '
                   f'y2="{base}" stroke="#888" stroke-dasharray="2 4"/>')  # fmt: skip
        anchor = "end" if x(at) > width - 150 else "start"
        shift = -4 if anchor == "end" else 4
        out.append(f'<text x="{x(at) + shift:.1f}" '
                   f'y="{top + top_panel + 20 + 18 * (row % 2)}" '
                   f'text-anchor="{anchor}" fill="#555">{label}</text>')  # fmt: skip
    for t in range(0, int(seconds) + 1, 30):
        out.append(f'<text x="{x(t):.1f}" y="{base + 20}" text-anchor="middle">'
                   f"{t}</text>")  # fmt: skip
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" '
               'text-anchor="middle">seconds into the run</text>')  # fmt: skip
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--interval", type=float, default=25.0, metavar="S",
                        help="each client's PING interval")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="the server's --timeout")  # fmt: skip
    parser.add_argument("--idle", type=float, default=5.0, metavar="S")
    parser.add_argument("--seconds", type=float, default=60.0, metavar="S",
                        help="heartbeating time before the silent burst")  # fmt: skip
    parser.add_argument("--silent", type=int, default=10_000, metavar="N")
    parser.add_argument("--loadgen-nice", type=int, default=10, metavar="N",
                        help="the load generators' nice value (0: the server's "
                             "priority; default %(default)s)")  # fmt: skip
    parser.add_argument("--silent-hold", action="store_true",
                        help="the silent clients never answer their CLOSE(1): "
                        "their sockets stay open to the end")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="keep the figures here")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the load generators' samples here (one line "
                        "per PONG and per kick; see benchmarks/loadgen.c)")  # fmt: skip
    parser.add_argument("--svg", metavar="FILE", help="draw the run here")
    parser.add_argument("--draw", metavar="FILE",
                        help="draw this kept record instead of running")  # fmt: skip
    args = parser.parse_args()
    if args.draw:
        result = json.loads(Path(args.draw).read_text())
    else:
        result = trio.run(run, args)
        print(table(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        if result["unanswered"] or result["unexpected_ends"]:
            sys.exit("some PINGs went unanswered or connections ended unexpectedly")
    if args.svg:
        Path(args.svg).write_text(draw(result))


if __name__ == "__main__":
    main()
