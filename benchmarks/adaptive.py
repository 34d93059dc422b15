"""The adaptive interval through a real NAT: a recorded run, and its picture.

Needs root, ``ip`` and ``nft`` (Linux): it makes three network namespaces
(client, a NAT router, server; tests/netns.py's ``nat``) where the router
forgets an idle established TCP flow after ``--nat-limit`` seconds, runs
``serve`` in the server's and ``connect --adaptive --reconnect`` in the
client's for ``--seconds``, and records from the client's log every PING, every
interval change and every link declared dead. It prints what the client
learned and the heartbeats per hour against a fixed interval at the starting
one (what a developer who does not know the path must pick); ``--json`` keeps
the record and ``--svg`` draws it (interval over time, the NAT limit, the
failures)::

    sudo python benchmarks/adaptive.py --json docs/_static/adaptive.json \\
        --svg docs/_static/adaptive.svg

``--draw FILE.json --svg FILE.svg`` redraws a kept record (the docs' test
checks the picture against its record this way).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+\[\d+\]: (.*)$")
CHANGE = re.compile(r"heartbeat interval (\S+) s -> (\S+) s \((\w+)\)")


def record(nat_limit: int, start: float, seconds: float) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests import netns  # the same topology as tests/test_nat.py

    netns.require("ip", "nft")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    module = [sys.executable, "-m", "trio_heartbeat"]
    with netns.namespaces() as made:
        cli, srv = netns.nat(made, nat_limit)
        server = subprocess.Popen(
            ["ip", "netns", "exec", srv, *module, "serve", "--host",
             netns.NAT_SERVER, "--timeout", "600", "--min-interval", "0.1"],
            stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        client = None
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith(b"listening on")
            client = subprocess.Popen(
                ["ip", "netns", "exec", cli, *module, "connect", netns.NAT_SERVER,
                 "--adaptive", "--interval", str(start), "--reconnect",
                 "--retries", "1", "--retry-interval", "0.5", "--max-backoff", "1",
                 "--log-level", "DEBUG"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            began = time.time()
            time.sleep(seconds)
            _, log = client.communicate(b"", timeout=30)
        finally:
            for process in (client, server):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
    pings, changes, deaths, connects = [], [], [], []
    for line in log.decode().splitlines():
        match = LINE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        at, message = round(stamp - began, 3), match.group(2)
        if message.endswith("> PING (2 bytes)"):
            pings.append(at)
        elif (change := CHANGE.search(message)) is not None:
            changes.append([at, float(change[1]), float(change[2]), change[3]])
        elif "declared dead" in message:
            deaths.append(at)
        elif message.startswith("connected to"):
            connects.append(at)
    return {
        "nat_limit": nat_limit,
        "start": start,
        "seconds": seconds,
        "pings": pings,
        "changes": changes,
        "deaths": deaths,
        "connects": connects,
    }


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """What the run shows, in numbers."""
    settled = [c for c in run["changes"] if c[3] == "settled"]
    learned = settled[-1][2] if settled else None
    settled_at = settled[-1][0] if settled else None
    after = [t for t in run["pings"] if settled_at is not None and t > settled_at]
    return {
        "nat_limit_s": run["nat_limit"],
        "learned_interval_s": learned,
        "settled_after_s": settled_at,
        "links_lost": len(run["deaths"]),
        # The loss that settled it is logged just after the change.
        "links_lost_after_settling": sum(
            1 for t in run["deaths"] if settled_at is not None and t > settled_at + 0.5
        ),
        "pings": len(run["pings"]),
        "pings_per_hour_fixed_at_start": round(3600 / run["start"]),
        "pings_per_hour_settled": round(3600 / learned) if learned else None,
        "pings_per_hour_whole_run": round(len(run["pings"]) * 3600 / run["seconds"]),
        "pings_after_settling": len(after),
    }


def draw(run: dict[str, Any]) -> str:
    """An SVG: each idle period before a PING over time, the learned steps,
    the NAT limit, the links lost."""
    width, height, left, right, top, bottom = 820, 380, 70, 20, 30, 60
    seconds = run["seconds"]
    top_value = max(run["nat_limit"] * 1.6, max(c[2] for c in run["changes"]) * 1.1)

    def x(t: float) -> float:
        return left + (width - left - right) * t / seconds

    def y(v: float) -> float:
        return height - bottom - (height - top - bottom) * v / top_value

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="15">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - right}" y2="{y(0):.1f}" '
        'stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0):.1f}" stroke="black"/>',
    ]
    step = 1 if top_value <= 8 else 2
    value = 0
    while value <= top_value:
        out.append(
            f'<text x="{left - 8}" y="{y(value) + 5:.1f}" text-anchor="end">'
            f"{value} s</text>"
        )
        value += step
    for t in range(0, int(seconds) + 1, 10):
        out.append(
            f'<text x="{x(t):.1f}" y="{height - bottom + 20}" text-anchor="middle">'
            f"{t}</text>"
        )
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" '
        'text-anchor="middle">seconds into the run</text>'
    )
    limit = run["nat_limit"]
    out.append(
        f'<line x1="{left}" y1="{y(limit):.1f}" x2="{width - right}" '
        f'y2="{y(limit):.1f}" stroke="#c0392b" stroke-dasharray="6 4"/>'
    )
    out.append(
        f'<text x="{width - right - 4}" y="{y(limit) - 6:.1f}" text-anchor="end" '
        f'fill="#c0392b">the NAT forgets a flow idle {limit} s</text>'
    )
    # The interval in use: a step line from change to change.
    points, current, at = [], run["start"], 0.0
    for when, _, new, _ in run["changes"]:
        points += [(at, current), (when, current)]
        at, current = when, new
    points += [(at, current), (seconds, current)]
    path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    out.append(f'<polyline points="{path}" fill="none" stroke="#2471a3" '
               'stroke-width="2.5"/>')  # fmt: skip
    # Each PING at the height of the idle period it ended; resends (the
    # PINGs after the first of a probe that ended in a loss) are not.
    resends = set()
    for death in run["deaths"]:
        probe = [p for p in run["pings"] if death - 1.01 <= p < death]
        resends.update(probe[1:])
    previous = 0.0
    connects = sorted(run["connects"])
    for ping in run["pings"]:
        since = max([previous, *[c for c in connects if c <= ping]])
        idle = ping - since
        previous = ping
        if ping in resends:
            continue
        out.append(
            f'<circle cx="{x(ping):.1f}" cy="{y(idle):.1f}" r="3" fill="#2471a3" '
            'fill-opacity="0.6"/>'
        )
    for death in run["deaths"]:
        cx, cy = x(death), y(limit) - 22
        out.append(
            f'<path d="M{cx - 7:.1f},{cy - 7:.1f} l14,14 m0,-14 l-14,14" '
            'stroke="#c0392b" stroke-width="3"/>'
        )
        out.append(
            f'<text x="{cx + 10:.1f}" y="{cy - 8:.1f}" fill="#c0392b">'
            "link lost: declared dead, reconnected</text>"
        )
    numbers = summary(run)
    if numbers["learned_interval_s"] is not None:
        learned = numbers["learned_interval_s"]
        label = html.escape(
            f"settled at {learned:.2f} s after {numbers['settled_after_s']:.0f} s; "
            "no link lost since"
        )
        out.append(
            f'<text x="{x(seconds) - 4:.1f}" y="{y(learned) + 22:.1f}" '
            f'text-anchor="end" fill="#2471a3">{label}</text>'
        )
    out.append(
        f'<text x="{left + 8}" y="{top + 4}" fill="#2471a3">'
        "line: the interval in use; dots: each PING at the idle time it ended</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nat-limit", type=int, default=4, metavar="S")
    parser.add_argument("--interval", type=float, default=0.5, metavar="S",
                        help="the first, shortest interval")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--json", metavar="FILE", help="keep the record here")
    parser.add_argument("--svg", metavar="FILE", help="draw the record here")
    parser.add_argument("--draw", metavar="FILE",
                        help="draw this kept record instead of running")  # fmt: skip
    args = parser.parse_args()
    if args.draw:
        run = json.loads(Path(args.draw).read_text())
    else:
        run = record(args.nat_limit, args.interval, args.seconds)
        run["summary"] = summary(run)
        for key, value in run["summary"].items():
            print(f"{key:<32} {value}")
        if args.json:
            Path(args.json).write_text(json.dumps(run, indent=1) + "\n")
    if args.svg:
        Path(args.svg).write_text(draw(run))


if __name__ == "__main__":
    main()
