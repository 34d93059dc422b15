"""Runs inside a network namespace for test_keepalive's dead-link tests.

    server HOST PORT            accept one connection, print "accepted", hold it
    client HOST PORT MODE       MODE: keepalive | user-timeout | none

The client connects, configures its socket with trio_heartbeat's own
configure_keepalive, prints "connected", waits for "cut" on stdin (the test has
cut the link by then), then prints one JSON object describing what happened and
the kernel's own timestamps the test needs to judge it:

    verdict        "dead" or "alive"
    error          the socket error's text, or the TCP state when alive
    dead_after     seconds from the cut to the error
    last_rx_before seconds between the last segment received and the cut
                   (the keepalive timer counts from there)
    first_rto      seconds from the cut to the first retransmission-timeout
                   retransmission (the kernel's retrans_stamp is at or before it)
    rto            the retransmission timeout before the cut, seconds

Kernel times come from TCP_INFO (milliseconds since an event), so they do not
depend on when this process got to run.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

from trio_heartbeat import configure_keepalive

TCP_ESTABLISHED = 1
# struct tcp_info (linux/tcp.h): eight u8 fields, then u32 fields from tcpi_rto.
_U8 = struct.Struct("8B")
_U32 = struct.Struct("25I")
_INFO_SIZE = _U8.size + _U32.size


def tcp_info(sock: socket.socket) -> dict[str, int]:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_SIZE)
    u8 = _U8.unpack_from(raw)
    u32 = _U32.unpack_from(raw, _U8.size)
    return {
        "state": u8[0],
        "backoff": u8[4],
        "rto_us": u32[0],
        "last_data_sent_ms": u32[9],
        "last_data_recv_ms": u32[11],
        "last_ack_recv_ms": u32[12],
    }


def server(host: str, port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    print("listening", flush=True)
    conn, _ = listener.accept()
    print("accepted", flush=True)
    sys.stdin.read()  # hold the connection until the test ends
    conn.close()


def client(host: str, port: int, mode: str) -> None:
    sock = socket.create_connection((host, port), timeout=10)
    if mode == "keepalive":
        configure_keepalive(sock, idle=2, interval=1, count=2)
    elif mode == "user-timeout":
        configure_keepalive(sock, user_timeout=3)
    print("connected", flush=True)
    assert sys.stdin.readline().strip() == "cut"
    cut_at = time.monotonic()
    before = tcp_info(sock)
    report: dict[str, object] = {
        "last_rx_before": min(before["last_data_recv_ms"], before["last_ack_recv_ms"])
        / 1000,
        "rto": before["rto_us"] / 1e6,
        "first_rto": None,
    }
    if mode == "user-timeout":
        sock.sendall(b"x" * 1000)  # unacknowledged data in flight
    # Wait for the error (or 6 s of nothing), watching the retransmission
    # timer: the first time the backoff rises is the first RTO retransmission.
    sock.setblocking(False)
    while time.monotonic() - cut_at < 6:
        readable, _, _ = select.select([sock], [], [], 0.005)
        if report["first_rto"] is None:
            info = tcp_info(sock)
            if info["backoff"] >= 1:
                sent_at = time.monotonic() - info["last_data_sent_ms"] / 1000
                report["first_rto"] = round(sent_at - cut_at, 4)
        if not readable:
            continue
        try:
            data = sock.recv(1)
        except OSError as exc:
            error = exc.strerror
        else:
            error = f"eof:{data!r}"
        dead_after = round(time.monotonic() - cut_at, 4)
        report.update(verdict="dead", error=error, dead_after=dead_after)
        break
    else:
        state = tcp_info(sock)["state"]
        shown = "ESTABLISHED" if state == TCP_ESTABLISHED else str(state)
        report.update(verdict="alive", error=shown, dead_after=None)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), sys.argv[4])
