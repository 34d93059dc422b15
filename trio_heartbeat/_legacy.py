"""The legacy raw text protocol, to interoperate with the classic C heartbeat programs.

There is no framing: the client's heartbeat is the 9 bytes ``HeartBeat``; the C
server answers with 9 bytes, ``OK``, a NUL and whatever its buffer held before
(its ``strcpy`` leaves leftovers); any other data is echoed upper-cased. The C
client sends each stdin line with its newline and recognises an answer by
``strcmp(buf, "OK") == 0``, so an answer must start with ``OK`` followed by a
NUL (or end there).

Our side follows the same liveness rules as the framed protocol: the server
kicks a client after ``timeout`` seconds without any bytes and closes its
socket (there is no CLOSE frame to send); the client sends ``HeartBeat`` after
``interval`` seconds without sending and applies the same retry rule.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn

import trio

from ._accept import serve_accept_loop
from ._config import ClientConfig, ServerConfig
from ._connection import describe_peer
from ._groups import unwrap
from ._idle import IdleWatchdog
from ._keepalive import apply_keepalive
from ._lag import STALL_TOLERANCE
from ._schedule import Action, RetrySchedule
from ._server import enforcement_enabled
from ._session import DisconnectReason

__all__ = [
    "HEARTBEAT",
    "LegacyConnection",
    "LegacyHeartbeatTimeout",
    "open_legacy_connection",
    "serve_legacy_listeners",
    "serve_legacy_tcp",
]

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger("trio_heartbeat.legacy")

HEARTBEAT: Final = b"HeartBeat"
#: Our answer: ``OK`` padded to the 9 bytes the C server writes, with NULs
#: instead of its buffer leftovers.
OK_ANSWER: Final = b"OK" + b"\0" * 7

LegacyDisconnectHook = Callable[[str, DisconnectReason], object]


def is_heartbeat_answer(data: bytes) -> bool:
    """What the C client accepts: ``OK`` then a NUL, or ``OK`` alone."""
    return data == b"OK" or data.startswith(b"OK\0")


def _legacy_reply(data: bytes) -> bytes:
    """The server's answer to one read: OK for a heartbeat, else upper-cased echo.

    A heartbeat coalesced with data in one read (TCP may merge writes) is
    answered with OK and the rest echoed; the C server would echo it all.
    """
    if data == HEARTBEAT:
        return OK_ANSWER
    if data.startswith(HEARTBEAT):
        return OK_ANSWER + data[len(HEARTBEAT) :].upper()
    return data.upper()


async def _serve_one(
    stream: trio.abc.Stream,
    config: ServerConfig,
    enforce: bool,
    on_disconnect: LegacyDisconnectHook | None,
) -> None:
    apply_keepalive(stream, config.keepalive, config.timeout)
    peer = describe_peer(stream)
    logger.info("connect %s (legacy protocol)", peer)
    reason = DisconnectReason.CLOSED_BY_PEER
    watchdog = IdleWatchdog(config.timeout, enabled=enforce)
    try:
        with watchdog:
            while True:
                try:
                    data = bytes(await stream.receive_some(65536))
                except trio.BrokenResourceError:
                    reason = DisconnectReason.CONNECTION_LOST
                    break
                if not data:
                    break
                watchdog.touch()
                try:
                    await stream.send_all(_legacy_reply(data))
                except trio.BrokenResourceError:
                    reason = DisconnectReason.CONNECTION_LOST
                    break
        if watchdog.fired:
            reason = DisconnectReason.HEARTBEAT_TIMEOUT
    except trio.Cancelled:
        reason = DisconnectReason.SHUTDOWN
        raise
    finally:
        await trio.aclose_forcefully(stream)
        if reason is DisconnectReason.HEARTBEAT_TIMEOUT:
            logger.warning(
                "kick %s: heartbeat timeout: no data for %g s", peer, config.timeout
            )
        else:
            logger.info("disconnect %s: %s", peer, reason.value)
        if on_disconnect is not None:
            on_disconnect(peer, reason)


async def serve_legacy_listeners(
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    config: ServerConfig | None = None,
    on_disconnect: LegacyDisconnectHook | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> NoReturn:
    """Serve the legacy protocol: upper-casing echo, ``HeartBeat`` answered ``OK``.

    A client without traffic for ``config.timeout`` seconds is kicked: its
    socket is closed. ``on_disconnect(peer, reason)`` reports every ending.
    """
    config = config or ServerConfig()
    enforce = enforcement_enabled(config)

    async def handler(stream: trio.abc.Stream) -> None:
        await _serve_one(stream, config, enforce, on_disconnect)

    await serve_accept_loop(
        handler,
        list(listeners),
        handler_nursery=handler_nursery,
        task_status=task_status,
    )


async def serve_legacy_tcp(
    port: int,
    *,
    host: str | bytes | None = None,
    config: ServerConfig | None = None,
    on_disconnect: LegacyDisconnectHook | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> NoReturn:
    """:func:`serve_legacy_listeners` on a TCP port (0 picks a free one)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    await serve_legacy_listeners(
        listeners,
        config=config,
        on_disconnect=on_disconnect,
        handler_nursery=handler_nursery,
        task_status=task_status,
    )


class LegacyHeartbeatTimeout(Exception):
    """The legacy server did not answer ``retries + 1`` heartbeats."""


class LegacyConnection:
    """A client connection speaking the legacy protocol.

    :meth:`send` writes raw bytes (a line, newline included, as the C client
    does); :meth:`receive` returns raw reads that are not heartbeat answers.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._lock = trio.StrictFIFOLock()
        self._data_send, self._data_receive = trio.open_memory_channel[bytes](64)
        self.last_sent = trio.current_time()
        #: When the server last sent anything (any bytes are a sign of life).
        self.last_received = self.last_sent
        self.heartbeats_sent = 0
        self.answers_received = 0
        self._error: BaseException | None = None
        self._closed = trio.Event()

    async def send(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        async with self._lock:
            await self.stream.send_all(data)
            self.last_sent = trio.current_time()

    async def finish(self) -> None:
        """Half-close (no more sends) and wait for the server to close.

        The server's remaining replies still come out of :meth:`receive`.
        Bound the wait with your own cancel scope (``trio.move_on_after``).
        """
        async with self._lock:
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
        await self._closed.wait()

    async def receive(self) -> bytes:
        """The next chunk of data from the server; ``b""`` when it closed."""
        try:
            return await self._data_receive.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            return b""

    async def _reader(self) -> None:
        async with self._data_send:
            while True:
                try:
                    data = bytes(await self.stream.receive_some(65536))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                self.last_received = trio.current_time()
                if not data:
                    self._closed.set()
                    return
                if is_heartbeat_answer(data):
                    self.answers_received += 1
                    logger.debug("heartbeat answered: %r", data)
                    rest = data[9:] if data.startswith(b"OK\0") else b""
                    if rest.strip(b"\0"):
                        await self._data_send.send(rest.lstrip(b"\0"))
                    continue
                await self._data_send.send(data)

    async def _heartbeat(self, config: ClientConfig, body: trio.CancelScope) -> None:
        """The same retry rule as the framed client (``_schedule.py``)."""
        schedule = RetrySchedule(config.interval, config.retry_interval, config.retries)
        wake = math.inf
        while True:
            now = trio.current_time()
            if now - wake > STALL_TOLERANCE:  # this side was stalled
                await trio.lowlevel.checkpoint()  # let the reader catch up
                now = trio.current_time()
                schedule.stalled(now)
            action = schedule.poll(now, self.last_sent, self.last_received)
            if action is Action.DEAD:
                self._error = LegacyHeartbeatTimeout(
                    f"{config.retries + 1} heartbeats unanswered over "
                    f"{schedule.verdict_after:g} s"
                )
                logger.warning("server declared dead: %s", self._error)
                await trio.aclose_forcefully(self.stream)
                body.cancel()
                return
            if action is not Action.NOTHING:
                with trio.move_on_at(schedule.attempt_deadline()):
                    await self.send(HEARTBEAT)
                    self.heartbeats_sent += 1
            wake = schedule.next_wakeup(self.last_sent, self.last_received)
            await trio.sleep_until(wake)
            wake = max(wake, now)


@asynccontextmanager
async def open_legacy_connection(
    host: str, port: int, *, config: ClientConfig | None = None
) -> AsyncIterator[LegacyConnection]:
    """Connect with the legacy protocol; heartbeat beside the body.

    Raises :class:`LegacyHeartbeatTimeout` from the ``async with`` when the
    server is declared dead (the body is cancelled).
    """
    config = config or ClientConfig()
    stream = await trio.open_tcp_stream(host, port)
    apply_keepalive(stream, config.keepalive, config.detection_bound)
    conn = LegacyConnection(stream)
    body = trio.CancelScope()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn._reader)
            if config.enabled and math.isfinite(config.interval):
                nursery.start_soon(conn._heartbeat, config, body)
            try:
                with body:
                    yield conn
            finally:
                nursery.cancel_scope.cancel()
                await trio.aclose_forcefully(stream)
    except BaseExceptionGroup as group:
        raise unwrap(group) from None
    if conn._error is not None:
        raise conn._error
