"""Encode and decode rates of the sans-IO wire protocol.

Run: python benchmarks/protocol.py

Prints frames/s for an empty PING and a 100-byte DATA frame, and MB/s for
64 KiB DATA frames, each encoded and decoded (decoding fed as one buffer of many
frames, as a busy socket read delivers them, and one byte at a time).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from trio_heartbeat import Data, FrameDecoder, Ping, encode


def best_of(fn: Callable[[], int], rounds: int = 5) -> tuple[float, int]:
    """Run fn `rounds` times; return (best seconds, units fn reports)."""
    best = float("inf")
    units = 0
    for _ in range(rounds):
        start = time.perf_counter()
        units = fn()
        best = min(best, time.perf_counter() - start)
    return best, units


def encode_rate(frame: Ping | Data, n: int) -> Callable[[], int]:
    def run() -> int:
        for _ in range(n):
            encode(frame)
        return n

    return run


def decode_rate(wire: bytes, n: int, chunk: int) -> Callable[[], int]:
    stream = wire * n

    def run() -> int:
        decoder = FrameDecoder()
        count = 0
        for i in range(0, len(stream), chunk):
            decoder.receive_data(stream[i : i + chunk])
            while decoder.next_frame() is not None:
                count += 1
        assert count == n
        return count

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    ping, data100, data64k = Ping(), Data(b"x" * 100), Data(b"x" * 65536)
    rows: list[tuple[str, str]] = []

    seconds, n = best_of(encode_rate(ping, 200_000))
    rows.append(("encode empty PING", f"{n / seconds:,.0f} frames/s"))
    seconds, n = best_of(encode_rate(data100, 200_000))
    rows.append(("encode 100-byte DATA", f"{n / seconds:,.0f} frames/s"))
    seconds, n = best_of(encode_rate(data64k, 2_000))
    rows.append(("encode 64 KiB DATA", f"{n * 65536 / seconds / 1e6:,.0f} MB/s"))

    seconds, n = best_of(decode_rate(encode(ping), 200_000, 65536))
    rows.append(("decode empty PING (64 KiB reads)", f"{n / seconds:,.0f} frames/s"))
    seconds, n = best_of(decode_rate(encode(data100), 200_000, 65536))
    rows.append(("decode 100-byte DATA (64 KiB reads)", f"{n / seconds:,.0f} frames/s"))
    seconds, n = best_of(decode_rate(encode(data64k), 2_000, 1 << 20))
    rows.append(
        ("decode 64 KiB DATA (1 MiB reads)", f"{n * 65536 / seconds / 1e6:,.0f} MB/s")
    )
    seconds, n = best_of(decode_rate(encode(data64k), 4, 1), rounds=1)
    rows.append(
        ("decode 64 KiB DATA (1-byte reads)", f"{n * 65536 / seconds / 1e6:,.2f} MB/s")
    )

    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>22}")


if __name__ == "__main__":
    main()
