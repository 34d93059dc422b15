"""Fuzz FrameDecoder: any bytes, fed whole and byte by byte, give the same frames
and then at most one documented error.

    python tests/fuzz_decoder.py -runs=1000000 [libFuzzer flags]
    python tests/fuzz_decoder.py --random 1000000 [--seed S]

With atheris installed (``pip install -e '.[fuzz]'``) the first form runs
coverage-guided fuzzing; without it, or with ``--random``, a seeded engine
mutates valid frame sequences (bit flips, cuts, splices, deep JSON). Both call
:func:`check` on every input; test_protocol runs it under hypothesis too.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator

from trio_heartbeat._protocol import (
    Close,
    CloseCode,
    Data,
    DecoderFailedError,
    Frame,
    FrameDecoder,
    Hello,
    Ping,
    Pong,
    RemoteProtocolError,
    encode,
)

#: The first input byte picks the decoder's limit, so limits are fuzzed too.
FRAME_SIZES = (0, 1, 2, 5, 127, 128, 300, 16383, 16384, 1 << 20)

Outcome = tuple[list[Frame], tuple[type[Exception], str, int] | None]


def _decode(chunks: Iterator[bytes], max_frame_size: int) -> Outcome:
    decoder = FrameDecoder(max_frame_size)
    frames: list[Frame] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
            # What remains is one incomplete frame: type, varint, payload.
            assert decoder.buffered <= 1 + 4 + max_frame_size, decoder.buffered
        decoder.receive_data(b"")
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    except RemoteProtocolError as exc:
        assert exc.code in set(CloseCode), exc.code
        assert decoder.error is exc
        # A failed decoder stays failed, with the same code.
        for again in (decoder.next_frame, lambda: decoder.receive_data(b"x")):
            try:
                again()
            except DecoderFailedError as failed:
                assert failed.code == exc.code
            else:
                raise AssertionError("a failed decoder accepted more") from None
        return frames, (type(exc), str(exc), exc.code)
    assert decoder.eof and decoder.next_frame() is None
    return frames, None


def check(data: bytes) -> None:
    """Raise AssertionError (or whatever escapes the decoder) on any violation."""
    if not data:
        return
    max_frame_size = FRAME_SIZES[data[0] % len(FRAME_SIZES)]
    wire = data[1:]
    whole = _decode(iter([wire] if wire else []), max_frame_size)
    split = _decode((wire[i : i + 1] for i in range(len(wire))), max_frame_size)
    assert whole == split, (whole, split)


# ------------------------------------------------------------ the seeded engine

SEEDS: tuple[Frame, ...] = (
    Ping(),
    Pong(),
    Ping(b"\x00\xff"),
    Pong(b"x" * 130),
    Data(b"hello"),
    Data(b"y" * 200),
    Close(1, "nothing received for 60 s"),
    Close(255, "\u00e9"),
    Hello({"version": 1, "interval": 25}),
    Hello({"version": 1, "token": "t", "nested": [1, {"a": None}]}),
)


def _mutate(rng: random.Random, wire: bytearray) -> bytes:
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        position = rng.randint(0, len(wire))
        if kind == 0 and wire:  # flip a bit
            index = rng.randrange(len(wire))
            wire[index] ^= 1 << rng.randrange(8)
        elif kind == 1:  # random bytes in
            wire[position:position] = rng.randbytes(rng.randint(1, 8))
        elif kind == 2:  # cut
            del wire[position : position + rng.randint(1, 16)]
        elif kind == 3:  # a varint of extreme value
            wire[position:position] = rng.choice(
                [b"\xff\xff\xff\x7f", b"\x80\x80\x80\x80\x01", b"\x80", b"\x00"]
            )
        elif kind == 4:  # deeply nested JSON in a HELLO
            depth = rng.choice([10, 900, 3000])
            body = (b"[" if rng.random() < 0.5 else b'{"a":') * depth
            header = encode(Data(body))
            wire[position:position] = b"\x01" + header[1:]
        elif kind == 5:  # an unknown type byte
            wire[position:position] = bytes([rng.choice([0, 6, 7, 0x80, 0xFF]), 0])
        else:  # truncate the end
            del wire[position:]
    return bytes(wire)


def random_inputs(count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        frames = rng.choices(SEEDS, k=rng.randint(0, 6))
        wire = bytearray(b"".join(encode(f) for f in frames))
        if rng.random() < 0.8:
            wire = bytearray(_mutate(rng, wire))
        yield bytes([rng.randrange(256)]) + bytes(wire)


def run_random(count: int, seed: int, report: Callable[[str], None]) -> None:
    for done, data in enumerate(random_inputs(count, seed), 1):
        try:
            check(data)
        except BaseException:
            report(f"failing input (seed {seed}, #{done}): {data[:200]!r}")
            raise
        if done % 100_000 == 0:
            report(f"{done} inputs checked")
    report(f"{count} inputs checked, no violation (random engine, seed {seed})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, metavar="N", help="seeded engine")
    parser.add_argument("--seed", type=int, default=0)
    args, libfuzzer_args = parser.parse_known_args(argv[1:])
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        atheris = None
    if args.random is None and atheris is None:
        runs = [a for a in libfuzzer_args if a.startswith("-runs=")]
        args.random = int(runs[-1].split("=", 1)[1]) if runs else 1_000_000
        print("atheris is not installed: using the random engine", file=sys.stderr)
    if args.random is not None:
        run_random(args.random, args.seed, lambda line: print(line, file=sys.stderr))
        return 0
    atheris.instrument_func(FrameDecoder._next_frame)
    atheris.instrument_func(FrameDecoder.receive_data)
    atheris.Setup([argv[0], *libfuzzer_args], check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
