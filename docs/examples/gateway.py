"""An IoT gateway: devices connect, are identified, report readings, take commands.

Run it with ``python gateway.py`` (port 5005); stop it with Ctrl-C, which every
device sees as CLOSE(5), "server shutting down".

* ``authenticate`` admits a device by its HELLO: its ``client_id`` and a token
  (here a fixed table; a database in real life). A refused device gets
  CLOSE(7) with the reason.
* Each connection keeps its device's record in ``conn.state``.
* ``send_command`` reaches one device by its id: ``server.connections_of``.
* Every PONG carries how many commands wait for that device, so a device
  learns about them even while it sends nothing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import attrs
import trio

import trio_heartbeat

logger = logging.getLogger("gateway")

TOKENS = {"sensor-1": "s3cret-1", "sensor-2": "s3cret-2"}


@attrs.define
class Device:
    """What the gateway keeps per connected device (``conn.state``)."""

    device_id: str
    readings: list[str] = attrs.Factory(list)
    pending: list[str] = attrs.Factory(list)


class Gateway:
    def __init__(self) -> None:
        self.server = trio_heartbeat.HeartbeatServer(
            self.handle,
            config=trio_heartbeat.ServerConfig(timeout=30, min_interval=1),
            authenticate=self.authenticate,
            on_connect=self.connected,
            on_disconnect=self.disconnected,
            pong_payload=self.pong_payload,
        )
        self.log: list[str] = []

    async def authenticate(self, hello: Any) -> str:
        device_id = hello.get("client_id")
        if not isinstance(device_id, str) or TOKENS.get(device_id) != hello.get(
            "token"
        ):
            raise trio_heartbeat.HandshakeError("unknown device or wrong token")
        return device_id  # kept as conn.identity

    def connected(self, conn: trio_heartbeat.HeartbeatConnection) -> None:
        conn.state = Device(conn.identity)
        self.log.append(f"{conn.identity} online")

    def disconnected(
        self,
        conn: trio_heartbeat.HeartbeatConnection,
        reason: trio_heartbeat.DisconnectReason,
    ) -> None:
        # Pairs with connected(): refused devices never get here.
        self.log.append(f"{conn.identity} offline ({reason.value})")

    def pong_payload(
        self, conn: trio_heartbeat.HeartbeatConnection, ping: bytes
    ) -> bytes:
        device: Device | None = conn.state
        return str(len(device.pending) if device else 0).encode()

    async def handle(self, conn: trio_heartbeat.HeartbeatConnection) -> None:
        device: Device = conn.state
        async for data in conn:  # ends when the device closes normally
            message = data.decode()
            if message.startswith("ack "):
                device.pending.remove(message[4:])
                self.log.append(f"{device.device_id} did {message[4:]}")
            else:
                device.readings.append(message)
                self.log.append(f"{device.device_id} says {message}")

    async def send_command(self, device_id: str, command: str) -> bool:
        """Send ``command`` to a connected device; False if it is offline."""
        for conn in self.server.connections_of(device_id):
            conn.state.pending.append(command)
            await conn.send(f"do {command}".encode())
            return True
        return False

    async def run(
        self,
        port: int = 5005,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until SIGINT or SIGTERM, then close every device with CLOSE(5)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio_heartbeat.cancel_on_signals, nursery.cancel_scope)
            # 127.0.0.1 for the demo; host=None listens on every interface.
            await nursery.start(
                functools.partial(self.server.serve_tcp, port, host="127.0.0.1")
            )
            ((_, bound),) = self.server.addresses
            task_status.started(bound)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(Gateway().run)
