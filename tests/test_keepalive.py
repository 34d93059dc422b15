"""Kernel keepalive and TCP_USER_TIMEOUT, and heartbeats, over real dead links."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_heartbeat import (
    AUTO,
    ClientConfig,
    HeartbeatConnection,
    KeepaliveConfig,
    ServerConfig,
    configure_keepalive,
    open_connection,
    serve_tcp,
)
from trio_heartbeat._cli._options import build_parser, keepalive_from

from . import netns

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Linux socket option names"
)


def options(sock: Any) -> dict[str, int]:
    get = sock.getsockopt
    return {
        "SO_KEEPALIVE": get(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_KEEPIDLE": get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "TCP_KEEPINTVL": get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "TCP_KEEPCNT": get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "TCP_USER_TIMEOUT": get(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


@linux_only
def test_configure_keepalive_sets_and_reports() -> None:
    with socket.socket() as sock:
        applied = configure_keepalive(
            sock, idle=7, interval=2.5, count=4, user_timeout=9.5
        )
        expected = {
            "SO_KEEPALIVE": 1,
            "TCP_KEEPIDLE": 7,
            "TCP_KEEPINTVL": 3,  # whole seconds, rounded up
            "TCP_KEEPCNT": 4,
            "TCP_USER_TIMEOUT": 9500,
        }
        assert applied == expected
        assert options(sock) == expected


def test_missing_option_is_warned_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from trio_heartbeat import _keepalive

    monkeypatch.delattr(socket, "TCP_KEEPCNT", raising=False)
    monkeypatch.setattr(_keepalive, "_warned", set())
    caplog.set_level(logging.WARNING, logger="trio_heartbeat.keepalive")
    for _ in range(3):
        with socket.socket() as sock:
            applied = configure_keepalive(sock, count=3)
        assert "TCP_KEEPCNT" not in applied
        assert applied.get("SO_KEEPALIVE") == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith("TCP_KEEPCNT is not available on")


def test_keepalive_config_validation_and_auto() -> None:
    with pytest.raises(ValueError, match="idle must be a positive number, not 0"):
        KeepaliveConfig(idle=0)
    with pytest.raises(ValueError, match="count must be >= 1, not 0"):
        KeepaliveConfig(count=0)
    with pytest.raises(TypeError, match="user_timeout must be a number or None"):
        KeepaliveConfig(user_timeout="soon")  # type: ignore[arg-type]
    assert KeepaliveConfig(user_timeout=AUTO).resolve(60).user_timeout == 60
    assert not KeepaliveConfig().active
    assert KeepaliveConfig(user_timeout=5).active
    assert not KeepaliveConfig(user_timeout=5).keepalive


def test_cli_flags_build_the_config() -> None:
    parser = build_parser()
    for command in ("serve", "connect"):
        args = parser.parse_args(
            [command, "--keepalive-idle", "10", "--keepalive-interval", "2",
             "--keepalive-count", "3", "--user-timeout", "auto"]
        )  # fmt: skip
        assert keepalive_from(args) == KeepaliveConfig(
            idle=10, interval=2, count=3, user_timeout=AUTO
        )
        assert keepalive_from(parser.parse_args([command])) is None
    args = parser.parse_args(["serve", "--user-timeout", "4.5"])
    assert keepalive_from(args) == KeepaliveConfig(user_timeout=4.5)


@linux_only
async def test_accepted_and_connected_sockets_carry_the_options() -> None:
    seen: list[dict[str, int]] = []
    done = trio.Event()

    async def handler(conn: HeartbeatConnection) -> None:
        seen.append(options(conn.stream.socket))  # type: ignore[attr-defined]
        done.set()
        async for _ in conn:
            pass

    server_config = ServerConfig(
        timeout=20,
        keepalive=KeepaliveConfig(idle=7, interval=3, count=4, user_timeout=AUTO),
    )
    client_config = ClientConfig(
        interval=10, retries=2, retry_interval=4,
        keepalive=KeepaliveConfig(idle=5, interval=1, count=6, user_timeout=AUTO),
    )  # fmt: skip
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(serve_tcp, handler, 0, host="127.0.0.1", config=server_config)
            )
            port = listeners[0].socket.getsockname()[1]
            async with open_connection("127.0.0.1", port, config=client_config) as conn:
                await done.wait()
                client_side = options(conn.stream.socket)  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()
    assert seen == [
        {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 7, "TCP_KEEPINTVL": 3, "TCP_KEEPCNT": 4,
         "TCP_USER_TIMEOUT": 20000}
    ]  # fmt: skip
    # AUTO on the client: its dead-server bound, 10 + (2 + 1) x 4 = 22 s.
    assert client_side == {
        "SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 1, "TCP_KEEPCNT": 6,
        "TCP_USER_TIMEOUT": 22000,
    }  # fmt: skip


# ------------------------------------------------------------ dead links

HELPER = Path(__file__).with_name("netns_helper.py")
PROJECT = str(Path(__file__).resolve().parents[1])
SERVER_ADDR, CLIENT_ADDR = "169.254.213.1", "169.254.213.2"


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """Server and client namespaces joined by a veth pair, made by this test."""
    netns.require("ip", "nft")
    with netns.namespaces() as made:
        srv, cli = made.add("s"), made.add("c")
        made.link(srv, SERVER_ADDR, cli, CLIENT_ADDR)
        yield srv, cli


class Lines:
    """Whole lines from a process's stdout, however the reads split them."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(4096)
            assert chunk, f"the helper ended without a line: {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


async def _dead_link(pair: tuple[str, str], mode: str) -> dict[str, Any]:
    srv, cli = pair
    env = {**os.environ, "PYTHONPATH": PROJECT}
    run = partial(
        trio.run_process,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False, env=env,
    )  # fmt: skip
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                run, ["ip", "netns", "exec", srv, sys.executable, str(HELPER),
                      "server", SERVER_ADDR, "7000"]
            )  # fmt: skip
            assert await Lines(server.stdout).next() == "listening"
            client = await nursery.start(
                run, ["ip", "netns", "exec", cli, sys.executable, str(HELPER),
                      "client", SERVER_ADDR, "7000", mode]
            )  # fmt: skip
            client_lines = Lines(client.stdout)
            assert await client_lines.next() == "connected"
            # Cut the link: whatever either side sends (data or probes) now
            # vanishes without an answer or a reset.
            netns.blackhole(srv, cli)
            await client.stdin.send_all(b"cut\n")
            report: dict[str, Any] = json.loads(await client_lines.next())
            server.kill()
            client.kill()
    return report


# What the kernel promises about its TCP timers, which these bounds follow:
# - they run on jiffies (4 ms at HZ=250, 10 ms at HZ=100) and TCP_INFO reports
#   whole milliseconds, so any figure may be off by two ticks;
# - the timer wheel files a timer of length L in a bucket at most L/8 wide and
#   fires it at the end of the bucket (never early), so a timer may be up to 1/8
#   of its length late;
# - after the kernel reports the error, the helper process must still be
#   scheduled to see it: milliseconds, more on a loaded machine.
TICKS = 0.02
WHEEL = 1 / 8
WAKEUP = 0.25


async def test_keepalive_detects_an_idle_dead_link(netns_pair: Any) -> None:
    report = await _dead_link(netns_pair, "keepalive")
    assert (report["verdict"], report["error"]) == ("dead", "Connection timed out")
    # The kernel declares the peer dead idle 2 + interval 1 x count 2 = 4 s after
    # the last segment it received, by three timers (2 s, 1 s, 1 s).
    since_last_rx = report["dead_after"] + report["last_rx_before"]
    assert 4 - TICKS <= since_last_rx <= 4 * (1 + WHEEL) + TICKS + WAKEUP, report


async def test_user_timeout_breaks_a_link_with_data_in_flight(netns_pair: Any) -> None:
    """TCP_USER_TIMEOUT 3 s: the kernel gives up once unacknowledged data has
    been retransmitted for 3 s. It counts from its retrans_stamp, which lies
    between the original send (at the cut) and the first retransmission-timeout
    retransmission (Linux 6.x stamps that one, after a tail-loss probe); the
    timer armed before that is clamped to the time left, so the error comes
    within that window (plus the timer's slack), not at some later backoff step.
    Without the option the kernel keeps retransmitting for ~15 minutes."""
    report = await _dead_link(netns_pair, "user-timeout")
    assert (report["verdict"], report["error"]) == ("dead", "Connection timed out")
    first_rto = report["first_rto"]
    assert first_rto is not None, f"no retransmission timeout was seen: {report}"
    # The first RTO retransmission follows the send by at most a probe timeout
    # and one RTO, each at most the RTO measured before the cut.
    assert 0 < first_rto <= 2 * report["rto"] + TICKS, report
    latest = first_rto + 3 * (1 + WHEEL) + TICKS + WAKEUP
    assert 3 - TICKS <= report["dead_after"] <= latest, report


async def test_without_either_the_dead_link_stays_established(netns_pair: Any) -> None:
    report = await _dead_link(netns_pair, "none")
    assert (report["verdict"], report["error"]) == ("alive", "ESTABLISHED"), report


async def _line_containing(lines: Lines, marker: str) -> str:
    while marker not in (line := await lines.next()):
        pass
    return line


async def test_heartbeats_detect_a_cut_link_on_both_sides(netns_pair: Any) -> None:
    """`serve` and `connect` in two namespaces; the link is cut with no FIN or
    RST. The client declares the server dead within interval + (retries + 1) x
    retry_interval, the server kicks the client within its timeout."""
    srv, cli = netns_pair
    env = {**os.environ, "PYTHONPATH": PROJECT}
    run = partial(
        trio.run_process,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        check=False, env=env,
    )  # fmt: skip
    module = [sys.executable, "-m", "trio_heartbeat"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                run, ["ip", "netns", "exec", srv, *module, "serve",
                      "--host", SERVER_ADDR, "--port", "7000", "--timeout", "3",
                      "--min-interval", "0.5", "--log-level", "INFO"]
            )  # fmt: skip
            assert (await Lines(server.stdout).next()).startswith("listening on")
            client = await nursery.start(
                run, ["ip", "netns", "exec", cli, *module, "connect", SERVER_ADDR,
                      "--port", "7000", "--interval", "1", "--retries", "2",
                      "--retry-interval", "0.5"]
            )  # fmt: skip
            await client.stdin.send_all(b"hello\n")
            assert await Lines(client.stdout).next() == "HELLO"
            server_log = Lines(server.stderr)
            await _line_containing(server_log, "connect 169.254.213.2")
            netns.blackhole(srv, cli)
            cut_at = trio.current_time()

            async def client_side() -> None:
                assert await client.wait() == 3  # server declared dead
                dead_after = trio.current_time() - cut_at
                # Last send at most interval 1 s before the cut, then the
                # first PING + 3 x 0.5 s: between 1.5 and 2.5 s after it.
                assert 1.5 - 0.1 <= dead_after <= 2.5 + 0.5, dead_after
                err = b""
                while chunk := await client.stderr.receive_some(65536):
                    err += chunk
                assert err.endswith(
                    b"\nserver declared dead: 3 PINGs unanswered over 1.5 s\n"
                ), err

            nursery.start_soon(client_side)
            line = await _line_containing(server_log, "kick 169.254.213.2")
            kicked_after = trio.current_time() - cut_at
            assert "heartbeat timeout [CLOSE 1]: nothing received for 3 s" in line
            # Its last frame arrived at most 1 s (interval) before the cut.
            assert 3 - 1 - 0.1 <= kicked_after <= 3 + 0.5, kicked_after
            server.terminate()
