"""Draw docs/_static/stall.svg: what a server does about its own stall.

Regenerate with:  python docs/stall_timeline.py

A real run of trio_heartbeat's server in virtual time (trio's MockClock), with
two raw clients played by this script. Client A PINGs every 10 s; client B
sends one PING at 5 s and then nothing. At 25.5 s the server's process stalls
for 40 s, longer than its 30 s timeout: the clock jumps while nothing of the server
runs, and A's PINGs of those 40 s wait in its socket buffer. On waking, the
server reads them and answers before it judges anyone, so A is not kicked; B,
silent all along, is kicked once it has been silent for 30 s of the server's
*awake* time.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import attrs
import trio
import trio.testing

from trio_heartbeat import (
    Close,
    DisconnectReason,
    FrameDecoder,
    HeartbeatConnection,
    HeartbeatServer,
    Hello,
    Ping,
    ServerConfig,
    encode,
)

OUTPUT = Path(__file__).resolve().parent / "_static" / "stall.svg"
CONFIG = ServerConfig(timeout=30, min_interval=1)
STALL_AT, STALL = 25.5, 40.0
END = 90.0


@attrs.frozen
class Arrow:
    sender: str  # "A", "B" or "server"
    receiver: str
    label: str
    sent: float
    read: float


class Lane:
    """One client's stream pair; records what the server sends it."""

    def __init__(self, name: str, arrows: list[Arrow]) -> None:
        self.name = name
        self.arrows = arrows
        self.to_server_send = trio.testing.MemorySendStream()
        self.to_server = trio.testing.MemoryReceiveStream()
        self.from_server = trio.testing.MemorySendStream()
        self.to_client = trio.testing.MemoryReceiveStream()
        self.decoder = FrameDecoder()

        async def deliver() -> None:
            data = self.to_server_send.get_data_nowait()
            if data:
                self.to_server.put_data(data)

        async def record() -> None:
            data = self.from_server.get_data_nowait()
            if not data:
                return
            self.decoder.receive_data(data)
            now = trio.current_time()
            while (frame := self.decoder.next_frame()) is not None:
                label = (
                    f"CLOSE({frame.code})"
                    if isinstance(frame, Close)
                    else (type(frame).__name__.upper())
                )
                self.arrows.append(Arrow("server", name, label, now, now))

        self.to_server_send.send_all_hook = deliver
        self.from_server.send_all_hook = record

    def server_end(self) -> trio.StapledStream[Any, Any]:
        return trio.StapledStream(self.from_server, self.to_server)

    async def send(self, frame: object, label: str) -> None:
        now = trio.current_time()
        self.arrows.append(Arrow(self.name, "server", label, now, now))
        await self.to_server_send.send_all(encode(frame))  # type: ignore[arg-type]

    def buffer(self, frame: object, label: str, sent: float, read: float) -> None:
        """Bytes sent while the server was stalled: into its buffer, unread."""
        self.arrows.append(Arrow(self.name, "server", label, sent, read))
        self.to_server.put_data(encode(frame))  # type: ignore[arg-type]


class Listener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, streams: list[trio.abc.Stream]) -> None:
        self.streams = streams

    async def accept(self) -> trio.abc.Stream:
        if not self.streams:
            await trio.sleep_forever()
        return self.streams.pop(0)

    async def aclose(self) -> None:
        pass


async def record(clock: trio.testing.MockClock) -> tuple[list[Arrow], float]:
    arrows: list[Arrow] = []
    a, b = Lane("A", arrows), Lane("B", arrows)
    kicked: list[float] = []

    def on_disconnect(conn: HeartbeatConnection, reason: DisconnectReason) -> None:
        if reason is DisconnectReason.HEARTBEAT_TIMEOUT:
            kicked.append(conn.last_sent)  # its CLOSE(1), the last thing written

    async def idle(conn: HeartbeatConnection) -> None:
        await trio.sleep_forever()

    server = HeartbeatServer(idle, config=CONFIG, on_disconnect=on_disconnect)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            server.serve_listeners, [Listener([a.server_end(), b.server_end()])]
        )
        for lane in (a, b):
            await lane.send(Hello({"version": 1, "interval": 10}), "HELLO")
        await trio.sleep(5)
        await b.send(Ping(), "PING")
        for at in (10.0, 20.0):
            await trio.sleep(at - trio.current_time())
            await a.send(Ping(), "PING")
        await trio.sleep(STALL_AT - trio.current_time())
        # The stall: A keeps PINGing, but the server runs nothing for 40 s.
        resumed = STALL_AT + STALL
        for at in (30.0, 40.0, 50.0, 60.0, 65.0):
            a.buffer(Ping(), "PING", at, resumed)
        clock.jump(STALL)
        for at in (75.0, 85.0):
            await trio.sleep(at - trio.current_time())
            await a.send(Ping(), "PING")
        await trio.sleep(END - trio.current_time())
        nursery.cancel_scope.cancel()
    (kick,) = kicked
    return arrows, kick


def render(arrows: list[Arrow], kick: float) -> str:
    width, left, right = 960, 80, 20
    lanes = {"A": 40, "server": 150, "B": 260}
    height = 380

    def x(t: float) -> float:
        return left + (width - left - right) * t / END

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="14">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
        f'<rect x="{x(STALL_AT):.1f}" y="{lanes["server"] - 14}" '
        f'width="{x(STALL_AT + STALL) - x(STALL_AT):.1f}" height="28" fill="#fdecea"/>',
        f'<text x="{x(STALL_AT + STALL / 2):.1f}" y="{lanes["server"] + 5}" '
        f'text-anchor="middle" fill="#cf222e">server stalled {STALL:g} s '
        f"(its timeout is {CONFIG.timeout:g} s)</text>",
    ]
    for name, y in lanes.items():
        out.append(
            f'<line x1="{left}" y1="{y}" x2="{width - right}" y2="{y}" stroke="#555"/>'
            f'<text x="8" y="{y + 5}" font-weight="bold">'
            f"{'client ' + name if name != 'server' else name}</text>"
        )
    for second in range(0, int(END) + 1, 10):
        out.append(
            f'<text x="{x(second):.1f}" y="{lanes["B"] + 22}" text-anchor="middle" '
            f'fill="#555">{second} s</text>'
        )
    colors = {"PING": "#1f6feb", "PONG": "#2da44e", "HELLO": "#555"}
    shown: dict[tuple[str, str, str, float], int] = {}
    for arrow in arrows:
        key = (arrow.sender, arrow.receiver, arrow.label, arrow.sent)
        shown[key] = shown.get(key, 0) + 1
        if shown[key] > 1 or arrow.label == "CLOSE(5)":
            continue  # one arrow per write; not the shutdown at the end
        color = colors.get(arrow.label, "#cf222e")
        y1, y2 = lanes[arrow.sender], lanes[arrow.receiver]
        # Zero latency in virtual time: replies drawn a little to the right.
        shift = 5 if arrow.sender == "server" else 0
        x1, x2 = x(arrow.sent) + shift, x(arrow.read) + shift
        dash = ' stroke-dasharray="4,3"' if arrow.read > arrow.sent else ""
        tip = y2 + (6 if y2 < y1 else -6)  # stop short of the lane line
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1}" x2="{x2:.1f}" y2="{tip}" '
            f'stroke="{color}" stroke-width="1.5"{dash} marker-end="url(#arrow)"/>'
        )
    for (sender, _, label, sent), count in shown.items():
        if count > 1 and label != "CLOSE(5)":
            y = lanes["server"] - 8 if sender == "server" else lanes["server"] + 18
            out.append(
                f'<text x="{x(sent) + 9:.1f}" y="{y}" fill="#2da44e">'
                f"{count} {escape(label)}s</text>"
            )
    out.append(
        f'<line x1="{x(kick):.1f}" y1="{lanes["server"]}" x2="{x(kick):.1f}" '
        f'y2="{lanes["B"] + 35}" stroke="#cf222e" stroke-dasharray="5,3"/>'
        f'<text x="{x(kick) - 4:.1f}" y="{lanes["B"] + 50}" text-anchor="end" '
        f'fill="#cf222e">B kicked at {kick:g} s: silent {CONFIG.timeout:g} s by '
        "the server&#x27;s awake clock</text>"
    )
    legend = (
        "Dashed: PINGs that A sent during the stall wait in the server's buffer;",
        f"they are read and answered on waking ({STALL_AT + STALL:g} s), before "
        "anyone is judged. A is not kicked.",
    )
    for line, text in enumerate(legend):
        out.append(
            f'<text x="{left}" y="{height - 34 + 20 * line}" fill="#555">'
            f"{escape(text)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def build() -> str:
    clock = trio.testing.MockClock(autojump_threshold=0)
    arrows, kick = trio.run(record, clock, clock=clock)
    return render(arrows, kick)


def main() -> None:
    logging.disable(logging.WARNING)  # the run's own kick log line
    svg = build()
    if "--check" in sys.argv:
        if OUTPUT.read_text() != svg:
            sys.exit(f"{OUTPUT} is stale: run python docs/stall_timeline.py")
        return
    OUTPUT.write_text(svg)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
