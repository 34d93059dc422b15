"""Server figures: the typed snapshot, the Prometheus endpoint (one process and
``--workers``), JSON logs and the descriptor limit."""

from __future__ import annotations

import json
import resource
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from trio_heartbeat import (
    Close,
    CloseCode,
    Data,
    HeartbeatServer,
    Hello,
    Ping,
    Pong,
    Role,
    ServerConfig,
    ServerMetrics,
    Session,
    encode,
    negotiate,
)
from trio_heartbeat._metrics import SessionTotals
from trio_heartbeat._prometheus import render

from .helpers import MemoryListener, RawPeer, echo_upper, start_cli, tcp_peer


async def test_the_snapshot_counts_open_and_ended_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ServerConfig(
        timeout=10, min_interval=0.1, max_connections=3, lag_probe_interval=1.0
    )
    server = HeartbeatServer(echo_upper, config=config)
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        assert server.metrics().connections == 0
        chatty = RawPeer(await listener.connect())
        await chatty.hello(interval=5)
        for _ in range(3):
            await chatty.send(Ping())
            assert await chatty.receive() == Pong()
        await chatty.send(Data(b"hi"))
        assert await chatty.receive() == Data(b"HI")
        silent = RawPeer(await listener.connect())
        await silent.hello(interval=5)
        refused = RawPeer(await listener.connect())
        await refused.send(Hello({"version": 2}))
        answer = await refused.receive()
        assert isinstance(answer, Close) and answer.code == CloseCode.HANDSHAKE_FAILED
        await refused.stream.aclose()
        await trio.sleep(0.5)
        middle = server.metrics()
        assert middle.connections == 2
        assert middle.connections_opened == 3
        assert middle.handshake_failures == {"7": 1}
        assert middle.disconnects == {"handshake_failed": 1}
        assert (middle.pings_received, middle.pongs_sent) == (3, 3)
        assert middle.frames_received == {
            "hello": 3, "data": 1, "ping": 3, "pong": 0, "close": 0,
        }  # fmt: skip
        # The silent one is kicked at 10 s; the chatty one PINGs meanwhile,
        # then closes itself.
        for _ in range(2):
            await trio.sleep(5)
            await chatty.send(Ping())
            assert await chatty.receive() == Pong()
        assert isinstance(await silent.receive(), Close)
        await chatty.send(Close(CloseCode.NORMAL, ""))
        await trio.sleep(1)
        ended = server.metrics()
        assert ended.connections == 0
        assert ended.disconnects == {
            "handshake_failed": 1, "heartbeat_timeout": 1, "closed_by_peer": 1,
        }  # fmt: skip
        # Ended connections' counts are kept, not lost with them.
        assert (ended.pings_received, ended.pongs_sent) == (5, 5)
        assert ended.frames_received["close"] == 1
        assert ended.bytes_received > middle.bytes_received
        assert ended.loop_lag_count >= 10  # the probe woke every second
        assert sum(count for _, count in ended.loop_lag_buckets) == (
            ended.loop_lag_count
        )
        # One kick, at exactly its due time (virtual time: nothing is late).
        assert ended.kick_lateness_count == 1
        assert ended.kick_lateness_buckets[0] == (0.001, 1)
        assert ended.kick_lateness_max == 0.0
        # Finer than the loop lag's where a busy server's kicks land.
        bounds = [le for le, _ in ended.kick_lateness_buckets]
        assert bounds[6:12] == [0.075, 0.1, 0.125, 0.15, 0.2, 0.25]
        assert bounds == [le for le, _ in ServerMetrics().kick_lateness_buckets]
        nursery.cancel_scope.cancel()


def _sessions() -> list[Session]:
    """Sessions in several states: handshaking, heartbeating, closed by the
    peer, failed on a protocol error."""
    sessions = [Session(Role.SERVER) for _ in range(4)]
    for session in sessions[1:]:
        session.receive_data(encode(Hello({"version": 1})), 0.0)
        session.accept(negotiate({"version": 1}, ServerConfig()))
        session.receive_data(encode(Ping()) * 2 + encode(Data(b"x")), 1.0)
    sessions[2].receive_data(encode(Close(CloseCode.NORMAL, "bye")), 2.0)
    sessions[3].receive_data(b"\x7f\x05hello", 2.0)
    return sessions


def test_a_scrape_adds_all_sessions_as_one_by_one() -> None:
    one_by_one, at_once = SessionTotals(), SessionTotals()
    for session in _sessions():
        one_by_one.add(session)
    at_once.add_all(_sessions())
    assert vars_of(at_once) == vars_of(one_by_one)
    assert at_once.frames == {
        "hello": 3, "data": 3, "ping": 6, "pong": 0, "close": 1,
    }  # fmt: skip


def vars_of(totals: SessionTotals) -> dict[str, object]:
    return {name: getattr(totals, name) for name in SessionTotals.__slots__}


def test_snapshots_add_up_and_round_trip_through_json() -> None:
    one = ServerMetrics(
        connections=2, connections_opened=5, disconnects={"closed_by_peer": 3},
        pings_received=10, frames_received={"ping": 10, "data": 1},
        loop_lag_buckets=((0.001, 4), (float("inf"), 1)), loop_lag_count=5,
        loop_lag_sum=0.5, loop_lag_max=0.4,
        kick_lateness_buckets=((0.001, 0), (0.005, 2), (float("inf"), 0)),
        kick_lateness_count=2, kick_lateness_sum=0.006, kick_lateness_max=0.004,
    )  # fmt: skip
    two = ServerMetrics(
        connections=1, connections_opened=1, disconnects={"heartbeat_timeout": 1},
        pings_received=2, frames_received={"ping": 2},
        loop_lag_buckets=((0.001, 1), (float("inf"), 0)), loop_lag_count=1,
        loop_lag_sum=0.0, loop_lag_max=0.9,
        kick_lateness_buckets=((0.001, 1), (0.005, 0), (float("inf"), 0)),
        kick_lateness_count=1, kick_lateness_sum=0.0005, kick_lateness_max=0.0005,
    )  # fmt: skip
    total = ServerMetrics.total([one, two])
    assert total.workers == 2
    assert (total.connections, total.connections_opened) == (3, 6)
    assert total.disconnects == {"closed_by_peer": 3, "heartbeat_timeout": 1}
    assert total.frames_received == {"ping": 12, "data": 1}
    assert total.loop_lag_buckets == ((0.001, 5), (float("inf"), 1))
    assert total.loop_lag_max == 0.9
    assert total.kick_lateness_buckets == (
        (0.001, 1), (0.005, 2), (float("inf"), 0),
    )  # fmt: skip
    assert (total.kick_lateness_count, total.kick_lateness_max) == (3, 0.004)
    assert ServerMetrics.from_json(json.loads(json.dumps(total.to_json()))) == total
    assert ServerMetrics.total([]).workers == 0


def test_the_prometheus_text_parses_with_the_expected_names() -> None:
    metrics = ServerMetrics(
        connections=2, connections_opened=5, handshake_failures={"7": 1},
        disconnects={"heartbeat_timeout": 2}, pings_received=10, pongs_sent=10,
        frames_received={"hello": 5, "ping": 10}, bytes_received=100, bytes_sent=90,
        loop_lag_buckets=((0.001, 4), (0.005, 1), (float("inf"), 1)),
        loop_lag_count=6, loop_lag_sum=0.25, loop_lag_max=0.2, stalled_seconds=0.0,
        kick_lateness_buckets=((0.01, 3), (0.05, 1), (float("inf"), 0)),
        kick_lateness_count=4, kick_lateness_sum=0.07, kick_lateness_max=0.04,
        presence_listed=3, presence_unreachable=1,
    )  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(render(metrics).decode())
        for s in family.samples
    }
    p = "trio_heartbeat_"
    assert samples[(p + "connections", ())] == 2
    assert samples[(p + "connections_opened_total", ())] == 5
    assert samples[(p + "handshake_failures_total", (("code", "7"),))] == 1
    assert samples[(p + "disconnects_total", (("reason", "heartbeat_timeout"),))] == 2
    assert samples[(p + "pings_received_total", ())] == 10
    assert samples[(p + "pongs_sent_total", ())] == 10
    assert samples[(p + "frames_received_total", (("type", "ping"),))] == 10
    assert samples[(p + "received_bytes_total", ())] == 100
    assert (
        samples[(p + "loop_lag_seconds_bucket", (("le", "0.005"),))] == 5
    )  # cumulative
    assert samples[(p + "loop_lag_seconds_bucket", (("le", "+Inf"),))] == 6
    assert samples[(p + "loop_lag_seconds_count", ())] == 6
    assert samples[(p + "loop_lag_seconds_sum", ())] == 0.25
    assert samples[(p + "kick_lateness_seconds_bucket", (("le", "0.05"),))] == 4
    assert samples[(p + "kick_lateness_seconds_count", ())] == 4
    assert samples[(p + "kick_lateness_max_seconds", ())] == 0.04
    assert samples[(p + "presence_listed", ())] == 3
    assert samples[(p + "presence_unreachable", ())] == 1


async def _get(url: str) -> tuple[str, str]:
    """(status line, body) of a GET, over a plain socket."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode().splitlines()[0], body.decode()


async def _scrape(url: str) -> dict[tuple[str, tuple[Any, ...]], float]:
    status, body = await _get(url)
    assert status == "HTTP/1.1 200 OK"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


async def _read_line(process: trio.Process) -> str:
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        assert chunk, f"serve ended: {line!r}"
        line += chunk
    return line.decode().strip()


@pytest.mark.parametrize("workers", [1, 2])
async def test_metrics_move_as_clients_come_heartbeat_and_get_kicked(
    workers: int,
) -> None:
    """``curl .../metrics`` as a user would: a client connects, PINGs, goes
    silent and is kicked (--timeout 1); each step shows, also summed over two
    workers."""
    p = "trio_heartbeat_"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = await start_cli(
                nursery, "serve", "--port", "0", "--timeout", "1",
                "--min-interval", "0.05", "--metrics-port", "0",
                "--workers", str(workers),
            )  # fmt: skip
            port = int((await _read_line(serve)).rsplit(":", 1)[1])
            url = (await _read_line(serve)).split()[-1]
            assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
            before = await _scrape(url)
            assert before[(p + "connections", ())] == 0
            assert before[(p + "workers", ())] == workers
            peer = await tcp_peer(port)
            await peer.hello(interval=0.5)
            for _ in range(4):
                await peer.send(Ping())
                assert await peer.receive() == Pong()
                await trio.sleep(0.1)  # min_interval apart
            during = await _scrape(url)
            assert during[(p + "connections", ())] == 1
            assert during[(p + "pings_received_total", ())] == 4
            assert during[(p + "pongs_sent_total", ())] == 4
            # Silent now: kicked after 1 s.
            assert isinstance(await peer.receive(), Close)
            await peer.stream.aclose()
            await trio.sleep(0.3)
            after = await _scrape(url)
            assert after[(p + "connections", ())] == 0
            assert after[(p + "connections_opened_total", ())] == 1
            reason = (("reason", "heartbeat_timeout"),)
            assert after[(p + "disconnects_total", reason)] == 1
            assert after[(p + "pings_received_total", ())] == 4
            status, _ = await _get(url.replace("/metrics", "/other"))
            assert status == "HTTP/1.1 404 Not Found"
            serve.terminate()
            assert await serve.wait() == 0
            nursery.cancel_scope.cancel()


async def test_json_logs_parse_line_by_line() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = await start_cli(
                nursery, "serve", "--port", "0", "--timeout", "1",
                "--min-interval", "0.1", "--log-format", "json",
            )  # fmt: skip
            port = int((await _read_line(serve)).rsplit(":", 1)[1])
            peer = await tcp_peer(port)
            await peer.hello(interval=0.5, client_id="sensor-7")
            assert isinstance(await peer.receive(), Close)  # kicked at 1 s
            await peer.stream.aclose()
            await trio.sleep(0.3)
            serve.terminate()
            assert await serve.wait() == 0
            assert serve.stderr is not None
            log = (await serve.stderr.receive_some(1 << 20)).decode()
            nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in log.splitlines()]
    events = {line["event"]: line for line in lines}
    for line in lines:
        assert {"time", "level", "logger", "pid", "event", "message"} <= set(line)
    assert events["connect"]["client_id"] == "sensor-7"
    assert events["connect"]["interval"] == 0.5
    kick = events["kick"]
    assert (kick["reason"], kick["code"], kick["client_id"]) == (
        "heartbeat_timeout", 1, "sensor-7",
    )  # fmt: skip
    assert 1.0 <= kick["silent"] < 1.5
    assert kick["peer"] == events["connect"]["peer"]
    assert events["fd_limit"]["level"] == "INFO"


def _soft_limit_256() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


async def test_serve_raises_its_descriptor_limit_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = await start_cli(
                nursery, "serve", "--port", "0", preexec_fn=_soft_limit_256
            )
            await _read_line(serve)
            serve.terminate()
            assert await serve.wait() == 0
            assert serve.stderr is not None
            log = (await serve.stderr.receive_some(1 << 20)).decode()
            nursery.cancel_scope.cancel()
    assert f"file descriptors: up to {hard}, room for about {hard - 50}" in log


def test_metrics_need_their_extra_and_the_framed_protocol(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trio_heartbeat._cli import main

    assert main(["serve", "--metrics-port", "0", "--protocol", "legacy"]) == 2
    assert capsys.readouterr().err.endswith(
        "serve: error: --metrics-port needs the framed protocol\n"
    )
    assert main(["serve", "--metrics-port", "70000"]) == 2
    assert "--metrics-port must be 0-65535, not 70000" in capsys.readouterr().err
