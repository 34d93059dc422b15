"""serve_tcp / serve_listeners: one nursery per connection, one kicker per server.

Each accepted stream goes through: the server-full check, the HELLO handshake
under an absolute deadline, then a nursery holding the reader task and the
application's handler (or the reader alone, calling a per-message handler), which
the server's :class:`Kicker` cancels when the client has been silent for
``timeout``. However the connection ends, it ends with one CLOSE frame (when the
stream can still carry one), a closed stream, one log line and one
``on_disconnect`` call.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import attrs
import trio

from ._accept import serve_accept_loop
from ._config import HandshakeError, Negotiated, ServerConfig, negotiate
from ._connection import (
    ConnectionClosed,
    DisconnectReason,
    HeartbeatConnection,
    _CloseInfo,
    peer_host,
)
from ._keepalive import apply_keepalive
from ._kicker import Kicker
from ._protocol import Close, CloseCode, RemoteProtocolError, encode

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "DISABLE_ENV_VAR",
    "PerMessage",
    "per_message",
    "serve_listeners",
    "serve_tcp",
]

logger = logging.getLogger("trio_heartbeat.server")

#: Set to ``1`` to switch heartbeat enforcement off (PINGs are still answered).
DISABLE_ENV_VAR = "TRIO_HEARTBEAT_DISABLE"

MessageHandler = Callable[[HeartbeatConnection, bytes], Awaitable[object]]


@attrs.frozen
class PerMessage:
    """A handler called once per DATA payload, from the connection's reader task.

    Made by :func:`per_message`. The server then runs one task per connection
    instead of two (the reader and a long-lived handler), which is the smaller
    and faster server when the application reacts to each message on its own:
    echo, request/reply, pub/sub fan-in. While the handler awaits, that
    connection reads nothing more (so its PINGs wait too): keep it short, or
    hand long work to a task of your own.
    """

    on_data: MessageHandler


def per_message(on_data: MessageHandler) -> PerMessage:
    """Mark ``on_data(conn, payload)`` as a per-message handler for the server.

    ::

        @trio_heartbeat.per_message
        async def echo(conn, data):
            await conn.send(data.upper())

        await trio_heartbeat.serve_tcp(echo, 5005)

    DATA is delivered in order; a handler that raises ends its connection
    (logged, CLOSE 0 "server error") as a connection handler would.
    """
    return PerMessage(on_data)


Handler = Callable[[HeartbeatConnection], Awaitable[object]] | PerMessage
ConnectHook = Callable[[HeartbeatConnection], object]
DisconnectHook = Callable[[HeartbeatConnection, DisconnectReason], object]
PongPayload = Callable[[HeartbeatConnection, bytes], bytes]


def enforcement_enabled(config: ServerConfig) -> bool:
    """Whether kicks apply: the config says so and the environment does not veto."""
    return config.enabled and os.environ.get(DISABLE_ENV_VAR, "") not in ("1", "true")


def _token_matches(offered: object, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), whatever was offered."""
    if not isinstance(offered, str):
        offered = ""
    return hmac.compare_digest(offered.encode(), expected.encode())


def _split_cancelled(
    exc: BaseException,
) -> tuple[bool, BaseException | None]:
    """Return (contained Cancelled, the rest) of a possibly grouped exception."""
    if isinstance(exc, trio.Cancelled):
        return True, None
    if isinstance(exc, BaseExceptionGroup):
        cancelled, rest = exc.split(trio.Cancelled)
        return cancelled is not None, rest
    return False, exc


def _only_connection_closed(exc: BaseException | None) -> bool:
    if exc is None or isinstance(exc, ConnectionClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_connection_closed(e) for e in exc.exceptions)
    return False


class _Server:
    def __init__(
        self,
        handler: Handler,
        config: ServerConfig,
        on_connect: ConnectHook | None,
        on_disconnect: DisconnectHook | None,
        pong_payload: PongPayload | None,
    ) -> None:
        self.handler = handler
        self.config = config
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.pong_payload = pong_payload
        self.enforce = enforcement_enabled(config)
        self.connections: set[HeartbeatConnection] = set()
        self.kicker = Kicker(config.timeout, self._kick, self.connections)
        # Every kick says the same: made once, not per kick.
        self._timeout_info = _CloseInfo(
            CloseCode.HEARTBEAT_TIMEOUT,
            f"no frame for {config.timeout:g} s",
            False,
            DisconnectReason.HEARTBEAT_TIMEOUT,
        )
        self._timeout_wire = encode(
            Close(CloseCode.HEARTBEAT_TIMEOUT, self._timeout_info.reason)
        )
        self.per_ip: collections.Counter[str] = collections.Counter()

    async def handle(self, stream: trio.abc.Stream) -> None:
        config = self.config
        apply_keepalive(stream, config.keepalive, config.timeout)
        conn = HeartbeatConnection(
            stream,
            max_frame_size=config.max_frame_size,
            close_timeout=config.close_timeout,
        )
        conn._send_timeout = config.send_timeout
        if self.pong_payload is not None:
            conn.pong_payload = partial(self.pong_payload, conn)
        limit = config.max_connections
        if limit is not None and len(self.connections) >= limit:
            await self._finish(
                conn,
                _CloseInfo(
                    CloseCode.SERVER_FULL,
                    f"server full ({limit} connections)",
                    False,
                    DisconnectReason.SERVER_FULL,
                ),
            )
            return
        host = peer_host(stream)
        per_ip = config.max_connections_per_ip
        if per_ip is not None and host is not None and self.per_ip[host] >= per_ip:
            await self._finish(
                conn,
                _CloseInfo(
                    CloseCode.SERVER_FULL,
                    f"too many connections from {host} ({per_ip})",
                    False,
                    DisconnectReason.SERVER_FULL,
                ),
            )
            return
        self.connections.add(conn)
        if host is not None:
            self.per_ip[host] += 1
        try:
            # Handshake, then serve: inline rather than a call, as this frame
            # lives as long as the connection (a frame is ~0.35 KB of it).
            negotiated = await self._handshake(conn)
            if negotiated is None:
                return
            logger.info("connect %s (interval %g s)", conn.peer, negotiated.interval)
            if self.on_connect is not None:
                self.on_connect(conn)

            # Idle deadlines are the kicker's (one task for the server): the reader
            # only records when each frame came, and a kick cancels this nursery,
            # the reader and the handler together.
            handler_error: BaseException | None = None
            handler = self.handler
            if self.enforce:
                conn._min_ping_interval = negotiated.min_interval
            if isinstance(handler, PerMessage):
                # One task: the reader calls the handler for each DATA itself, so
                # a plain cancel scope is all a kick needs to cancel.
                conn._on_data = handler.on_data
                with trio.CancelScope() as scope:
                    conn._cancel_scope = scope
                    if self.enforce:
                        self.kicker.watch(conn)
                    try:
                        await conn._run_reader()
                    except BaseException as exc:
                        handler_error = self._handler_failed(conn, exc)
            else:
                async with trio.open_nursery() as nursery:
                    conn._cancel_scope = nursery.cancel_scope
                    if self.enforce:
                        self.kicker.watch(conn)
                    nursery.start_soon(conn._run_reader)
                    try:
                        await handler(conn)
                    except BaseException as exc:
                        handler_error = self._handler_failed(conn, exc)
                    conn._cancel()

            if handler_error is not None:
                info = _CloseInfo(
                    CloseCode.NORMAL,
                    "server error",
                    False,
                    DisconnectReason.HANDLER_ERROR,
                )
            else:
                info = _CloseInfo(
                    CloseCode.NORMAL, "", False, DisconnectReason.CLOSED_LOCALLY
                )
            await self._finish(conn, info)
        except Exception as exc:
            # Never expected; but whatever one connection raises must cost that
            # connection only, never the server and everyone else on it.
            logger.error(
                "internal error on %s",
                conn.peer,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            await self._finish(
                conn,
                _CloseInfo(
                    CloseCode.NORMAL,
                    "server error",
                    False,
                    DisconnectReason.INTERNAL_ERROR,
                ),
            )
        except BaseException as exc:
            cancelled, _ = _split_cancelled(exc)
            if cancelled:
                await self._finish(
                    conn,
                    _CloseInfo(
                        CloseCode.SHUTTING_DOWN,
                        "server shutting down",
                        False,
                        DisconnectReason.SHUTDOWN,
                    ),
                )
            raise
        finally:
            self.connections.discard(conn)
            self.kicker.connection_ended()
            if host is not None:
                self.per_ip[host] -= 1
                if not self.per_ip[host]:
                    del self.per_ip[host]
            await conn._shut_stream()

    async def _handshake(self, conn: HeartbeatConnection) -> Negotiated | None:
        """HELLO in, HELLO out; None if the connection ended (and was finished).

        Its own frame, so that the HELLO and the handshake's scope are freed
        before the connection settles in for hours.
        """
        config = self.config
        # The handshake deadline is absolute: trickling bytes does not extend it.
        with trio.move_on_after(config.handshake_timeout) as handshake_scope:
            try:
                hello = await conn._receive_hello()
                # The token is checked, then dropped: it must not linger where
                # handlers or logs could show it.
                offered = conn.peer_hello.pop("token", None)
                if config.token is not None and not _token_matches(
                    offered, config.token
                ):
                    raise HandshakeError("authentication failed")
                negotiated = negotiate(hello.fields, config)
            except RemoteProtocolError as exc:
                await self._finish(
                    conn,
                    _CloseInfo(
                        exc.code, str(exc), False, DisconnectReason.PROTOCOL_ERROR
                    ),
                )
                return None
            except HandshakeError as exc:
                await self._finish(
                    conn,
                    _CloseInfo(
                        CloseCode.HANDSHAKE_FAILED,
                        str(exc),
                        False,
                        DisconnectReason.HANDSHAKE_FAILED,
                    ),
                )
                return None
            except ConnectionClosed as exc:
                await self._finish(
                    conn,
                    _CloseInfo(exc.code, exc.reason, True, exc.disconnect_reason),
                )
                return None
            conn.negotiated = negotiated
            try:
                await conn._send_hello(negotiated.to_hello())
            except ConnectionClosed as exc:
                await self._finish(
                    conn,
                    _CloseInfo(exc.code, exc.reason, True, exc.disconnect_reason),
                )
                return None
        if handshake_scope.cancelled_caught:
            await self._finish(
                conn,
                _CloseInfo(
                    CloseCode.HANDSHAKE_FAILED,
                    f"no HELLO within {config.handshake_timeout:g} s",
                    False,
                    DisconnectReason.HANDSHAKE_FAILED,
                ),
            )
            return None
        return negotiated

    def _handler_failed(
        self, conn: HeartbeatConnection, exc: BaseException
    ) -> BaseException | None:
        """Sort out what escaped the handler; returns the handler's own error.

        A ConnectionClosed is the normal way for a handler to learn the peer
        left; anything else is a bug of the handler, logged here so that it
        cannot take the server down. Cancellation is re-raised.
        """
        cancelled, rest = _split_cancelled(exc)
        error = None
        if not _only_connection_closed(rest):
            error = rest
            self._log_handler_error(conn, rest)
        if cancelled:
            if isinstance(exc, BaseExceptionGroup):
                only_cancelled, _ = exc.split(trio.Cancelled)
                assert only_cancelled is not None
                raise only_cancelled from None
            raise exc
        return error

    def _kick(self, conn: HeartbeatConnection) -> None:
        """The kicker found ``conn`` silent for ``timeout``: end it now."""
        if conn._replying:
            # The reader has been stuck sending PONGs since the last frame it
            # read: the client floods or stopped reading. The send in progress
            # may leave a partial frame, so no CLOSE can follow.
            alone = conn._close_now(
                _CloseInfo(
                    None,
                    f"PONGs unread for {self.config.timeout:g} s: "
                    "the peer stopped reading",
                    False,
                    DisconnectReason.SLOW_CONSUMER,
                )
            )
        else:
            alone = conn._close_now(self._timeout_info, self._timeout_wire)
        # Cancelling costs as much as the rest of a kick (Trio records who
        # cancelled): skipped where the socket's end already ends everything.
        if not alone:
            conn._cancel()

    @staticmethod
    def _log_handler_error(
        conn: HeartbeatConnection, exc: BaseException | None
    ) -> None:
        assert exc is not None
        logger.error(
            "handler failed for %s",
            conn.peer,
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    async def _finish(self, conn: HeartbeatConnection, info: _CloseInfo) -> None:
        """End the connection once: CLOSE (unless it cannot be sent), close, log, hook.

        ``info`` is our reason; if the connection had already ended another way
        (the peer closed, a protocol error) that first reason is what is
        reported. The log line and the hook run even if this is cancelled.
        """
        if conn._finished:
            return
        conn._finished = True
        already = conn._close_info
        # Our CLOSE carries our first reason (a kick recorded by the kicker);
        # after the peer's CLOSE it is the reply.
        ours = already if already is not None and not already.by_peer else info
        try:
            conn._set_closed(info)
            if info.by_peer:
                await conn._shut_stream()
            else:
                await conn._send_close_and_shut(
                    ours.code if ours.code is not None else CloseCode.NORMAL,
                    ours.reason,
                )
        finally:
            report = already or info
            reason = report.disconnect_reason
            detail = f": {report.reason}" if report.reason else ""
            code = "" if report.code is None else f" [CLOSE {report.code}]"
            if reason is DisconnectReason.HEARTBEAT_TIMEOUT:
                logger.warning("kick %s: %s%s%s", conn.peer, reason.value, code, detail)
            else:
                logger.info(
                    "disconnect %s: %s%s%s", conn.peer, reason.value, code, detail
                )
            if self.on_disconnect is not None:
                self.on_disconnect(conn, reason)


async def serve_listeners(
    handler: Handler,
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    config: ServerConfig | None = None,
    on_connect: ConnectHook | None = None,
    on_disconnect: DisconnectHook | None = None,
    pong_payload: PongPayload | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> NoReturn:
    """Serve heartbeat connections on any Trio listeners, forever.

    ``handler(conn)`` runs once per connection after a successful handshake, in
    the connection's own nursery beside its reader task. When the handler
    returns, the connection is closed with CLOSE(0). When the client is silent
    for ``config.timeout`` seconds, the handler is cancelled and the client gets
    CLOSE(1). Cancelling this function shuts down: every client gets CLOSE(5).

    Accept errors that mean "out of file descriptors or memory" are logged and
    retried after a short sleep, as :func:`trio.serve_listeners` does; other
    errors propagate. ``on_connect(conn)`` and ``on_disconnect(conn, reason)`` are
    synchronous hooks for presence tracking and cleanup. ``pong_payload(conn,
    ping_payload)`` returns the bytes piggybacked on each PONG.
    """
    server = _Server(
        handler, config or ServerConfig(), on_connect, on_disconnect, pong_payload
    )
    if not server.enforce:
        logger.warning("heartbeat enforcement is OFF: silent clients are never kicked")
    async with trio.open_nursery() as nursery:
        connections = handler_nursery or nursery
        # The kicker lives where the connections do: with an outside
        # handler_nursery they may outlast this call, and stay watched.
        if server.enforce:
            connections.start_soon(server.kicker.run)
        try:
            await serve_accept_loop(
                server.handle,
                list(listeners),
                handler_nursery=connections,
                task_status=task_status,
            )
        finally:
            server.kicker.stop()


async def serve_tcp(
    handler: Handler,
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    config: ServerConfig | None = None,
    on_connect: ConnectHook | None = None,
    on_disconnect: DisconnectHook | None = None,
    pong_payload: PongPayload | None = None,
    handler_nursery: trio.Nursery | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> NoReturn:
    """Listen on TCP ``port`` (0 picks a free one) and serve forever.

    Use ``listeners = await nursery.start(partial(serve_tcp, handler, 0))`` to
    learn the real port. With ``ssl_context`` every connection is TLS; the TLS
    handshake counts against the handshake timeout. See :func:`serve_listeners`
    for the rest.
    """
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be int, not {port!r}")
    listeners: list[Any] = await trio.open_tcp_listeners(
        port, host=host, backlog=backlog
    )
    if ssl_context is not None:
        # https_compatible=False: our CLOSE handshake ends the session cleanly.
        listeners = [trio.SSLListener(tcp, ssl_context) for tcp in listeners]
    await serve_listeners(
        handler,
        listeners,
        config=config,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        pong_payload=pong_payload,
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
