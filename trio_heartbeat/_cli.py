"""``python -m trio_heartbeat serve|connect``: demo server and interactive client.

The flag names are a contract that other tests and scripts rely on.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import trio

from ._backoff import Backoff
from ._client import open_connection, reconnecting
from ._config import AUTO, ClientConfig, KeepaliveConfig, ServerConfig
from ._connection import (
    ConnectionClosed,
    DisconnectReason,
    HeartbeatConnection,
    HeartbeatTimeout,
)
from ._legacy import (
    LegacyHeartbeatTimeout,
    open_legacy_connection,
    serve_legacy_listeners,
)
from ._server import per_message, serve_listeners
from ._status import process_status
from ._workers import (
    ReusePortUnavailable,
    check_reuse_port,
    open_reuse_port_listener,
    supervise,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["main"]

logger = logging.getLogger("trio_heartbeat.cli")

EXIT_OK = 0
EXIT_CONNECTION = 1
EXIT_USAGE = 2
EXIT_DEAD = 3


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m trio_heartbeat",
        description="Heartbeat server and client for long-lived TCP connections.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    log_levels = ["DEBUG", "INFO", "WARNING", "ERROR"]

    serve = commands.add_parser(
        "serve",
        help="run the heartbeat server (an upper-casing echo server)",
        description="Run the heartbeat server. Each DATA frame is answered with "
        "the same bytes upper-cased; silent clients are kicked.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default %(default)s)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=5005,
        help="TCP port, 0 for any (default %(default)s)",
    )
    serve.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="kick a client after S seconds without a frame (default %(default)g)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send HELLO (default %(default)g)",
    )
    serve.add_argument(
        "--min-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="smallest heartbeat interval granted (default %(default)g)",
    )
    serve.add_argument(
        "--max-frame-size",
        type=int,
        default=1 << 20,
        metavar="BYTES",
        help="largest frame accepted (default %(default)d)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="refuse clients past N with CLOSE(6) (default: no limit)",
    )
    serve.add_argument(
        "--no-heartbeat",
        action="store_true",
        help="never kick silent clients (debugging); PINGs are still answered",
    )
    serve.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=log_levels
    )

    serve.add_argument(
        "--send-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="drop a client that stalls a send for S seconds (default %(default)g)",
    )
    serve.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=None,
        metavar="N",
        help="refuse the newest connection past N from one IP with CLOSE(6)",
    )
    serve.add_argument(
        "--token-file",
        metavar="F",
        help="require clients to present the token in file F (CLOSE(7) otherwise)",
    )
    serve.add_argument("--certfile", metavar="F", help="TLS: certificate chain (PEM)")
    serve.add_argument("--keyfile", metavar="F", help="TLS: private key (PEM)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N worker processes sharing the port (SO_REUSEPORT), supervised; "
        "limits such as --max-connections apply per worker (default 1)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    _add_common_flags(serve)

    connect = commands.add_parser(
        "connect",
        help="connect, relay stdin lines as DATA, print DATA received",
        description="Interactive client: each stdin line is sent as one DATA frame; "
        "each DATA received is printed on its own line. Exit codes: 0 stdin ended "
        "and closed normally, 1 refused/closed/lost, 2 usage, 3 server declared dead.",
    )
    connect.add_argument(
        "host",
        nargs="?",
        default="127.0.0.1",
        help="server address (default %(default)s)",
    )
    connect.add_argument(
        "--port", type=int, default=5005, help="server port (default %(default)s)"
    )
    connect.add_argument(
        "--interval",
        type=float,
        default=25.0,
        metavar="S",
        help="PING after S idle seconds (default %(default)g)",
    )
    connect.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="unanswered resends before the server is dead (default %(default)d)",
    )
    connect.add_argument(
        "--retry-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between resends (default %(default)g)",
    )
    connect.add_argument(
        "--reconnect",
        action="store_true",
        help="reconnect with backoff instead of exiting, until stdin ends",
    )
    connect.add_argument(
        "--max-backoff",
        type=float,
        default=30.0,
        metavar="S",
        help="--reconnect: the longest wait between attempts; waits start at "
        "up to 0.5 s and double per failure, with full jitter (default %(default)g)",
    )
    connect.add_argument(
        "--log-level", default="WARNING", type=str.upper, choices=log_levels
    )
    connect.add_argument(
        "--token-file", metavar="F", help="present the token in file F in HELLO"
    )
    connect.add_argument("--tls", action="store_true", help="connect over TLS")
    connect.add_argument(
        "--cafile", metavar="F", help="TLS: trust the CA certificates in F (PEM)"
    )
    _add_common_flags(connect)
    return parser


def _server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.certfile is None and args.keyfile is None:
        return None
    if args.certfile is None:
        raise ValueError("--keyfile needs --certfile")
    if args.protocol == "seed":
        raise ValueError("the seed protocol has no TLS")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS certificate: {exc}") from None
    return context


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls:
        if args.cafile is not None:
            raise ValueError("--cafile needs --tls")
        return None
    if args.protocol == "seed":
        raise ValueError("the seed protocol has no TLS")
    try:
        return ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load --cafile {args.cafile!r}: {exc}") from None


def _read_token(path: str | None) -> str | None:
    """The token in ``path`` (one trailing newline stripped); never echoed."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read --token-file {path!r}: {exc.strerror}") from None
    if not token:
        raise ValueError(f"--token-file {path!r} is empty")
    return token


def _user_timeout(value: str) -> float | str:
    if value == AUTO:
        return AUTO
    return float(value)


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        choices=["framed", "seed"],
        default="framed",
        help="framed: this project's protocol; seed: the source documents' raw "
        "text protocol (HeartBeat/OK), to talk to their C programs",
    )
    kernel = parser.add_argument_group(
        "kernel keepalive",
        "TCP keepalive probes an idle connection; TCP_USER_TIMEOUT bounds how long "
        "sent data may stay unacknowledged (keepalive alone does nothing then).",
    )
    kernel.add_argument(
        "--keepalive-idle",
        type=float,
        metavar="S",
        help="idle seconds before the first probe (TCP_KEEPIDLE)",
    )
    kernel.add_argument(
        "--keepalive-interval",
        type=float,
        metavar="S",
        help="seconds between probes (TCP_KEEPINTVL)",
    )
    kernel.add_argument(
        "--keepalive-count",
        type=int,
        metavar="N",
        help="unanswered probes before the kernel drops it (TCP_KEEPCNT)",
    )
    kernel.add_argument("--user-timeout", type=_user_timeout, metavar="S|auto",
                        help="TCP_USER_TIMEOUT in seconds; 'auto' derives it from the "
                        "heartbeat timeout")  # fmt: skip


def _keepalive_from(args: argparse.Namespace) -> KeepaliveConfig | None:
    values = (args.keepalive_idle, args.keepalive_interval, args.keepalive_count,
              args.user_timeout)  # fmt: skip
    if all(v is None for v in values):
        return None
    return KeepaliveConfig(
        idle=args.keepalive_idle,
        interval=args.keepalive_interval,
        count=args.keepalive_count,
        user_timeout=args.user_timeout,
    )


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        force=True,
    )


# ------------------------------------------------------------ serve


@per_message
async def echo_upper(conn: HeartbeatConnection, data: bytes) -> None:
    """The sources' demo application: answer each DATA upper-cased.

    Per message, so the server runs one task per connection.
    """
    await conn.send(data.upper())


def _freeze_startup_objects() -> None:
    """Take what startup made (modules, classes, the Trio runtime: objects that
    live as long as the process) out of the cyclic garbage collector's reach.

    A full collection walks every object it tracks, and meanwhile nothing else
    runs: no kick, no PONG. Frozen, those are skipped, and a full collection
    walks only what connections hold: with 1,000 connections 4-5 ms instead of
    38-46 ms. Collected first, so that nothing frozen is garbage already.
    """
    gc.collect()
    gc.freeze()


async def _serve(
    config: ServerConfig,
    host: str,
    port: int,
    protocol: str,
    reuse_port: bool = False,
    tls: ssl.SSLContext | None = None,
) -> int:
    try:
        if reuse_port:  # a worker of `serve --workers N`
            tcp: list[Any] = [await open_reuse_port_listener(host, port)]
        else:
            tcp = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    if tls is not None:
        tcp = [trio.SSLListener(listener, tls) for listener in tcp]
    if protocol == "seed":
        serve: Any = partial(serve_legacy_listeners, tcp, config=config)
    else:
        serve = partial(serve_listeners, echo_upper, tcp, config=config)
    async with trio.open_nursery() as nursery:
        try:
            listeners: list[Any] = await nursery.start(serve)
        except OSError as exc:
            print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return EXIT_CONNECTION
        _freeze_startup_objects()
        # SIGUSR1 logs a status line (tasks, descriptors, memory) and goes on.
        # The handlers are in place before "listening" is printed, so whoever
        # waits for that line may signal at once.
        status_signals = [signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else []
        with trio.open_signal_receiver(
            signal.SIGINT, signal.SIGTERM, *status_signals
        ) as signals:
            for listener in listeners:
                inner = getattr(listener, "transport_listener", listener)  # TLS
                address = inner.socket.getsockname()
                shown = f"[{address[0]}]" if ":" in address[0] else address[0]
                print(f"listening on {shown}:{address[1]}", flush=True)
            async for signum in signals:
                if signum in status_signals:
                    logger.warning("status: %s", process_status())
                    continue
                logger.info(
                    "%s received: closing every connection", signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break
    return EXIT_OK


# ------------------------------------------------------------ connect


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
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
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
    lines: trio.MemoryReceiveChannel[bytes],
    stdin_ended: trio.Event,
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
        backoff=args.backoff,
        ssl_context=args.tls_context,
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


async def _seed_session(
    args: argparse.Namespace,
    config: ClientConfig,
    lines: trio.MemoryReceiveChannel[bytes],
    unsent: list[bytes],
) -> bool:
    """One seed-protocol connection; True when stdin ended (a normal finish)."""
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


async def _connect_seed(
    args: argparse.Namespace,
    config: ClientConfig,
    lines: trio.MemoryReceiveChannel[bytes],
) -> int:
    unsent: list[bytes] = []
    backoff = args.backoff
    while True:
        try:
            await _seed_session(args, config, lines, unsent)
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


async def _connect(
    args: argparse.Namespace, config: ClientConfig, read_chunk: Callable[[], bytes]
) -> int:
    send_lines, lines = trio.open_memory_channel[bytes](0)
    stdin_ended = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_stdin, read_chunk, send_lines, stdin_ended)
        if args.protocol == "seed":
            code = await _connect_seed(args, config, lines)
        elif args.reconnect:
            code = await _reconnect_loop(args, config, lines, stdin_ended)
        else:
            try:
                async with open_connection(
                    args.host, args.port, config=config, ssl_context=args.tls_context
                ) as conn:
                    await _relay(conn, lines, [])
                code = EXIT_OK
            except Exception as exc:
                code = _report(exc)
        nursery.cancel_scope.cancel()
    return code


def _run_workers(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Re-run this command line as N workers under a supervisor."""
    try:
        check_reuse_port()
    except ReusePortUnavailable as exc:
        print(f"python -m trio_heartbeat serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    forwarded: list[str] = []
    skip = False
    for arg in list(sys.argv[1:] if argv is None else argv)[1:]:  # drop "serve"
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--host", "--port"):
            skip = "=" not in arg
            continue
        forwarded.append(arg)
    return trio.run(supervise, args.workers, args.host, args.port, forwarded)


# ------------------------------------------------------------ entry point


def main(
    argv: Sequence[str] | None = None,
    *,
    read_chunk: Callable[[], bytes] | None = None,
) -> int:
    """Run the command line; returns the exit code.

    ``read_chunk`` replaces reading stdin for ``connect`` (b"" means EOF).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(args.log_level)
    try:
        if args.command == "serve":
            if args.workers < 1:
                raise ValueError(f"workers must be >= 1, not {args.workers!r}")
            tls_context = _server_tls(args)
            server_config = ServerConfig(
                timeout=args.timeout,
                handshake_timeout=args.handshake_timeout,
                min_interval=args.min_interval,
                max_frame_size=args.max_frame_size,
                max_connections=args.max_connections,
                max_connections_per_ip=args.max_connections_per_ip,
                send_timeout=args.send_timeout,
                token=_read_token(args.token_file),
                enabled=not args.no_heartbeat,
                keepalive=_keepalive_from(args),
            )
        else:
            args.tls_context = _client_tls(args)
            client_config = ClientConfig(
                interval=args.interval,
                retries=args.retries,
                retry_interval=args.retry_interval,
                token=_read_token(args.token_file),
                keepalive=_keepalive_from(args),
            )
            if not args.max_backoff > 0:
                raise ValueError(
                    f"--max-backoff must be a positive number, not {args.max_backoff!r}"
                )
            args.backoff = Backoff(cap=args.max_backoff)
    except (ValueError, TypeError) as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            if args.workers > 1:
                return _run_workers(args, argv)
            return trio.run(
                _serve,
                server_config,
                args.host,
                args.port,
                args.protocol,
                args.reuse_port,
                tls_context,
            )
        return trio.run(_connect, args, client_config, read_chunk or _read_stdin_chunk)
    except KeyboardInterrupt:
        return 130
