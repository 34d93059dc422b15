"""Runs inside a network namespace for test_keepalive's dead-link tests.

    server HOST PORT            accept one connection, print "accepted", hold it
    client HOST PORT MODE       MODE: keepalive | user-timeout | none

The client connects, configures its socket with trio_heartbeat's own
configure_keepalive, prints "connected", waits for "cut" on stdin (the test cuts
the link), then reports "dead <seconds since cut> <error>" or "alive <state>".
"""

from __future__ import annotations

import socket
import struct
import sys
import time

from trio_heartbeat import configure_keepalive

TCP_ESTABLISHED = 1


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
    sock.settimeout(None)
    if mode == "keepalive":
        configure_keepalive(sock, idle=2, interval=1, count=2)
    elif mode == "user-timeout":
        configure_keepalive(sock, user_timeout=3)
    print("connected", flush=True)
    assert sys.stdin.readline().strip() == "cut"
    cut_at = time.monotonic()
    if mode == "user-timeout":
        sock.sendall(b"x" * 1000)  # unacknowledged data in flight
    if mode == "none":
        sock.settimeout(6)
    try:
        data = sock.recv(1)
        print(f"dead {time.monotonic() - cut_at:.3f} eof:{data!r}", flush=True)
    except OSError as exc:
        # The kernel's ETIMEDOUT is a TimeoutError too; only the socket's own
        # timeout (settimeout) has no errno.
        if isinstance(exc, TimeoutError) and exc.errno is None:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
            state = struct.unpack("B", info[:1])[0]
            shown = "ESTABLISHED" if state == TCP_ESTABLISHED else state
            print(f"alive {shown}", flush=True)
        else:
            print(f"dead {time.monotonic() - cut_at:.3f} {exc.strerror}", flush=True)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), sys.argv[4])
