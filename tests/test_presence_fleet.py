"""Two real ``serve`` processes sharing a private redis-server: the fleet's
list (``python -m trio_heartbeat presence``), replace across nodes, a node
killed with SIGKILL, Redis down while clients keep heartbeating. Real time,
each test bounded by fail_after."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import trio

from trio_heartbeat import Close, CloseCode, Ping, Pong

from .helpers import RawPeer, listening_port, start_cli, tcp_peer
from .redis_server import RedisServer, eventually, redis_server

__all__ = ["redis_server"]  # the fixture, used by name

TTL = 2.0


async def _node(nursery: trio.Nursery, redis: RedisServer, name: str) -> tuple[
    trio.Process, int
]:  # fmt: skip
    serve = await start_cli(
        nursery, "serve", "--port", "0", "--presence", redis.url, "--node-id", name,
        "--presence-ttl", str(TTL), "--duplicate", "replace", "--timeout", "10",
        "--min-interval", "0.1", "--log-format", "json",
    )  # fmt: skip
    return serve, await listening_port(serve)


async def _presence(redis: RedisServer, *args: str) -> tuple[int, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "trio_heartbeat", "presence", "--redis", redis.url,
         *args],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout.decode()


async def _listed(redis: RedisServer) -> list[dict[str, Any]]:
    code, out = await _presence(redis, "--json")
    assert code == 0, out
    listed: list[dict[str, Any]] = json.loads(out)
    return sorted(listed, key=lambda s: s["client_id"])


_PEERS: list[RawPeer] = []


async def _client(port: int, client_id: str) -> RawPeer:
    peer = await tcp_peer(port)
    _PEERS.append(peer)
    await peer.hello(interval=1, client_id=client_id)
    return peer


async def _stop(*processes: trio.Process) -> None:
    """Close this test's clients, then stop the servers (SIGTERM)."""
    while _PEERS:
        await _PEERS.pop().stream.aclose()
    for process in processes:
        if process.returncode is None:
            process.terminate()


async def test_two_nodes_list_their_clients_and_replace_across(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, port_a = await _node(nursery, redis_server, "a")
            b, port_b = await _node(nursery, redis_server, "b")
            alice = await _client(port_a, "alice")
            bob = await _client(port_b, "bob")
            listed = await _listed(redis_server)
            assert [(s["client_id"], s["node"], s["peer"]) for s in listed] == [
                ("alice", "a", alice.name), ("bob", "b", bob.name),
            ]  # fmt: skip
            assert all(abs(s["since"] - time.time()) < 10 for s in listed)
            assert set(listed[0]) == {"client_id", "node", "peer", "since"}
            assert (await _presence(redis_server, "alice", "bob"))[0] == 0
            code, out = await _presence(redis_server, "alice", "carol")
            assert code == 1
            assert out.split()[:3] == ["alice", "a", alice.name]
            # alice logs in again, on the other node: the older session ends.
            again = await _client(port_b, "alice")
            frame = await alice.receive()
            assert frame == Close(
                CloseCode.REPLACED, "replaced by a newer session of this client_id"
            )
            listed = await _listed(redis_server)
            assert [(s["client_id"], s["node"], s["peer"]) for s in listed] == [
                ("alice", "b", again.name), ("bob", "b", bob.name),
            ]  # fmt: skip
            # Stopped (SIGTERM) with their clients still connected, the servers
            # take their sessions off the list at once, not after the TTL.
            a.terminate()
            b.terminate()
            await a.wait()
            await b.wait()
            assert await _listed(redis_server) == []
            await _stop()
    assert a.stderr is not None
    log = [json.loads(line) for line in (await _drain(a)).splitlines()]
    ended = [e for e in log if e["event"] == "disconnect"]
    assert ended[0]["reason"] == "replaced" and ended[0]["code"] == 8


async def _drain(process: trio.Process) -> str:
    assert process.stderr is not None
    data = b""
    while chunk := await process.stderr.receive_some(65536):
        data += chunk
    return data.decode()


async def test_a_killed_node_takes_its_clients_off_within_the_ttl(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, port_a = await _node(nursery, redis_server, "a")
            b, port_b = await _node(nursery, redis_server, "b")
            await _client(port_a, "alice")
            for number in range(3):
                await _client(port_b, f"b{number}")
            assert len(await _listed(redis_server)) == 4
            b.send_signal(signal.SIGKILL)  # no cleanup at all
            killed_at = time.monotonic()

            async def only_alice() -> bool:
                return [s["client_id"] for s in await _listed(redis_server)] == [
                    "alice"
                ]

            await eventually(only_alice, period=0.1)
            gone_after = time.monotonic() - killed_at
            await _stop(a)
    # Its last refresh was at most ttl / 3 before; its entries expire ttl
    # after that (plus one read's time: the presence command starts Python).
    assert gone_after <= TTL + 1.0


async def test_redis_down_never_stops_heartbeats_and_the_list_comes_back(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            a, port_a = await _node(nursery, redis_server, "a")
            alice = await _client(port_a, "alice")
            redis_server.stop()
            down_at = trio.current_time()
            # 4 s without Redis: every PING answered, and a newcomer served.
            while trio.current_time() - down_at < 4:
                await alice.send(Ping())
                assert await alice.receive() == Pong()
                await trio.sleep(0.5)
            bob = await _client(port_a, "bob")  # admitted unlisted
            await bob.send(Ping())
            assert await bob.receive() == Pong()
            redis_server.start()  # empty
            back = time.monotonic()

            async def both() -> bool:
                try:
                    listed = await _listed(redis_server)
                except AssertionError:
                    return False
                return [s["client_id"] for s in listed] == ["alice", "bob"]

            await eventually(both, period=0.1)
            refilled_after = time.monotonic() - back
            await _stop(a)
    log = [json.loads(line) for line in (await _drain(a)).splitlines()]
    events = [e["event"] for e in log]
    assert events.count("presence_down") == 1
    assert "presence_unlisted" in events and "presence_up" in events
    # One refresh period (ttl / 3), plus the presence command's own start.
    assert refilled_after <= TTL / 3 + 1.5
