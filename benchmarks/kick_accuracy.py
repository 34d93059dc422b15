"""Detection accuracy: how late are kicks when 1,000 clients go silent at once?

Run: python benchmarks/kick_accuracy.py [--clients 1000] [--timeout 5]

Starts a trio_heartbeat server with timeout T (pinned to core 0); the clients
(core 1) each send one last PING at the same moment, then stay silent. The
clients are ``loadgen silent`` (benchmarks/loadgen.c, one epoll thread, built
with cc), or with ``--python-clients`` Trio tasks in this process. Each client
closes its socket when its CLOSE(1) comes, as a live one does, and the server
wakes that connection to read the answer while later kicks are due. With
``--hold`` it answers nothing until every client has its CLOSE(1), as a hung
client or one whose network is gone would: the kicks then cost the server no
wake-up until the last is out. Lateness,
p50/p99/max in milliseconds:

* server side: when the server wrote each CLOSE(1) (the connection's
  ``stats.last_sent``), against its own deadline (last frame received + T);
  and when the on_disconnect hook ran, once the connection was cleaned up;
* client side: when each CLOSE(1) arrived, against last PING sent + T. On top
  of the server's lateness this holds the time the server took to read the
  PING (a burst of 1,000 is read one after another: printed as the span over
  which the last PINGs were read), and the clients' own time to read 1,000
  sockets (small for loadgen.c, tens of ms for Python).

The server freezes what its connections made every second, as ``serve`` does.
``--timeline`` also prints the server's CPU time (each task step's, timed by a
Trio instrument) while it read the burst of PINGs, and from the first deadline
to the last CLOSE(1): the kicks keep up only where the second is no larger.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import HELLO, PING, baseline_checkout, build_loadgen, pin, start_server

from trio_heartbeat import Close, FrameDecoder

# The server, with a hook that records each kick's lateness against its own
# deadline (last frame received + timeout) and prints them when terminated.
SERVER = """
import logging, signal, sys, time, trio, trio_heartbeat
from trio_heartbeat._cli import _serve
logging.disable(logging.ERROR)  # as `serve --log-level ERROR`: no line per kick
late, cleaned, read, written = [], [], [], []
class Timeline(trio.abc.Instrument):  # --timeline: each task step's CPU time
    steps = []  # (loop time at its end, seconds, whether it was the kicker)
    started = None  # (none for the step that adds the instrument)
    def before_task_step(self, task):
        self.started = time.thread_time()
    def after_task_step(self, task):
        if self.started is not None:
            self.steps.append((trio.current_time(),
                               time.thread_time() - self.started,
                               task.name.endswith("Kicker.run")))
def timeline():
    # From the first PING read to the end of the step that read the last; from
    # the first deadline to the end of the step that wrote the last CLOSE(1).
    ends = lambda at: min(t for t, _, _ in Timeline.steps if t >= at)
    first, last = min(read), ends(max(read))
    start, end = first + float(sys.argv[1]), ends(max(written))
    def busy(lo, hi, kicker=False):
        return sum(s for t, s, k in Timeline.steps
                   if lo <= t <= hi and (k or not kicker))
    steps = lambda lo, hi: sum(1 for t, _, _ in Timeline.steps if lo <= t <= hi)
    return "%.6f %d %.6f %.6f %d" % (busy(first, last), steps(first, last),
        busy(start, end), busy(start, end, True), steps(start, end))
def kicked(conn, reason):
    read.append(conn.stats.last_received)
    written.append(conn.stats.last_sent)
    deadline = conn.stats.last_received + float(sys.argv[1])
    late.append(conn.stats.last_sent - deadline)  # the CLOSE(1) write
    cleaned.append(trio.current_time() - deadline)
@trio_heartbeat.per_message  # as `serve`: one task per connection
async def echo(conn, data):
    await conn.send(data)
async def echo_task(conn):  # --handler task: a reader and a handler task
    async for data in conn:
        await conn.send(data)
handler = echo if sys.argv[2] == "per-message" else echo_task
async def main():
    config = trio_heartbeat.ServerConfig(timeout=float(sys.argv[1]))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: trio_heartbeat.serve_tcp(
                handler, 0, host="127.0.0.1", config=config, on_disconnect=kicked,
                task_status=task_status))
        # As `serve`: startup's objects out of the collector's reach, and then
        # what the connections made, every second.
        _serve._freeze_startup_objects()
        nursery.start_soon(_serve.freeze_settled)
        if sys.argv[4] == "timeline":
            trio.lowlevel.add_instrument(Timeline())
        print("listening on 127.0.0.1:%d" % listeners[0].socket.getsockname()[1],
              flush=True)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                # The clients have had every CLOSE(1); the cleanups (which
                # report) may still be under way: kicks come first.
                with trio.move_on_after(60):
                    while len(late) < int(sys.argv[3]):
                        await trio.sleep(0.01)
                print(" ".join("%.6f" % x for x in late), flush=True)
                print(" ".join("%.6f" % x for x in cleaned), flush=True)
                print("%.6f" % (max(read) - min(read)), flush=True)
                print(timeline() if Timeline.steps else "", flush=True)
                nursery.cancel_scope.cancel()
trio.run(main)
"""


async def c_clients(
    loadgen: str, port: int, clients: int, kick_after: float, hold: bool
) -> list[float]:
    """CLOSE(1) lateness per client, as loadgen.c measured it."""
    result = await trio.run_process(
        [loadgen, "silent", str(port), str(clients), str(kick_after)]
        + (["hold"] if hold else []),
        capture_stdout=True,
    )
    label, *values = result.stdout.split()
    assert label == b"late", result.stdout[:100]
    return [float(x) for x in values]


async def python_clients(port: int, clients: int, kick_after: float) -> list[float]:
    """CLOSE(1) lateness per client, as Trio tasks of this process saw it."""
    lateness: list[float] = []
    streams: list[tuple[trio.SocketStream, FrameDecoder]] = []
    for _ in range(clients):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(HELLO)
        decoder = FrameDecoder()
        while decoder.next_frame() is None:
            decoder.receive_data(await stream.receive_some(65536))
        streams.append((stream, decoder))
    go = trio.Event()

    async def client(stream: trio.SocketStream, decoder: FrameDecoder) -> None:
        await go.wait()
        # Read the clock first: send_all ends with a checkpoint, and with
        # 1,000 tasks this one may resume a scheduler batch later.
        last = trio.current_time()
        await stream.send_all(PING)
        while True:
            frame = decoder.next_frame()
            if isinstance(frame, Close):
                assert frame.code == 1, frame
                lateness.append(trio.current_time() - (last + kick_after))
                return
            if frame is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                decoder.receive_data(data)

    with trio.fail_after(kick_after + 60):
        async with trio.open_nursery() as nursery:
            for stream, decoder in streams:
                nursery.start_soon(client, stream, decoder)
            await trio.sleep(0.5)
            go.set()
    for stream, _ in streams:
        await stream.aclose()
    return lateness


async def measure(
    clients: int,
    kick_after: float,
    loadgen: str | None,
    handler: str,
    checkout: Path,
    timeline: bool = False,
    hold: bool = False,
) -> tuple[list[float], list[float], list[float], float, list[float]]:
    # The server runs the package of ``checkout``: from its directory (which
    # ``python -c`` puts first on the path) and on PYTHONPATH.
    cmd = ["env", f"PYTHONPATH={checkout}", sys.executable, "-c", SERVER,
           str(kick_after), handler, str(clients),
           "timeline" if timeline else "-"]  # fmt: skip
    process, port = start_server(cmd, True, checkout)
    try:
        if loadgen is not None:
            lateness = await c_clients(loadgen, port, clients, kick_after, hold)
        else:
            lateness = await python_clients(port, clients, kick_after)
        process.terminate()
        assert process.stdout is not None
        server_side = [float(x) for x in process.stdout.readline().split()]
        cleaned = [float(x) for x in process.stdout.readline().split()]
        spread = float(process.stdout.readline())
        steps = [float(x) for x in process.stdout.readline().split()]
    finally:
        process.terminate()
        process.wait(timeout=30)
    return server_side, cleaned, lateness, spread, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument(
        "--python-clients",
        action="store_true",
        help="clients as Trio tasks in this process instead of loadgen.c",
    )
    parser.add_argument(
        "--handler",
        choices=["per-message", "task"],
        default="per-message",
        help="the server's handler: per_message (as serve), or a task per "
        "connection beside its reader",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure trio_heartbeat from the checkout in DIR (another "
        "version), alternating with this one round by round",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="time each task step of the server (a Trio instrument, which "
        "slows it a little) and print the CPU spent reading the burst of PINGs "
        "against that spent from the first deadline to the last CLOSE(1)",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="kicked clients keep their sockets open, unanswered, until every "
        "one is kicked, as hung clients or ones whose network is gone would "
        "(by default each closes its socket at its CLOSE(1), as a live client "
        "does; --python-clients always hold)",
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, 2 * args.clients + 200), hard)
    )
    loadgen = None if args.python_clients else build_loadgen()
    pin(1)
    answer = "hold the socket" if args.hold or not loadgen else "close"
    print(f"handler: {args.handler}; clients: {'loadgen.c' if loadgen else 'Python'}"
          f", at their CLOSE(1): {answer}")  # fmt: skip
    versions = [("this checkout", Path(__file__).resolve().parents[1])]
    if args.baseline:
        versions.append(("baseline", baseline_checkout(args.baseline)))
    p99s: dict[str, list[float]] = {name: [] for name, _ in versions}
    for number in range(1, args.rounds + 1):
        # Each version goes first every other round: whatever running first
        # or second does falls on both alike.
        for name, checkout in versions if number % 2 else versions[::-1]:
            server_side, cleaned, client_side, spread, steps = trio.run(
                measure, args.clients, args.timeout, loadgen, args.handler,
                checkout, args.timeline, args.hold,
            )  # fmt: skip
            print(f"round {number}, {name}: {len(client_side)} of {args.clients} "
                  f"kicked, {len(server_side)} reported by the server; last "
                  f"PINGs read over {spread * 1000:.1f} ms")  # fmt: skip
            for label, values in (
                ("server: CLOSE(1) written - (last received + timeout)", server_side),
                ("server: cleaned up and reported - (last received + timeout)",
                 cleaned),
                ("client: CLOSE(1) arrival - (last PING sent + timeout)", client_side),
            ):  # fmt: skip
                ms = sorted(x * 1000 for x in values)
                p99 = ms[int(len(ms) * 0.99) - 1]
                if label.startswith("server: CLOSE"):
                    p99s[name].append(p99)
                print(f"  {label}: p50 {statistics.median(ms):.1f} ms, "
                      f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")  # fmt: skip
            if steps:
                reading, read_steps, kicking, kicker, kick_steps = steps
                print(f"  server CPU reading the PINGs: {reading * 1000:.0f} ms in "
                      f"{read_steps:.0f} task steps; first deadline to last "
                      f"CLOSE(1): {kicking * 1000:.0f} ms in {kick_steps:.0f} "
                      f"steps, the kicker {kicker * 1000:.0f} ms of it "
                      f"({kicking / reading:.2f}x the reading)")  # fmt: skip
    for name, values in p99s.items():
        print(f"{name}: CLOSE(1) written, median p99 over {len(values)} rounds "
              f"{statistics.median(values):.1f} ms (each: "
              f"{', '.join(f'{v:.1f}' for v in values)})")  # fmt: skip


if __name__ == "__main__":
    main()
