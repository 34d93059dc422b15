"""Run the docs' example files in virtual time, so the docs cannot rot.

Tutorial 4 is itself a test; the tutorials' other programs run as the pages
show them, in real processes (tests/test_sessions.py). Here: the chat server's
presence through a kick, and the gateway and device through a restart, which
a terminal session cannot show in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing

import trio_heartbeat

from .helpers import MemoryListener, RawPeer, echo_upper, tcp_peer, tcp_server

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"docs_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_tutorial_2_presence_and_cleanup(autojump_clock: Any) -> None:
    chat = load("chat_server")
    listener = MemoryListener()
    server = chat.ChatServer(trio_heartbeat.ServerConfig(timeout=30))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        alice = RawPeer(await listener.connect())
        await alice.hello(interval=10, client_id="alice")
        bob = RawPeer(await listener.connect())
        await bob.hello(interval=10, client_id="bob")
        assert await alice.receive() == trio_heartbeat.Data(b"* alice joined")
        assert await alice.receive() == trio_heartbeat.Data(b"* bob joined")
        assert await bob.receive() == trio_heartbeat.Data(b"* bob joined")
        await bob.send(trio_heartbeat.Data(b"hi all"))
        assert await alice.receive() == trio_heartbeat.Data(b"bob: hi all")
        assert set(server.online) == {"alice", "bob"}
        # Alice keeps heartbeating; Bob's machine loses power (he goes silent).
        start = trio.current_time()
        for _ in range(4):
            await trio.sleep(10)
            await alice.send(trio_heartbeat.Ping())
            assert await alice.receive() == trio_heartbeat.Pong()
            if trio.current_time() - start >= 30:
                break
        assert await alice.receive() == trio_heartbeat.Data(
            b"* bob left (heartbeat timeout)"
        )
        assert set(server.online) == {"alice"}
        nursery.cancel_scope.cancel()


class WatchedLog(list[str]):
    """A log that can be waited on (instead of polling it)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def append(self, line: str) -> None:
        super().append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Any) -> None:
        while not any(predicate(line) for line in self):
            await self._changed.wait()


def watched_gateway(module: ModuleType) -> Any:
    gateway = module.Gateway()
    gateway.log = WatchedLog()
    return gateway


async def test_building_a_service_gateway_and_device() -> None:
    """The how-to's gateway and device, together on loopback: identity,
    per-connection state, a command to one device by its id, PONGs that carry
    data, a gateway restart the device survives, and a refused stranger."""
    gateway_module, device_module = load("gateway"), load("device")
    device_log: list[str] = []
    device_done = trio.Event()
    wrong = {"version": 1, "client_id": "sensor-1", "token": "guess"}

    async def device(port: int) -> None:
        await device_module.main(port, readings=4, log=device_log)
        device_done.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            gateway = watched_gateway(gateway_module)
            async with trio.open_nursery() as first_run:
                port = await first_run.start(gateway.run, 0)
                nursery.start_soon(device, port)
                await gateway.log.wait_for(lambda line: line == "sensor-1 online")
                assert await gateway.send_command("sensor-1", "blink")
                assert not await gateway.send_command("sensor-2", "blink")
                await gateway.log.wait_for(lambda line: line == "sensor-1 did blink")
                stranger = await tcp_peer(port)
                await stranger.send(trio_heartbeat.Hello(wrong))
                assert await stranger.receive() == trio_heartbeat.Close(
                    7, "unknown device or wrong token"
                )
                await stranger.expect_eof()
                first_run.cancel_scope.cancel()  # as Ctrl-C would
            # Back on the same port: the device reconnects and finishes.
            restarted = watched_gateway(gateway_module)
            await nursery.start(restarted.run, port)
            await device_done.wait()
            await restarted.log.wait_for(lambda line: "offline" in line)
            nursery.cancel_scope.cancel()
    assert not gateway.server.connections  # every connection ended
    said = [
        line for run in (gateway, restarted) for line in run.log if " says " in line
    ]
    sent = [f"sensor-1 says temperature={20 + n}" for n in range(4)]
    # In order, none twice; one in flight when the gateway stopped may be lost
    # (acknowledging readings is the application's business), not the last.
    assert said == [line for line in sent if line in said]
    assert said[-1] == sent[-1]
    assert "sensor-1 did blink" in gateway.log
    assert gateway.log[-1] == "sensor-1 offline (shutdown)"
    assert "doing blink" in device_log
    ended = [line for line in device_log if line.startswith("ended: ")]
    assert ended[0].startswith("ended: closed by peer (CLOSE 5 SHUTTING_DOWN")
    assert ended[-1] == "ended: done"
    assert restarted.log[-1] == "sensor-1 offline (closed by peer)"


@pytest.fixture
def tcp_clock() -> trio.testing.MockClock:
    # Virtual time over real loopback sockets: jump only once nothing has
    # happened for 50 ms of real time (the kernel's deliveries included).
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_the_phone_client_learns_and_keeps_its_interval(
    tcp_clock: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mobile how-to's client against a server whose timeout caps it at
    8 s: from 1 s up by 50 % every 3 idle periods, settled at 8 s, kept in the
    cache for its network; the next start begins there."""
    phone = load("phone_client")
    cache = tmp_path / "intervals.json"
    config = trio_heartbeat.ServerConfig(timeout=16, min_interval=0.5)
    async with tcp_server(echo_upper, config=config) as port:
        learner = phone.learner_for("home-wifi", minimum=1, cache=str(cache))
        with trio.move_on_after(120):
            await phone.main(learner, port=port)
        assert capsys.readouterr().out.splitlines() == [
            "connected; heartbeat every 1 s",
            "interval 1 s -> 1.5 s (longer)",
            "interval 1.5 s -> 2.25 s (longer)",
            "interval 2.25 s -> 3.375 s (longer)",
            "interval 3.375 s -> 5.0625 s (longer)",
            "interval 5.0625 s -> 7.59375 s (longer)",
            "interval 7.59375 s -> 8 s (longer)",
            "interval stays at 8 s (settled)",
        ]
        assert json.loads(cache.read_text())["home-wifi"]["interval"] == 8.0
        again = phone.learner_for("home-wifi", minimum=1, cache=str(cache))
        with trio.move_on_after(1):
            await phone.main(again, port=port)
        assert capsys.readouterr().out.splitlines() == [
            "interval 1 s -> 8 s (restored)",
            "connected; heartbeat every 8 s",
        ]
