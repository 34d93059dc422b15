from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_heartbeat import (
    DEFAULT_MAX_FRAME_SIZE,
    Close,
    CloseCode,
    Data,
    DecoderFailedError,
    FrameDecoder,
    FrameTooLargeError,
    Hello,
    InvalidCloseError,
    InvalidHelloError,
    LocalProtocolError,
    Ping,
    Pong,
    ProtocolError,
    TruncatedFrameError,
    UnknownFrameTypeError,
    VarintTooLongError,
    encode,
)
from trio_heartbeat._protocol import Frame

from .fuzz_decoder import check, random_inputs


def decode_all(
    data: bytes, *, eof: bool = True, max_frame_size: int = 1 << 20
) -> list[Frame]:
    decoder = FrameDecoder(max_frame_size)
    decoder.receive_data(data)
    if eof:
        decoder.receive_data(b"")
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


# ------------------------------------------------------------ encoding


def test_empty_ping_is_two_bytes() -> None:
    assert encode(Ping()) == b"\x03\x00"


def test_data_hi() -> None:
    assert encode(Data(b"hi")) == b"\x02\x02hi"


def test_pong_with_payload() -> None:
    assert encode(Pong(b"\x05")) == b"\x04\x01\x05"


def test_close_encoding() -> None:
    assert encode(Close(CloseCode.HEARTBEAT_TIMEOUT, "idle")) == b"\x05\x05\x01idle"
    assert encode(Close()) == b"\x05\x01\x00"


def test_hello_encoding_is_compact_json() -> None:
    wire = encode(Hello({"version": 1, "interval": 25}))
    body = b'{"version":1,"interval":25}'
    assert len(body) == 27
    assert wire == b"\x01\x1b" + body


@pytest.mark.parametrize(
    ("length", "varint"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (DEFAULT_MAX_FRAME_SIZE, b"\x80\x80\x40"),
    ],
)
def test_length_is_leb128(length: int, varint: bytes) -> None:
    payload = b"x" * length
    wire = encode(Data(payload))
    assert wire == b"\x02" + varint + payload
    assert decode_all(wire, max_frame_size=length) == [Data(payload)]


def test_close_code_out_of_range_is_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="close code"):
        encode(Close(256))


def test_payload_over_protocol_maximum_is_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds the protocol maximum"):
        encode(Data(bytes(1 << 28)))


# ------------------------------------------------------------ decoding


def test_decodes_every_frame_type() -> None:
    frames: list[Frame] = [
        Hello({"version": 1, "interval": 25.0, "extra": [1, 2]}),
        Data(b"payload"),
        Ping(),
        Ping(b"p"),
        Pong(),
        Pong(b"3 unread"),
        Close(CloseCode.SHUTTING_DOWN, "bye"),
    ]
    wire = b"".join(encode(f) for f in frames)
    assert decode_all(wire) == frames


def test_needs_more_data_returns_none() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x02\x05hel")
    assert decoder.next_frame() is None
    decoder.receive_data(b"lo")
    assert decoder.next_frame() == Data(b"hello")
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_clean_eof_between_frames() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x03\x00")
    decoder.receive_data(b"")
    assert decoder.next_frame() == Ping()
    assert decoder.next_frame() is None
    assert decoder.eof
    assert not decoder.failed


def test_data_after_eof_is_local_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after end of stream"):
        decoder.receive_data(b"x")


def test_close_code_and_undecodable_reason() -> None:
    assert decode_all(b"\x05\x03\x01\xff\xfe") == [Close(1, "\ufffd\ufffd")]


@pytest.mark.parametrize(
    ("wire", "error", "code"),
    [
        (b"\x00\x00", UnknownFrameTypeError, CloseCode.PROTOCOL_ERROR),
        (b"\x06\x00", UnknownFrameTypeError, CloseCode.PROTOCOL_ERROR),
        (b"\xff", UnknownFrameTypeError, CloseCode.PROTOCOL_ERROR),
        (b"\x02\x80\x80\x80\x80\x00", VarintTooLongError, CloseCode.PROTOCOL_ERROR),
        (b"\x05\x00", InvalidCloseError, CloseCode.PROTOCOL_ERROR),
        (b"\x01\x02{}", InvalidHelloError, CloseCode.PROTOCOL_ERROR),
        (b"\x01\x02[]", InvalidHelloError, CloseCode.PROTOCOL_ERROR),
        (b"\x01\x03abc", InvalidHelloError, CloseCode.PROTOCOL_ERROR),
        (b"\x01\x02\xff\xfe", InvalidHelloError, CloseCode.PROTOCOL_ERROR),
        (b'\x01\x0f{"version":"1"}', InvalidHelloError, CloseCode.PROTOCOL_ERROR),
        (b'\x01\x10{"version":true}', InvalidHelloError, CloseCode.PROTOCOL_ERROR),
        (b'\x01\x0f{"version":1.5}', InvalidHelloError, CloseCode.PROTOCOL_ERROR),
        (
            b"\x01\xa0\x8d\x06" + b"[" * 100_000,
            InvalidHelloError,
            CloseCode.PROTOCOL_ERROR,
        ),
    ],
)
def test_remote_errors_carry_close_code(
    wire: bytes, error: type[ProtocolError], code: CloseCode
) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    with pytest.raises(error) as info:
        decoder.next_frame()
    assert info.value.code == code


def test_frames_before_an_error_are_delivered() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x03\x00\x02\x01a\x09\x00")
    assert decoder.next_frame() == Ping()
    assert decoder.next_frame() == Data(b"a")
    with pytest.raises(UnknownFrameTypeError, match="0x09"):
        decoder.next_frame()


def test_too_large_rejected_from_header_alone() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    decoder.receive_data(b"\x02\x65")  # declares 101 bytes, sends none
    with pytest.raises(FrameTooLargeError) as info:
        decoder.next_frame()
    assert info.value.code == CloseCode.FRAME_TOO_LARGE == 3
    assert decoder.buffered == 2


def test_default_limit_is_one_mib() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x02" + bytes([0x81, 0x80, 0x40]))  # 1 MiB + 1
    with pytest.raises(FrameTooLargeError, match="1048577 bytes exceeds"):
        decoder.next_frame()


def test_exactly_max_frame_size_is_accepted() -> None:
    assert decode_all(encode(Data(b"x" * 100)), max_frame_size=100) == [
        Data(b"x" * 100)
    ]


@pytest.mark.parametrize("wire", [b"\x02", b"\x02\x05abc", b"\x02\x80", b"\x01\x05{}"])
def test_eof_inside_a_frame(wire: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    assert decoder.next_frame() is None
    decoder.receive_data(b"")
    with pytest.raises(TruncatedFrameError, match="stream ended inside a frame"):
        decoder.next_frame()


def test_decoder_stays_failed() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    decoder.receive_data(b"\x02\x20")
    with pytest.raises(FrameTooLargeError) as first:
        decoder.next_frame()
    assert decoder.failed
    assert decoder.error is first.value
    with pytest.raises(DecoderFailedError) as again:
        decoder.next_frame()
    assert again.value.cause is first.value
    assert again.value.code == CloseCode.FRAME_TOO_LARGE
    with pytest.raises(DecoderFailedError):
        decoder.receive_data(b"\x03\x00")


def test_max_frame_size_is_validated() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(-1)
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(1 << 28)


def test_hello_keeps_unknown_fields() -> None:
    body = b'{"version":1,"future":"yes"}'
    (hello,) = decode_all(b"\x01" + bytes([len(body)]) + body)
    assert isinstance(hello, Hello)
    assert hello.version == 1
    assert hello.fields["future"] == "yes"


def test_byte_at_a_time_is_linear() -> None:
    # One byte at a time through a 64 KiB DATA frame, then 1 MiB chunks: the
    # buffer is appended to, never rescanned; just check it completes correctly
    # and the buffer is empty afterwards (the benchmark measures the rate).
    wire = encode(Data(b"z" * 65536)) * 3
    decoder = FrameDecoder()
    frames = []
    for i in range(len(wire)):
        decoder.receive_data(wire[i : i + 1])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert frames == [Data(b"z" * 65536)] * 3
    assert decoder.buffered == 0


# ------------------------------------------------------------ properties

payloads = st.binary(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
frames_strategy = st.one_of(
    st.builds(Data, payloads),
    st.builds(Ping, payloads),
    st.builds(Pong, payloads),
    st.builds(Close, st.integers(0, 255), st.text(max_size=50)),
    st.builds(
        lambda version, extra: Hello({**extra, "version": version}),
        st.integers(-(2**31), 2**31),
        st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    ),
)


@given(
    frames=st.lists(frames_strategy, max_size=20),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_round_trip_under_any_split(frames: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode(f) for f in frames)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    for start, end in itertools.pairwise(points):
        decoder.receive_data(wire[start:end])
        while (frame := decoder.next_frame()) is not None:
            decoded.append(frame)
    decoder.receive_data(b"")
    assert decoder.next_frame() is None
    assert decoded == frames


@settings(max_examples=300)
@given(
    data=st.binary(max_size=2000),
    chunk=st.integers(min_value=1, max_value=64),
    max_frame_size=st.integers(min_value=0, max_value=512),
)
def test_arbitrary_bytes_only_raise_protocol_errors(
    data: bytes, chunk: int, max_frame_size: int
) -> None:
    decoder = FrameDecoder(max_frame_size)
    try:
        for i in range(0, len(data), chunk):
            decoder.receive_data(data[i : i + chunk])
            while decoder.next_frame() is not None:
                pass
            # Whatever remains is one incomplete frame: header plus payload.
            assert decoder.buffered <= max_frame_size + 5
        decoder.receive_data(b"")
        while decoder.next_frame() is not None:
            pass
    except ProtocolError as exc:
        assert exc.code in set(CloseCode)
        assert decoder.failed or isinstance(exc, LocalProtocolError)


@given(
    st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.integers(-5, 5)
)
def test_hello_json_round_trip(extra: dict[str, object], version: int) -> None:
    fields = {**extra, "version": version}
    (hello,) = decode_all(encode(Hello(fields)))
    assert isinstance(hello, Hello)
    assert dict(hello.fields) == json.loads(json.dumps(fields))


# ------------------------------------------------------------ fuzzing (short runs)
# The million-input runs are in test_slow.py; these keep the harness honest.


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_whole_and_byte_by_byte(data: bytes) -> None:
    check(data)


@settings(max_examples=300)
@given(
    limit=st.integers(0, 255),
    frames=st.lists(frames_strategy, max_size=8),
    cut=st.integers(min_value=0),
    junk=st.binary(max_size=8),
)
def test_fuzz_damaged_frame_sequences(
    limit: int, frames: list[Frame], cut: int, junk: bytes
) -> None:
    wire = b"".join(encode(f) for f in frames)
    cut %= len(wire) + 1
    check(bytes([limit]) + wire[:cut] + junk + wire[cut:])


def test_fuzz_random_engine_short_run() -> None:
    for data in random_inputs(5000, seed=1):
        check(data)
