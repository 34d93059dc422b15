"""A kick's last frame and FIN: what the two ways of sending them in one TCP
segment cost the server's thread.

Run: python benchmarks/last_frame.py [--connections 3000] [--rounds 6]

Opens ``--connections`` loopback TCP connections whose client ends live in a
child process on the other core (one epoll loop; each closes its socket when
the CLOSE arrives, as a kicked client does). Then, pinned to core 0, the
server side writes a CLOSE frame and shuts its sending direction on every
connection, one way per round, the ways alternating:

* ``cork``: ``setsockopt(TCP_CORK)``, ``write``, ``shutdown(SHUT_WR)``;
* ``more``: ``send(MSG_MORE)``, ``shutdown(SHUT_WR)`` (what the socket
  transport's ``write_last`` does on Linux).

Prints the thread's CPU time per connection (the loopback delivery, which
runs on the sender's time, included) and the TCP segments per connection,
from ``nstat``'s TcpOutSegs (both directions, since both ends are local): 3
when the frame and the FIN leave together (theirs, the client's FIN, our
ACK), 4 when they leave apart. Linux only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import select
import socket
import statistics
import subprocess
import time

from trio_heartbeat import Close, CloseCode, encode

WAYS = ("cork", "more")


def out_segments() -> int:
    """The host's TcpOutSegs counter (nstat -a: absolute, not since last)."""
    text = subprocess.run(
        ["nstat", "-az", "TcpOutSegs"], capture_output=True, text=True, check=True
    ).stdout
    for line in text.splitlines():
        if line.startswith("TcpOutSegs"):
            return int(line.split()[1])
    raise RuntimeError("nstat printed no TcpOutSegs")


def clients(port: int, count: int, ready: multiprocessing.Queue[int]) -> None:
    """Connect ``count`` sockets; close each once its CLOSE arrives."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})
    socks = {}
    epoll = select.epoll()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        epoll.register(sock.fileno(), select.EPOLLIN)
        socks[sock.fileno()] = sock
    ready.put(count)
    while socks:
        for fd, _ in epoll.poll(5):
            sock = socks.pop(fd)
            epoll.unregister(fd)
            sock.recv(4096)  # (closed unread, the socket would send a reset)
            sock.close()


def one_round(way: str, count: int) -> tuple[float, float]:
    """CPU microseconds and TCP segments per connection for one way."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    ready: multiprocessing.Queue[int] = multiprocessing.Queue()
    child = multiprocessing.Process(
        target=clients, args=(listener.getsockname()[1], count, ready)
    )
    child.start()
    conns = [listener.accept()[0] for _ in range(count)]
    ready.get()
    frame = encode(Close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"))
    before = out_segments()
    started = time.thread_time()
    for conn in conns:
        if way == "cork":
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            os.write(conn.fileno(), frame)
        else:
            conn.send(frame, socket.MSG_MORE)
        conn.shutdown(socket.SHUT_WR)
    cpu = (time.thread_time() - started) / count * 1e6
    child.join(60)
    segments = (out_segments() - before) / count
    for conn in conns:
        conn.close()
    listener.close()
    return cpu, segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {0})  # the clients move themselves to core 1
    results: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    for n in range(args.rounds):
        for way in WAYS if n % 2 == 0 else reversed(WAYS):
            results[way].append(one_round(way, args.connections))
    print(f"{args.connections} connections, {args.rounds} rounds per way, alternating")
    for way in WAYS:
        cpu = [c for c, _ in results[way]]
        segments = [s for _, s in results[way]]
        print(
            f"  {way}: {statistics.median(cpu):.2f} us per connection (median; "
            f"{min(cpu):.2f}-{max(cpu):.2f}), "
            f"{statistics.median(segments):.2f} TCP segments per connection"
        )
    ratios = [
        m[0] / c[0] for m, c in zip(results["more"], results["cork"], strict=True)
    ]
    print(f"  more / cork, median of the rounds: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
