"""The adaptive interval through a real Linux NAT that forgets idle flows.

Three network namespaces made by the test (``netns.nat``): client, a NAT
router that forgets an established flow after ``NAT_LIMIT`` idle seconds and
drops what no longer maps, and the server. Three ``connect --reconnect``
clients run side by side against one ``serve``: a fixed interval above the
limit, a fixed interval below it, and ``--adaptive``. Their logs (timestamped,
INFO) and the adaptive client's interval cache are the evidence.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import trio

from . import netns

PROJECT = str(Path(__file__).resolve().parents[1])
SERVER = netns.NAT_SERVER
NAT_LIMIT = 2  # seconds an idle established flow is remembered
RUN_SECONDS = 36
# The learner's defaults (IntervalLearner): steps of 50 %, 3 idle periods per
# step, settle 10 % below the longest that held.
STEP, MARGIN = 0.5, 0.1
START = 0.5  # --interval: the adaptive client's shortest, and first, interval


@pytest.fixture
def nat() -> Iterator[tuple[str, str]]:
    """(client namespace, server namespace), joined through a NAT router."""
    netns.require("ip", "nft")
    with netns.namespaces() as made:
        yield netns.nat(made, NAT_LIMIT)


LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) [\w.]+\[\d+\]: (.*)$"
)


def events(log: str) -> list[tuple[float, str]]:
    """(seconds since the epoch, message) of each log line."""
    found = []
    for line in log.splitlines():
        match = LOG_LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            found.append((stamp.timestamp(), match.group(3)))
    return found


async def run_clients(
    cli: str, srv: str, clients: dict[str, list[str]]
) -> tuple[dict[str, tuple[int, str]], float]:
    """Run ``serve`` and the clients for RUN_SECONDS, then end their stdin;
    each client's exit code and log, and when the run ended (seconds since
    the epoch)."""
    env = {**os.environ, "PYTHONPATH": PROJECT, "PYTHONUNBUFFERED": "1"}
    module = [sys.executable, "-m", "trio_heartbeat"]
    logs: dict[str, bytearray] = {name: bytearray() for name in clients}
    codes: dict[str, int] = {}
    processes: list[trio.Process] = []
    try:
        with trio.fail_after(RUN_SECONDS + 30):
            async with trio.open_nursery() as nursery:
                server = await trio.lowlevel.open_process(
                    ["ip", "netns", "exec", srv, *module, "serve", "--host", SERVER,
                     "--timeout", "20", "--min-interval", "0.1"],
                    stdout=subprocess.PIPE, env=env,
                )  # fmt: skip
                processes.append(server)
                assert server.stdout is not None
                banner = await server.stdout.receive_some(4096)
                assert banner.startswith(f"listening on {SERVER}:5005".encode())

                async def collect(name: str, process: trio.Process) -> None:
                    assert process.stderr is not None
                    async for chunk in process.stderr:
                        logs[name] += chunk

                for name, argv in clients.items():
                    process = await trio.lowlevel.open_process(
                        ["ip", "netns", "exec", cli, *module, "connect", SERVER,
                         "--reconnect", "--retries", "1", "--retry-interval", "0.5",
                         "--log-level", "INFO", *argv],
                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, env=env,
                    )  # fmt: skip
                    processes.append(process)
                    nursery.start_soon(collect, name, process)
                await trio.sleep(RUN_SECONDS)
                ended = time.time()
                for process in processes[1:]:
                    assert process.stdin is not None
                    await process.stdin.aclose()  # stdin ends: close, exit
                for name, process in zip(clients, processes[1:], strict=True):
                    codes[name] = await process.wait()
                server.terminate()
                await server.wait()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
    return {name: (codes[name], log.decode()) for name, log in logs.items()}, ended


async def test_the_adaptive_client_learns_the_nat_limit_and_holds_it(
    nat: tuple[str, str], tmp_path: Path
) -> None:
    cli, srv = nat
    cache = tmp_path / "intervals.json"
    results, ended = await run_clients(
        cli,
        srv,
        {
            "above": ["--interval", "3", "--max-backoff", "1"],
            "below": ["--interval", "1.5"],
            "adaptive": [
                "--adaptive",
                "--interval",
                str(START),
                "--interval-cache",
                str(cache),
                "--network",
                "lab",
            ],
        },
    )
    logs = {name: log for name, (_, log) in results.items()}
    # The two that hold were connected when stdin ended: a normal close.
    assert (results["below"][0], results["adaptive"][0]) == (0, 0)
    deaths = {
        name: [t for t, message in events(log) if "declared dead" in message]
        for name, log in logs.items()
    }
    # Above the limit, every connection dies at its first idle period: 3 s,
    # then 1 s of unanswered PINGs, then at most 1 s of backoff; again and
    # again.
    assert len(deaths["above"]) >= 5, logs["above"]
    # Below the limit, the one connection holds throughout.
    assert deaths["below"] == [], logs["below"]
    assert "connected to" in logs["below"]

    changes = [
        (t, m)
        for t, m in events(logs["adaptive"])
        if "heartbeat interval" in m and "->" in m
    ]
    steps = [re.search(r"interval (\S+) s -> (\S+) s \((\w+)\)", m) for _, m in changes]
    assert all(steps), changes
    moves = [(float(s[1]), float(s[2]), s[3]) for s in steps if s]
    expected, interval = [], START
    while interval * (1 + STEP) < NAT_LIMIT:
        expected.append((interval, interval * (1 + STEP), "longer"))
        interval *= 1 + STEP
    too_long = interval * (1 + STEP)
    expected.append((interval, too_long, "longer"))
    learned = interval * (1 - MARGIN)
    expected.append((too_long, learned, "settled"))
    # 0.5, 0.75, 1.125, 1.6875 held; 2.53 was forgotten; settled at 1.52 s.
    assert [reason for *_, reason in moves] == [r for *_, r in expected], changes
    # Intervals as planned; the settled one is 10 % below the longest idle
    # period that held, as measured (a few ms past 1.6875 s: wake-up lateness).
    assert [(old, new) for old, new, _ in moves] == [
        (pytest.approx(old, rel=0.01), pytest.approx(new, rel=0.01))
        for old, new, _ in expected
    ], changes
    learned = moves[-1][1]
    assert learned < NAT_LIMIT <= learned * (1 + STEP) / (1 - MARGIN)
    # Exactly one link was lost while learning: the one at 2.53 s idle.
    assert len(deaths["adaptive"]) == 1, logs["adaptive"]
    settled_at = changes[-1][0]
    assert 0 <= deaths["adaptive"][0] - settled_at < 0.5
    # Then it held: no loss for the rest of the run, many periods long.
    assert (ended - settled_at) / learned >= 10, (settled_at, ended)
    saved = json.loads(cache.read_text())["lab"]
    assert (saved["interval"], saved["phase"]) == (
        pytest.approx(learned, rel=1e-5),
        "settled",
    )
    assert saved["too_long"] == pytest.approx(too_long, rel=0.05)
