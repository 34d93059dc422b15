"""``connect``: the interactive client, a stdin relay beside the heartbeat."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Callable

import trio

from trio_heartbeat import (
    Backoff,
    ClientConfig,
    ConnectionClosed,
    DisconnectReason,
    HeartbeatConnection,
    HeartbeatTimeout,
    IntervalLearner,
    LegacyHeartbeatTimeout,
    open_connection,
    open_legacy_connection,
    reconnecting,
)

from ._options import EXIT_CONNECTION, EXIT_DEAD, EXIT_OK, LEGACY_PROTOCOLS

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["connect_main", "run_connect"]

logger = logging.getLogger("trio_heartbeat.cli")


def _read_stdin_chunk() -> bytes:
    # os.read on the raw descriptor, not sys.stdin.buffer: a thread abandoned in
    # a BufferedReader holds its lock, and CPython aborts at exit if it is held.
    return os.read(0, 65536)


async def _read_stdin(
    read_chunk: Callable[[], bytes],
    lines: trio.MemorySendChannel[bytes],
    ended: trio.Event,
) -> None:
    """Feed stdin lines (newline stripped) into ``lines``; set ``ended`` at EOF."""
    pending = b""
    async with lines:
        while True:
            chunk = await trio.to_thread.run_sync(read_chunk, abandon_on_cancel=True)
            if not chunk:
                if pending:
                    await lines.send(pending.rstrip(b"\r"))
                ended.set()
                return
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                await lines.send(line.rstrip(b"\r"))


def _write_line(data: bytes) -> None:
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _connection_error(exc: BaseException) -> BaseException:
    """The exception that says what happened to the connection, out of a group."""
    leaves = _leaves(exc)
    for kind in (HeartbeatTimeout, ConnectionClosed, OSError, trio.BrokenResourceError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return exc


async def _relay(
    conn: HeartbeatConnection,
    lines: trio.MemoryReceiveChannel[bytes],
    unsent: list[bytes],
) -> None:
    """Stdin lines out, DATA in, until stdin ends (then close gracefully).

    A line taken from stdin but not sent because the connection died stays in
    ``unsent`` for the next connection.
    """

    async def print_incoming() -> None:
        try:
            while True:
                _write_line(await conn.receive())
        except ConnectionClosed as exc:
            if exc.disconnect_reason is not DisconnectReason.CLOSED_LOCALLY:
                raise

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(print_incoming)
            while unsent:
                await conn.send(unsent[0])
                unsent.pop(0)
            async for line in lines:
                unsent.append(line)
                await conn.send(line)
                unsent.pop()
            await conn.aclose()  # waits for replies in flight, then the server's CLOSE
    except BaseExceptionGroup as group:
        raise _connection_error(group) from None


def _report(exc: BaseException) -> int:
    error = _connection_error(exc)
    if isinstance(error, HeartbeatTimeout):
        print(f"server declared dead: {error.reason}", file=sys.stderr)
        return EXIT_DEAD
    if isinstance(error, ConnectionClosed):
        print(f"connection closed: {error}", file=sys.stderr)
        return EXIT_CONNECTION
    if isinstance(error, (OSError, trio.BrokenResourceError)):
        print(f"connection failed: {error}", file=sys.stderr)
        return EXIT_CONNECTION
    raise exc


async def _reconnect_loop(
    args: argparse.Namespace,
    config: ClientConfig,
    tls: ssl.SSLContext | None,
    lines: trio.MemoryReceiveChannel[bytes],
    stdin_ended: trio.Event,
    learner: IntervalLearner | None,
) -> int:
    """Reconnect after every failure until stdin ends with nothing left unsent.

    Exit code 0 when the last connection closed normally after stdin ended;
    otherwise the code of the last failure (stdin ended while disconnected).
    """
    unsent: list[bytes] = []
    connected = False
    reconnector = reconnecting(
        args.host,
        args.port,
        config=config,
        backoff=Backoff(cap=args.max_backoff),
        ssl_context=tls,
        adaptive=learner or False,
    )
    async with trio.open_nursery() as nursery:

        async def stop_if_idle_at_eof() -> None:
            await stdin_ended.wait()
            if not connected and not unsent:
                nursery.cancel_scope.cancel()  # nothing left to deliver

        nursery.start_soon(stop_if_idle_at_eof)
        async for attempt in reconnector:
            connected = True
            async with attempt as conn:
                logger.info("connected to %s:%s", args.host, args.port)
                await _relay(conn, lines, unsent)
            connected = False
            if attempt.failure is None:
                nursery.cancel_scope.cancel()
                return EXIT_OK  # stdin ended and the connection closed normally
            if stdin_ended.is_set() and not unsent:
                break
        nursery.cancel_scope.cancel()
    if reconnector.last_failure is None:
        return EXIT_OK
    return _report(reconnector.last_failure)


async def _legacy_session(
    args: argparse.Namespace,
    config: ClientConfig,
    lines: trio.MemoryReceiveChannel[bytes],
    unsent: list[bytes],
) -> bool:
    """One legacy-protocol connection; True when stdin ended (a normal finish)."""
    async with open_legacy_connection(args.host, args.port, config=config) as conn:
        stdin_done = False
        async with trio.open_nursery() as nursery:
            server_closed = trio.Event()

            async def print_incoming() -> None:
                while data := await conn.receive():
                    for line in data.rstrip(b"\n").split(b"\n"):
                        _write_line(line.rstrip(b"\r\0"))
                server_closed.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(print_incoming)
            while unsent:
                await conn.send(unsent[0] + b"\n")
                unsent.pop(0)
            async for line in lines:
                unsent.append(line)
                await conn.send(line + b"\n")  # the C client keeps the newline
                unsent.pop()
            stdin_done = True
            with trio.move_on_after(config.close_timeout):
                await conn.finish()  # replies in flight still print
            nursery.cancel_scope.cancel()
        if server_closed.is_set() and not stdin_done:
            raise ConnectionClosed(
                None,
                "the server closed the connection",
                by_peer=True,
                disconnect_reason=DisconnectReason.CLOSED_BY_PEER,
            )
    return True


async def _connect_legacy(
    args: argparse.Namespace,
    config: ClientConfig,
    lines: trio.MemoryReceiveChannel[bytes],
) -> int:
    unsent: list[bytes] = []
    backoff = Backoff(cap=args.max_backoff)
    while True:
        try:
            await _legacy_session(args, config, lines, unsent)
            return EXIT_OK
        except (LegacyHeartbeatTimeout, ConnectionClosed, OSError) as exc:
            if not args.reconnect:
                if isinstance(exc, LegacyHeartbeatTimeout):
                    print(f"server declared dead: {exc}", file=sys.stderr)
                    return EXIT_DEAD
                return _report(exc)
            delay = backoff.next_delay()
            logger.warning("connection ended: %s; reconnecting in %.2f s", exc, delay)
            await trio.sleep(delay)


async def _network_key(host: str, port: int) -> str:
    """Which network this is, as far as a command line can tell: the local
    address the system routes towards the server (no packet is sent)."""
    try:
        (family, type_, proto, _, address), *_ = await trio.socket.getaddrinfo(
            host, port, type=trio.socket.SOCK_DGRAM
        )
        with trio.socket.socket(family, type_, proto) as probe:
            await probe.connect(address)
            local = probe.getsockname()[0]
    except OSError:
        local = "unknown"
    return f"{local} -> {host}:{port}"


async def connect_main(
    args: argparse.Namespace,
    config: ClientConfig,
    tls: ssl.SSLContext | None,
    read_chunk: Callable[[], bytes],
    learner: IntervalLearner | None = None,
) -> int:
    """``connect`` inside a Trio run; the exit code. ``read_chunk`` is called in
    a worker thread for each chunk of stdin (``b""``: stdin ended)."""
    if learner is not None and args.network is None:
        learner.key = await _network_key(args.host, args.port)
    send_lines, lines = trio.open_memory_channel[bytes](0)
    stdin_ended = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_stdin, read_chunk, send_lines, stdin_ended)
        if args.protocol in LEGACY_PROTOCOLS:
            code = await _connect_legacy(args, config, lines)
        elif args.reconnect:
            code = await _reconnect_loop(args, config, tls, lines, stdin_ended, learner)
        else:
            try:
                async with open_connection(
                    args.host,
                    args.port,
                    config=config,
                    ssl_context=tls,
                    adaptive=learner or False,
                ) as conn:
                    await _relay(conn, lines, [])
                code = EXIT_OK
            except Exception as exc:
                code = _report(exc)
        nursery.cancel_scope.cancel()
    return code


def run_connect(
    args: argparse.Namespace,
    config: ClientConfig,
    tls: ssl.SSLContext | None,
    read_chunk: Callable[[], bytes] | None = None,
    learner: IntervalLearner | None = None,
) -> int:
    """Run ``connect`` as parsed; ``read_chunk`` replaces reading stdin."""
    return trio.run(
        connect_main, args, config, tls, read_chunk or _read_stdin_chunk, learner
    )
