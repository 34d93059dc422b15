"""Moving bytes: a generic ``trio.abc.Stream``, or the plain-TCP fast path.

A connection picks its transport once (:func:`transport_for`). Both kinds are
stateless strategy objects shared by every connection, so choosing one costs a
connection nothing but a reference; they take the stream as an argument.

* :data:`STREAM` speaks to any ``trio.abc.Stream`` (TLS, in-memory, Unix...)
  through its own async methods.
* :data:`SOCKET` reads and writes a plain ``trio.SocketStream`` by descriptor
  (``os.read``/``os.write`` plus ``wait_readable``/``wait_writable``, with
  Trio's own checkpoint sequence). ``SocketStream.receive_some`` would keep
  three more frames and a context manager alive in every idle connection (~0.7
  KB of it), and its ``receive_some``/``send_all`` cost as much again per
  heartbeat in layers (conflict detection, error translation, the socket
  wrapper) that this path does once, here. It can also write a small frame and
  shut the socket down synchronously, which a kick of a thousand connections at
  once needs.

Every transport error is translated here, once, into :class:`TransportClosed`
(we closed it ourselves) or :class:`TransportBroken` (the peer or the network
ended it), so that no ``OSError`` or ``errno`` reaches the connection logic.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Final

try:
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except ImportError:  # Windows
    _FIONREAD = None

import trio

__all__ = [
    "RECEIVE_SIZE",
    "SOCKET",
    "STREAM",
    "ReadHold",
    "Transport",
    "TransportBroken",
    "TransportClosed",
    "stream_socket",
    "transport_for",
]

# 64 KiB reads: large enough to drain a burst of frames in one wake-up, which is
# what makes answering a batch of PINGs with one write possible.
RECEIVE_SIZE: Final = 65536
#: Linux's "hold partial segments"; None elsewhere.
_TCP_CORK: Final[int | None] = getattr(socket, "TCP_CORK", None)
#: Linux's "more data follows" send flag, a cork for one call; None elsewhere.
_MSG_MORE: Final[int | None] = getattr(socket, "MSG_MORE", None)


class TransportClosed(Exception):
    """The stream was closed on this side (a kick, an abort, aclose)."""


class TransportBroken(Exception):
    """The peer or the network ended the stream (reset, TLS failure...).

    The message says what broke, readably; ``cause`` is the underlying error
    (the OSError, or the SSLError of a failed TLS handshake), if any.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    @property
    def tls(self) -> bool:
        """Whether TLS failed (a certificate refused, a handshake error)."""
        return isinstance(self.cause, ssl.SSLError)


def _broken(exc: BaseException) -> TransportBroken:
    """What broke: trio wraps the OSError or SSLError as the cause."""
    cause = exc.__cause__
    if cause is not None and str(cause):
        return TransportBroken(f"{type(cause).__name__}: {cause}", cause)
    return TransportBroken(str(exc) or type(exc).__name__, cause)


def stream_socket(stream: object) -> socket.socket | trio.socket.SocketType | None:
    """The socket under a stream, through TLS and other wrapping layers."""
    while hasattr(stream, "transport_stream"):  # trio.SSLStream and similar
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    return sock if hasattr(sock, "getsockname") else None


class ReadHold:
    """A turn a blocked reader must wait for once input wakes it, before it
    reads (see ``HeartbeatConnection.hold_answer``): set :attr:`turn`, and the
    reader awaits it once. Transports that wait for input themselves (the
    socket one) await it before the read; for the others the reader awaits it
    after the read, before it handles what it read.
    """

    __slots__ = ("taken", "turn")

    def __init__(self) -> None:
        self.turn: Callable[[], Awaitable[object]] | None = None
        self.taken = False  # whether a turn was awaited

    async def wait(self) -> None:
        """Await the turn that was set, once."""
        turn, self.turn = self.turn, None
        if turn is not None:
            await turn()
            self.taken = True


class Transport:
    """How to move bytes on one kind of stream (the generic kind)."""

    #: Whether :meth:`write_now` and :meth:`shutdown` can do anything.
    synchronous = False

    async def receive(
        self, stream: trio.abc.Stream, hold: ReadHold | None = None
    ) -> bytes | bytearray:
        """The next bytes (``b""`` at the end of the stream).

        ``hold``: where the transport waits for input itself, a turn set there
        while it waited is awaited before the read (else the caller's to await).
        """
        try:
            return await stream.receive_some(RECEIVE_SIZE)
        except trio.ClosedResourceError:
            raise TransportClosed from None
        except trio.BrokenResourceError as exc:
            raise _broken(exc) from None

    async def send_all(self, stream: trio.abc.Stream, data: bytes) -> None:
        try:
            await stream.send_all(data)
        except trio.ClosedResourceError:
            raise TransportClosed from None
        except trio.BrokenResourceError as exc:
            raise _broken(exc) from None

    async def send_eof(self, stream: trio.abc.Stream) -> None:
        """Half-close: the peer sees the end of the stream; we can still read.

        Streams that cannot half-close (TLS) are left as they are.
        """
        if isinstance(stream, trio.abc.HalfCloseableStream):
            with contextlib.suppress(
                trio.ClosedResourceError, trio.BrokenResourceError
            ):
                await stream.send_eof()

    def write_last(self, stream: trio.abc.Stream, data: bytes) -> bool:
        """Write ``data`` without waiting, if the kernel takes all of it at once,
        and end the sending direction after it (FIN): the last frame.

        Only the socket transport can; here it always returns False.
        """
        return False

    def shutdown(self, stream: trio.abc.Stream, *, read: bool) -> bool:
        """Synchronously end the sending direction (``read``: both).

        Tasks blocked reading wake up once the receiving direction ends. Only
        the socket transport can; here it returns False.
        """
        return False

    def unread_input(self, stream: trio.abc.Stream) -> int | None:
        """Bytes that arrived in the kernel but were not read yet (``None``:
        cannot tell, no socket underneath or no FIONREAD)."""
        sock = stream_socket(stream)
        if sock is None or _FIONREAD is None:
            return None
        try:
            fd = sock.fileno()
            if fd < 0:
                return None
            answer = fcntl.ioctl(fd, _FIONREAD, b"\0\0\0\0")
        except OSError:
            return None
        return int.from_bytes(answer, sys.byteorder)

    def close_now(self, stream: trio.abc.Stream) -> bool:
        """Close synchronously, waking every task blocked on the stream; False
        if this stream can only be closed asynchronously (:meth:`aclose`)."""
        if type(stream) is trio.SocketStream:
            stream.socket.close()
            return True
        return False

    async def aclose(self, stream: trio.abc.Stream) -> None:
        if not self.close_now(stream):
            await trio.aclose_forcefully(stream)


class SocketTransport(Transport):
    """A plain ``trio.SocketStream``, read and written by descriptor."""

    synchronous = True

    async def receive(
        self, stream: trio.abc.Stream, hold: ReadHold | None = None
    ) -> bytes | bytearray:
        sock = stream.socket  # type: ignore[attr-defined]
        try:
            # Trio's own sequence: a read that succeeds at once is followed by
            # a schedule point; else wait until readable, then read.
            await trio.lowlevel.checkpoint_if_cancelled()
            data = _read_ready(sock)
            if data is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
            while data is None:  # readable, then maybe not: wait again
                await trio.lowlevel.wait_readable(sock)
                if hold is not None and hold.turn is not None:
                    await hold.wait()  # the read too comes after the turn
                data = _read_ready(sock)
        except trio.ClosedResourceError:
            raise TransportClosed from None
        except OSError as exc:
            if exc.errno == errno.EBADF:  # closed while we waited
                raise TransportClosed from None
            raise TransportBroken(str(exc) or type(exc).__name__, exc) from None
        return data

    async def send_all(self, stream: trio.abc.Stream, data: bytes) -> None:
        sock = stream.socket  # type: ignore[attr-defined]
        try:
            # As receive(): a write that completes at once is followed by a
            # schedule point; else wait until writable and write the rest.
            await trio.lowlevel.checkpoint_if_cancelled()
            sent = _write_ready(sock, data)
            if sent == len(data):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            view = memoryview(data)
            while sent < len(data):
                await trio.lowlevel.wait_writable(sock)
                sent += _write_ready(sock, view[sent:])
        except trio.ClosedResourceError:
            raise TransportClosed from None
        except OSError as exc:
            if exc.errno == errno.EBADF:  # closed while we waited
                raise TransportClosed from None
            raise TransportBroken(str(exc) or type(exc).__name__, exc) from None

    def write_last(self, stream: trio.abc.Stream, data: bytes) -> bool:
        sock = stream.socket  # type: ignore[attr-defined]
        # The frame waits for the FIN and both leave in one segment: a kick
        # costs the kernel one delivery instead of two (11 -> 7 us on
        # loopback). Linux holds it back for one send with MSG_MORE, a syscall
        # less than TCP_CORK (benchmarks/last_frame.py); only TCP has either.
        raw = getattr(sock, "_sock", None)  # the stdlib socket under Trio's
        try:
            if _MSG_MORE is not None and type(raw) is socket.socket:
                written = raw.send(data, _MSG_MORE)
            else:
                if _TCP_CORK is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
                written = os.write(sock.fileno(), data)
        except OSError:
            return False
        # A few bytes fit unless the peer has stopped reading, and then a
        # frame that does not go out whole must not go out at all.
        if written != len(data):
            return False
        with contextlib.suppress(OSError):  # reset meanwhile: the frame is out
            sock.shutdown(socket.SHUT_WR)
        return True

    def shutdown(self, stream: trio.abc.Stream, *, read: bool) -> bool:
        sock = stream.socket  # type: ignore[attr-defined]
        try:
            sock.shutdown(socket.SHUT_RDWR if read else socket.SHUT_WR)
        except OSError:
            return False  # not connected any more (reset), or closed
        return True

    async def send_eof(self, stream: trio.abc.Stream) -> None:
        self.shutdown(stream, read=False)


def _read_ready(sock: trio.socket.SocketType) -> bytes | None:
    """What the socket holds (b"" at its end), or None if nothing yet.

    A plain function: nothing of it stays alive while the reader waits. The
    descriptor is looked up on each call: -1 (EBADF) once the socket is closed.
    """
    try:
        return os.read(sock.fileno(), RECEIVE_SIZE)
    except BlockingIOError:
        return None


def _write_ready(sock: trio.socket.SocketType, data: bytes | memoryview) -> int:
    """Bytes of ``data`` the socket took now (0 if none fit)."""
    try:
        return os.write(sock.fileno(), data)
    except BlockingIOError:
        return 0


STREAM: Final = Transport()
SOCKET: Final = SocketTransport()


def transport_for(stream: trio.abc.Stream) -> Transport:
    """The transport for ``stream``: descriptor I/O for a plain TCP socket
    (not on Windows, where sockets are not file descriptors), else the stream's
    own methods."""
    if type(stream) is trio.SocketStream and sys.platform != "win32":
        return SOCKET
    return STREAM
