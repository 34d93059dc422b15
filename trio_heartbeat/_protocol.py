"""Wire protocol v1: frame types, encoder and incremental decoder.

Sans-IO in the manner of h11 and wsproto: this module never touches a socket, a
clock or trio. Bytes go in through :meth:`FrameDecoder.receive_data`, frames come
out of :meth:`FrameDecoder.next_frame`; :func:`encode` turns a frame into bytes.

Every frame is ``type`` (1 byte) · ``length`` (unsigned LEB128, at most 4 bytes) ·
``payload`` (``length`` bytes). An empty PING is therefore the two bytes
``03 00``, as small as MQTT's PINGREQ.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_VARINT_BYTES",
    "PROTOCOL_VERSION",
    "Close",
    "CloseCode",
    "Data",
    "DecoderFailedError",
    "FrameDecoder",
    "FrameTooLargeError",
    "FrameType",
    "Hello",
    "InvalidCloseError",
    "InvalidHelloError",
    "LocalProtocolError",
    "Ping",
    "Pong",
    "ProtocolError",
    "RemoteProtocolError",
    "TruncatedFrameError",
    "UnknownFrameTypeError",
    "VarintTooLongError",
    "encode",
]

PROTOCOL_VERSION: Final = 1

# 1 MiB: large enough for any heartbeat-borne payload and ordinary RPC messages,
# small enough that one peer cannot make us buffer much. websockets uses the same
# default (max_size=2**20).
DEFAULT_MAX_FRAME_SIZE: Final = 1 << 20

# Four LEB128 bytes carry 28 bits: lengths up to 256 MiB - 1. Capping the varint
# bounds the header at 5 bytes and makes "length too long" detectable early.
MAX_VARINT_BYTES: Final = 4
MAX_ENCODABLE_LENGTH: Final = (1 << (7 * MAX_VARINT_BYTES)) - 1
MAX_HEADER_SIZE: Final = 1 + MAX_VARINT_BYTES


class FrameType(enum.IntEnum):
    """The first byte of every frame."""

    HELLO = 0x01
    DATA = 0x02
    PING = 0x03
    PONG = 0x04
    CLOSE = 0x05


class CloseCode(enum.IntEnum):
    """Reason codes carried in the first payload byte of a CLOSE frame."""

    NORMAL = 0
    HEARTBEAT_TIMEOUT = 1
    PROTOCOL_ERROR = 2
    FRAME_TOO_LARGE = 3
    TOO_MANY_PINGS = 4
    SHUTTING_DOWN = 5
    SERVER_FULL = 6
    HANDSHAKE_FAILED = 7
    #: The same ``client_id`` connected again and replaced this session.
    REPLACED = 8


# ---------------------------------------------------------------- errors


class ProtocolError(Exception):
    """Base class of every wire-protocol error.

    ``code`` is the CLOSE reason code the error implies: the connection layer
    sends CLOSE with it before closing the stream.
    """

    code: CloseCode = CloseCode.PROTOCOL_ERROR

    def __init__(self, message: str, code: CloseCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """This side misused the API (for example, encoding an out-of-range value)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol."""


class UnknownFrameTypeError(RemoteProtocolError):
    """The type byte is not one of :class:`FrameType`."""


class VarintTooLongError(RemoteProtocolError):
    """The length varint runs past :data:`MAX_VARINT_BYTES` bytes."""


class FrameTooLargeError(RemoteProtocolError):
    """A frame header declares a payload longer than ``max_frame_size``."""

    code = CloseCode.FRAME_TOO_LARGE


class InvalidCloseError(RemoteProtocolError):
    """A CLOSE frame without its one-byte reason code."""


class InvalidHelloError(RemoteProtocolError):
    """A HELLO payload that is not a JSON object with an integer ``version``."""


class TruncatedFrameError(RemoteProtocolError):
    """The stream ended in the middle of a frame."""


class DecoderFailedError(LocalProtocolError):
    """The decoder was used again after it had already failed.

    ``cause`` is the original error; ``code`` is the same as the cause's.
    """

    def __init__(self, cause: ProtocolError) -> None:
        super().__init__(f"decoder failed earlier: {cause}", cause.code)
        self.cause = cause


# ---------------------------------------------------------------- frames


def _payload_bytes(value: bytes | bytearray | memoryview) -> bytes:
    return bytes(value)


@attrs.frozen(slots=True)
class Hello:
    """Handshake frame; ``fields`` is the decoded JSON object.

    The client sends ``{"version": 1, "interval": <seconds>, ...}``; the server
    answers with the values that apply. Unknown fields are kept, so that both
    sides can ignore what they do not understand.
    """

    frame_type: ClassVar[FrameType] = FrameType.HELLO
    fields: Mapping[str, Any] = attrs.field(eq=True, hash=False)

    @property
    def version(self) -> int:
        version: int = self.fields["version"]
        return version


@attrs.frozen(slots=True)
class Data:
    """Application bytes."""

    frame_type: ClassVar[FrameType] = FrameType.DATA
    payload: bytes = attrs.field(default=b"", converter=_payload_bytes)


@attrs.frozen(slots=True)
class Ping:
    """Heartbeat request; the payload is optional application data."""

    frame_type: ClassVar[FrameType] = FrameType.PING
    payload: bytes = attrs.field(default=b"", converter=_payload_bytes)


@attrs.frozen(slots=True)
class Pong:
    """Heartbeat answer; the payload is optional application data."""

    frame_type: ClassVar[FrameType] = FrameType.PONG
    payload: bytes = attrs.field(default=b"", converter=_payload_bytes)


@attrs.frozen(slots=True)
class Close:
    """Last frame before closing: a reason code and an optional text."""

    frame_type: ClassVar[FrameType] = FrameType.CLOSE
    code: int = CloseCode.NORMAL
    reason: str = ""


Frame = Hello | Data | Ping | Pong | Close


# ---------------------------------------------------------------- encoder


def _encode_varint(value: int) -> bytes:
    if value < 0x80:  # the common case: every heartbeat frame
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_payload(frame: Frame) -> bytes:
    if isinstance(frame, Hello):
        try:
            text = json.dumps(
                dict(frame.fields), separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"HELLO fields are not JSON: {exc}") from None
        return text.encode()
    if isinstance(frame, Close):
        if not 0 <= frame.code <= 0xFF:
            raise LocalProtocolError(f"close code must be 0..255, not {frame.code!r}")
        return bytes((frame.code,)) + frame.reason.encode()
    return frame.payload


def encode(frame: Frame) -> bytes:
    """Return the wire bytes of ``frame``.

    >>> encode(Ping())
    b'\\x03\\x00'
    >>> encode(Data(b"hi"))
    b'\\x02\\x02hi'
    """
    payload = _encode_payload(frame)
    length = len(payload)
    if length > MAX_ENCODABLE_LENGTH:
        raise LocalProtocolError(
            f"payload of {length} bytes exceeds the protocol maximum "
            f"{MAX_ENCODABLE_LENGTH}"
        )
    return bytes((frame.frame_type,)) + _encode_varint(length) + payload


# ---------------------------------------------------------------- decoder


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _decode_hello(payload: bytes) -> Hello:
    try:
        # Strict JSON: Python's json accepts NaN and Infinity, which are not.
        fields = json.loads(payload.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidHelloError(f"HELLO payload is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        # json's C parser recurses per nesting level: [[[[... from the peer
        # must not escape as anything but a protocol error.
        raise InvalidHelloError("HELLO payload nests too deeply") from None
    if not isinstance(fields, dict):
        raise InvalidHelloError("HELLO payload is not a JSON object")
    version = fields.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidHelloError(f"HELLO has no integer 'version': {version!r}")
    return Hello(fields)


def _decode_close(payload: bytes) -> Close:
    if not payload:
        raise InvalidCloseError("CLOSE frame without a reason code")
    # The text is diagnostic only: undecodable bytes are replaced, not fatal.
    return Close(payload[0], payload[1:].decode("utf-8", errors="replace"))


_VALID_TYPES: Final = frozenset(int(t) for t in FrameType)
_EMPTY_PING: Final = Ping()
_EMPTY_PONG: Final = Pong()

# Compact the buffer once the consumed prefix is at least this large and at least
# half of the buffer, so each byte is moved O(1) times on average.
_COMPACT_THRESHOLD: Final = 1 << 16


class FrameDecoder:
    """Incremental frame decoder.

    Feed bytes with :meth:`receive_data` (``b""`` marks the end of the stream),
    then call :meth:`next_frame` until it returns ``None``. Work is linear in the
    bytes received however they are split: the buffer is consumed through an
    offset and compacted only when the consumed prefix dominates it.

    A frame whose header declares more than ``max_frame_size`` bytes is rejected
    as soon as its header is complete, before any payload is buffered. After any
    error the decoder stays failed: :attr:`error` holds the error, and further
    calls raise :class:`DecoderFailedError`.
    """

    __slots__ = ("_buffer", "_eof", "_error", "_offset", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 <= max_frame_size <= MAX_ENCODABLE_LENGTH:
            raise ValueError(
                f"max_frame_size must be in 0..{MAX_ENCODABLE_LENGTH}, "
                f"not {max_frame_size!r}"
            )
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._offset = 0
        self._eof = False
        self._error: ProtocolError | None = None

    @property
    def error(self) -> ProtocolError | None:
        """The error that failed the decoder, or ``None`` while it is healthy."""
        return self._error

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def eof(self) -> bool:
        """Whether the end of the stream has been fed."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) - self._offset

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes; ``b""`` means the peer closed its side."""
        if self._error is not None:
            raise DecoderFailedError(self._error)
        if self._eof:
            raise LocalProtocolError("data received after end of stream")
        if not data:
            self._eof = True
            return
        buffer = self._buffer
        offset = self._offset
        if offset:
            if offset == len(buffer):
                buffer.clear()
                self._offset = 0
            elif offset >= _COMPACT_THRESHOLD and offset * 2 >= len(buffer):
                del buffer[:offset]
                self._offset = 0
        buffer += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` if more bytes are needed.

        After the end of the stream has been fed and every frame returned, it
        keeps returning ``None``; check :attr:`eof`.
        """
        if self._error is not None:
            raise DecoderFailedError(self._error)
        try:
            return self._next_frame()
        except ProtocolError as exc:
            self._error = exc
            raise

    def _next_frame(self) -> Frame | None:
        buffer = self._buffer
        start = self._offset
        available = len(buffer) - start
        if available == 0:
            return None
        frame_type = buffer[start]
        if frame_type not in _VALID_TYPES:
            raise UnknownFrameTypeError(f"unknown frame type 0x{frame_type:02x}")
        # Length varint: at most MAX_VARINT_BYTES bytes, little-endian groups of 7.
        length = 0
        shift = 0
        pos = start + 1
        end = len(buffer)
        while True:
            if pos == end:
                self._check_truncated()
                return None
            byte = buffer[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                break
            if pos - start - 1 == MAX_VARINT_BYTES:
                raise VarintTooLongError(
                    f"frame length varint longer than {MAX_VARINT_BYTES} bytes"
                )
            shift += 7
        if length > self.max_frame_size:
            raise FrameTooLargeError(
                f"frame of {length} bytes exceeds max_frame_size {self.max_frame_size}"
            )
        if end - pos < length:
            self._check_truncated()
            return None
        self._offset = pos + length
        if not length:  # heartbeats: immutable, so shared
            if frame_type == FrameType.PING:
                return _EMPTY_PING
            if frame_type == FrameType.PONG:
                return _EMPTY_PONG
        payload = bytes(buffer[pos : pos + length])
        if frame_type == FrameType.DATA:
            return Data(payload)
        if frame_type == FrameType.PING:
            return Ping(payload)
        if frame_type == FrameType.PONG:
            return Pong(payload)
        if frame_type == FrameType.CLOSE:
            return _decode_close(payload)
        return _decode_hello(payload)

    def _check_truncated(self) -> None:
        if self._eof:
            raise TruncatedFrameError(
                f"stream ended inside a frame ({self.buffered} bytes buffered)"
            )
