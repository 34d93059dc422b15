"""The floor: a bare Trio server of the same protocol, for comparison.

Run: python benchmarks/bare_trio_server.py [PORT] [--freeze-gc]
(prints "listening on HOST:PORT")

One task per connection, the peer deadline pushed on every read, HELLO answered
with fixed values, PINGs answered with PONGs, DATA echoed upper-cased. No
framework: whatever trio_heartbeat costs beyond this is its own overhead.
``--freeze-gc`` freezes the startup's objects out of the garbage collector once
it listens, as ``python -m trio_heartbeat serve`` does.
"""

from __future__ import annotations

import gc
import sys
from functools import partial

import trio

HELLO_ANSWER = b'\x01\x3b{"version":1,"interval":25,"timeout":3600,"min_interval":1}'
TIMEOUT = 3600.0


async def handle(stream: trio.SocketStream) -> None:
    buffer = bytearray()
    with trio.CancelScope() as scope:
        scope.deadline = trio.current_time() + TIMEOUT
        while data := await stream.receive_some(65536):
            scope.deadline = trio.current_time() + TIMEOUT
            buffer += data
            out = bytearray()
            while len(buffer) >= 2 and len(buffer) >= 2 + buffer[1]:  # 1-byte lengths
                kind, size = buffer[0], buffer[1]
                payload = bytes(buffer[2 : 2 + size])
                del buffer[: 2 + size]
                if kind == 1:
                    out += HELLO_ANSWER
                elif kind == 3:
                    out += b"\x04\x00"
                elif kind == 2:
                    out += bytes((2, size)) + payload.upper()
            if out:
                await stream.send_all(out)
    await stream.aclose()


async def main(port: int, freeze_gc: bool) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, handle, port, host="127.0.0.1")
        )
        if freeze_gc:
            gc.collect()
            gc.freeze()
        address = listeners[0].socket.getsockname()
        print(f"listening on {address[0]}:{address[1]}", flush=True)


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--freeze-gc"]
    trio.run(main, int(arguments[0]) if arguments else 5005, "--freeze-gc" in sys.argv)
