"""Draw docs/_static/timeline.svg from a real, recorded run of the library.

Regenerate with:  python docs/timeline.py

A client and a server from trio_heartbeat talk over an in-memory link in
virtual time (trio's MockClock with autojump), so the run is exact and
repeatable. A recording pump between them logs every frame with its time and
direction. At CUT seconds the link starts dropping everything, both ways: the
client's PINGs go unanswered until it declares the server dead, and the
server, hearing nothing more, kicks the client at its timeout.
"""

from __future__ import annotations

import itertools
import logging
import sys
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import attrs
import trio
import trio.testing

from trio_heartbeat import (
    ClientConfig,
    Close,
    ConnectionClosed,
    FrameDecoder,
    HeartbeatConnection,
    ServerConfig,
    connect_stream,
    serve_listeners,
)

OUTPUT = Path(__file__).resolve().parent / "_static" / "timeline.svg"
CUT = 26.0
CLIENT = ClientConfig(interval=10, retries=2, retry_interval=3)
SERVER = ServerConfig(timeout=30, min_interval=1)


@attrs.frozen
class Event:
    time: float
    sender: str  # "client" or "server"
    label: str
    delivered: bool


class RecordingLink:
    """Two one-way memory pipes whose pumps log frames and can drop them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cut = False
        self.client_end, self.server_end = self._pair()

    def _pump(self, sender: str, send: trio.testing.MemorySendStream,
              receive: trio.testing.MemoryReceiveStream) -> None:  # fmt: skip
        decoder = FrameDecoder()

        async def pump() -> None:
            data = send.get_data_nowait()
            if not data:
                return
            decoder.receive_data(data)
            while (frame := decoder.next_frame()) is not None:
                self.events.append(
                    Event(trio.current_time(), sender, label(frame), not self.cut)
                )
            if not self.cut:
                receive.put_data(data)

        send.send_all_hook = pump

    def _pair(self) -> tuple[trio.abc.Stream, trio.abc.Stream]:
        c2s_send, c2s_receive = (
            trio.testing.MemorySendStream(),
            trio.testing.MemoryReceiveStream(),
        )
        s2c_send, s2c_receive = (
            trio.testing.MemorySendStream(),
            trio.testing.MemoryReceiveStream(),
        )
        self._pump("client", c2s_send, c2s_receive)
        self._pump("server", s2c_send, s2c_receive)
        return (
            trio.StapledStream(c2s_send, s2c_receive),
            trio.StapledStream(s2c_send, c2s_receive),
        )


def label(frame: object) -> str:
    if isinstance(frame, Close):
        return f"CLOSE({frame.code})"
    return type(frame).__name__.upper()


class OneShotListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream: trio.abc.Stream | None = stream

    async def accept(self) -> trio.abc.Stream:
        if self.stream is None:
            await trio.sleep_forever()
        stream, self.stream = self.stream, None
        assert stream is not None
        return stream

    async def aclose(self) -> None:
        pass


async def record() -> tuple[list[Event], dict[str, float]]:
    link = RecordingLink()
    marks: dict[str, float] = {}

    async def echo(conn: HeartbeatConnection) -> None:
        async for data in conn:
            await conn.send(data.upper())

    def kicked(conn: HeartbeatConnection, reason: object) -> None:
        # The kick is its CLOSE(1), the last thing the server wrote; the hook
        # runs once the server has waited close_timeout for an answer.
        marks["server kicks the client"] = conn.last_sent

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_listeners, echo, [OneShotListener(link.server_end)],
                config=SERVER, on_disconnect=kicked,
            )
        )  # fmt: skip
        try:
            async with connect_stream(link.client_end, config=CLIENT) as conn:
                await trio.sleep(4)
                await conn.send(b"hi")
                await conn.receive()
                await trio.sleep(CUT - trio.current_time())
                link.cut = True
                marks["link cut"] = trio.current_time()
                await trio.sleep_forever()
        except ConnectionClosed:
            marks["client declares the server dead"] = trio.current_time()
        await trio.sleep(SERVER.timeout)
        nursery.cancel_scope.cancel()
    return link.events, marks


def render(events: list[Event], marks: dict[str, float]) -> str:
    end = max([e.time for e in events] + list(marks.values())) + 3
    width, left, right = 900, 90, 30
    y_client, y_server, height = 100, 230, 350

    def x(t: float) -> float:
        return left + (width - left - right) * t / end

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="15">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
    ]
    cut = marks["link cut"]
    out.append(
        f'<rect x="{x(cut):.1f}" y="{y_client - 25}" width="{x(end) - x(cut):.1f}" '
        f'height="{y_server - y_client + 50}" fill="#fdecea"/>'
    )
    for name, y in (("client", y_client), ("server", y_server)):
        out.append(
            f'<line x1="{left}" y1="{y}" x2="{width - right}" y2="{y}" stroke="#555"/>'
        )
        out.append(f'<text x="10" y="{y + 4}" font-weight="bold">{name}</text>')
    for second in range(0, int(end) + 1, 5):
        out.append(
            f'<line x1="{x(second):.1f}" y1="{y_server + 30}" x2="{x(second):.1f}" '
            f'y2="{y_server + 35}" stroke="#555"/><text x="{x(second):.1f}" '
            f'y="{y_server + 48}" text-anchor="middle">{second} s</text>'
        )
    colors = {"PING": "#1f6feb", "PONG": "#2da44e", "DATA": "#8250df", "HELLO": "#555"}
    stagger: dict[tuple[float, str], int] = {}
    for event in events:
        start_y, stop_y = (
            (y_client, y_server) if event.sender == "client" else (y_server, y_client)
        )
        # Zero latency in virtual time: draw replies a little to the right so
        # a request and its answer do not overlap.
        ex = x(event.time) + (6 if event.sender == "server" else 0)
        color = colors.get(event.label, "#cf222e")
        slot = stagger.get((event.time, event.sender), 0)
        stagger[(event.time, event.sender)] = slot + 1
        text_y = (
            (y_client - 10 - 16 * slot)
            if event.sender == "client"
            else (y_server + 20 + 16 * slot)
        )
        if event.delivered:
            out.append(
                f'<line x1="{ex:.1f}" y1="{start_y}" x2="{ex:.1f}" y2="{stop_y}" '
                f'stroke="{color}" stroke-width="1.5" marker-end="url(#arrow)"/>'
            )
        else:
            mid = (start_y + stop_y) / 2
            out.append(
                f'<line x1="{ex:.1f}" y1="{start_y}" x2="{ex:.1f}" y2="{mid}" '
                f'stroke="{color}" stroke-width="1.5" stroke-dasharray="3,2"/>'
                f'<text x="{ex:.1f}" y="{mid + 4}" text-anchor="middle" '
                f'fill="#cf222e" font-size="13">✕</text>'
            )
        out.append(
            f'<text x="{ex:.1f}" y="{text_y}" text-anchor="middle" fill="{color}">'
            f"{escape(event.label)}</text>"
        )
    for index, (name, t) in enumerate(sorted(marks.items(), key=lambda m: m[1])):
        near_end = x(t) > width * 0.7
        anchor, dx = ("end", -4) if near_end else ("start", 4)
        out.append(
            f'<line x1="{x(t):.1f}" y1="{y_client - 45}" x2="{x(t):.1f}" '
            f'y2="{y_server + 25}" stroke="#cf222e" stroke-dasharray="5,3"/>'
            f'<text x="{x(t) + dx:.1f}" y="{18 + 17 * index}" fill="#cf222e" '
            f'text-anchor="{anchor}">{escape(name)} ({t:g} s)</text>'
        )
    # Idle gaps: time from the client's last send to the PING it caused.
    sent = [e for e in events if e.sender == "client"]
    for before, ping in itertools.pairwise(sent):
        if ping.label == "PING" and ping.time - before.time == CLIENT.interval:
            a, b = x(before.time) + 3, x(ping.time) - 3
            out.append(
                f'<path d="M{a:.1f},{y_client + 14} v6 H{b:.1f} v-6" fill="none" '
                f'stroke="#999"/><text x="{(a + b) / 2:.1f}" y="{y_client + 34}" '
                f'text-anchor="middle" fill="#777">idle {CLIENT.interval:g} s</text>'
            )
    legend = (
        f"client: PING after {CLIENT.interval:g} s idle, resend every "
        f"{CLIENT.retry_interval:g} s, dead after {CLIENT.retries + 1} unanswered",
        f"server: kick after {SERVER.timeout:g} s without receiving anything",
    )
    for line, text in enumerate(legend):
        out.append(
            f'<text x="{left}" y="{height - 30 + 18 * line}" fill="#555">'
            f"{escape(text)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def build() -> str:
    events, marks = trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))
    return render(events, marks)


def main() -> None:
    logging.disable(logging.WARNING)  # the run's own kick/dead log lines
    svg = build()
    if "--check" in sys.argv:
        if OUTPUT.read_text() != svg:
            sys.exit(f"{OUTPUT} is stale: run python docs/timeline.py")
        return
    OUTPUT.write_text(svg)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
