"""serve_tcp / serve_listeners: one task (or nursery) per connection, one kicker.

A connection's life, top to bottom in :meth:`_Server.handle`:

1. **accept** — the accept loop (``_accept.py``) starts ``handle(stream)``;
2. **admit** — the server-full and per-IP limits; a refusal is CLOSE(6);
3. **handshake** — the client's HELLO under an absolute deadline: the token is
   checked and the interval negotiated, or the client gets CLOSE(7) (CLOSE(2)
   for anything but HELLO);
4. **serve** — the reader task and the application's handler (or the reader
   alone, calling a per-message handler), watched by the server's
   :class:`Kicker`, which ends a connection silent for ``timeout``;
5. **finish** — however it ended: one CLOSE frame (when the stream can still
   carry one), the peer's answer awaited briefly, a closed stream, one log line
   and one ``on_disconnect`` call.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from functools import partial
from typing import Any, Final, NoReturn

import attrs
import trio

from ._accept import serve_accept_loop
from ._config import HandshakeError, Negotiated, ServerConfig, negotiate
from ._connection import HeartbeatConnection, peer_host
from ._detector import PhiAccrual
from ._groups import split_cancelled
from ._keepalive import apply_keepalive
from ._kicker import Kicker
from ._lag import LagMonitor
from ._metrics import ServerMetrics, SessionTotals
from ._presence import (
    DUPLICATES,
    Duplicate,
    JoinRefused,
    LeaveReason,
    Presence,
    PresenceSession,
    new_session_id,
)
from ._protocol import CloseCode
from ._session import (
    CloseInfo,
    ConnectionClosed,
    DisconnectReason,
    Role,
    Session,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "DISABLE_ENV_VAR",
    "Authenticate",
    "ConnectHook",
    "DisconnectHook",
    "Handler",
    "HeartbeatServer",
    "MessageHandler",
    "PerMessage",
    "PongPayload",
    "RefuseHook",
    "ServerStatistics",
    "per_message",
    "serve_listeners",
    "serve_tcp",
]

logger = logging.getLogger("trio_heartbeat.server")

# Why a listed session left, by why its connection ended.
_LEAVE_REASONS: dict[DisconnectReason | None, LeaveReason] = {
    DisconnectReason.CLOSED_BY_PEER: LeaveReason.CLOSED,
    DisconnectReason.CONNECTION_LOST: LeaveReason.CLOSED,
    DisconnectReason.CLOSED_LOCALLY: LeaveReason.CLOSED,
    DisconnectReason.REPLACED: LeaveReason.REPLACED,
    DisconnectReason.SHUTDOWN: LeaveReason.SHUTDOWN,
}

#: Set to ``1`` to switch heartbeat enforcement off (PINGs are still answered).
DISABLE_ENV_VAR: Final = "TRIO_HEARTBEAT_DISABLE"

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


#: A server handler: ``async handler(conn)``, or one made by :func:`per_message`.
Handler = Callable[[HeartbeatConnection], Awaitable[object]] | PerMessage
#: ``on_connect(conn)``: a client finished its handshake.
ConnectHook = Callable[[HeartbeatConnection], object]
#: ``on_disconnect(conn, reason)``: a client that was connected is gone.
DisconnectHook = Callable[[HeartbeatConnection, DisconnectReason], object]
#: ``on_refuse(conn, reason)``: a connection ended before it was connected
#: (server full, handshake failed, TLS refused).
RefuseHook = Callable[[HeartbeatConnection, DisconnectReason], object]
#: ``pong_payload(conn, ping_payload)``: the bytes of the PONG answering a PING.
PongPayload = Callable[[HeartbeatConnection, bytes], bytes]
#: ``await authenticate(hello)``: the client's identity, kept as
#: ``conn.identity``; raise :class:`HandshakeError` to refuse with CLOSE(7).
Authenticate = Callable[[Mapping[str, Any]], Awaitable[object]]


def enforcement_enabled(config: ServerConfig) -> bool:
    """Whether kicks apply: the config says so and the environment does not veto."""
    return config.enabled and os.environ.get(DISABLE_ENV_VAR, "") not in ("1", "true")


def _token_matches(offered: object, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), whatever was offered."""
    if not isinstance(offered, str):
        offered = ""
    return hmac.compare_digest(offered.encode(), expected.encode())


def only_connection_closed(exc: BaseException | None) -> bool:
    """Whether ``exc`` is nothing (or a group of nothing) but ConnectionClosed."""
    if exc is None or isinstance(exc, ConnectionClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(only_connection_closed(e) for e in exc.exceptions)
    return False


# How each kind of ending is reported: (code sent, text, reason category).
_ENDED_NORMALLY: Final = (CloseCode.NORMAL, "", DisconnectReason.CLOSED_LOCALLY)
_HANDLER_FAILED: Final = (
    CloseCode.NORMAL,
    "server error",
    DisconnectReason.HANDLER_ERROR,
)
_INTERNAL_ERROR: Final = (
    CloseCode.NORMAL,
    "server error",
    DisconnectReason.INTERNAL_ERROR,
)
_SHUTTING_DOWN: Final = (
    CloseCode.SHUTTING_DOWN,
    "server shutting down",
    DisconnectReason.SHUTDOWN,
)


@attrs.frozen
class ServerStatistics:
    """A snapshot of a :class:`HeartbeatServer`'s figures.

    Counts are since the server was made; times are seconds.
    """

    #: Connections open now (handshaking included).
    connections: int
    #: Connections accepted in all.
    connections_opened: int
    #: Ended connections, by why they ended.
    disconnects: Mapping[DisconnectReason, int]
    #: The worst lateness of the server's own event loop so far: how much
    #: later than asked a task woke (a long collection, a blocking call, a
    #: stall of the process).
    loop_lag_max: float
    #: The 99th percentile of the loop's lateness over its last 1,024 probes.
    loop_lag_p99: float
    #: Seconds the server was stalled in all (lateness beyond 0.1 s), which
    #: count against nobody's liveness.
    stalled: float


class HeartbeatServer:
    """A heartbeat server: the handler, the settings, the hooks, and its figures.

    :func:`serve_tcp` and :func:`serve_listeners` make one and serve with it;
    make one yourself to keep a handle on it::

        server = trio_heartbeat.HeartbeatServer(handler, config=config)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve_tcp, 5005)
            ...
            print(len(server.connections), server.statistics())

    ``handler(conn)`` runs once per connection after a successful handshake, in
    the connection's own nursery beside its reader task (or wrap it in
    :func:`per_message`).

    The hooks are synchronous, and pair: ``on_connect(conn)`` once a client's
    handshake succeeded, then exactly one ``on_disconnect(conn, reason)`` when
    it is gone; a connection that never got that far (server full, handshake
    failed or refused, TLS failed) gets one ``on_refuse(conn, reason)``
    instead. ``await authenticate(hello)`` admits a client by its HELLO (all of
    its fields, ``token`` and ``client_id`` included): what it returns is kept
    as ``conn.identity``; raising :class:`HandshakeError` refuses the client
    with CLOSE(7) and the error's text (any other exception refuses it too,
    logged, with "authentication failed"). ``pong_payload(conn, ping_payload)``
    returns the bytes piggybacked on each PONG (by default a PONG echoes its
    PING's payload). A server serves one set of listeners at a time.

    ``presence`` lists each client that gives a ``client_id`` while it is
    connected (:class:`MemoryPresence` in this process, :class:`RedisPresence`
    for a fleet); ``duplicate`` says what happens when a listed ``client_id``
    connects again: ``"allow"`` (both listed), ``"replace"`` (the older
    session gets CLOSE(8), on whichever server holds it), ``"reject"`` (the
    newcomer gets CLOSE(7)). A heartbeat never touches the store.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        config: ServerConfig | None = None,
        on_connect: ConnectHook | None = None,
        on_disconnect: DisconnectHook | None = None,
        on_refuse: RefuseHook | None = None,
        authenticate: Authenticate | None = None,
        pong_payload: PongPayload | None = None,
        presence: Presence | None = None,
        duplicate: Duplicate = "allow",
    ) -> None:
        config = config or ServerConfig()
        if duplicate not in DUPLICATES:
            raise ValueError(
                f"duplicate must be one of {', '.join(DUPLICATES)}, not {duplicate!r}"
            )
        self.handler = handler
        #: Where connected clients are listed (None: nowhere), and the rule
        #: for a ``client_id`` that connects again.
        self.presence = presence
        self.duplicate: Duplicate = duplicate
        self._listed: dict[HeartbeatConnection, PresenceSession] = {}
        self._connection_nursery: trio.Nursery | None = None
        self._by_session: dict[str, HeartbeatConnection] = {}
        self.config = config
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_refuse = on_refuse
        self.authenticate = authenticate
        self.pong_payload = pong_payload
        self.enforce = enforcement_enabled(config)
        self._connections: set[HeartbeatConnection] = set()
        self._by_client_id: dict[str, set[HeartbeatConnection]] = {}
        self._listeners: list[Any] = []
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._opened = 0
        self._disconnects: collections.Counter[DisconnectReason] = collections.Counter()
        self._refusals: collections.Counter[str] = collections.Counter()
        self._ended = SessionTotals()
        self._lag = LagMonitor(config.lag_probe_interval or 1.0)
        self._kicker = Kicker(
            config.timeout,
            config.close_timeout,
            self._kick,
            self._connections,
            self._log_kicks,
            self._lag,
        )
        self._kick_reason = f"nothing received for {config.timeout:g} s"
        # Kicked, not yet logged: (connection, seconds it had been silent).
        self._kicked: collections.deque[tuple[HeartbeatConnection, float]] = (
            collections.deque()
        )
        self._serving = False

    @property
    def connections(self) -> AbstractSet[HeartbeatConnection]:
        """The connections being served now, handshaking ones included (a live,
        read-only view)."""
        return self._connections

    def connections_of(self, client_id: str) -> list[HeartbeatConnection]:
        """The connected clients that gave this ``client_id`` in their HELLO."""
        return list(self._by_client_id.get(client_id, ()))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each listener being served (TLS ones included):
        how to learn the port after serving on port 0."""
        found = []
        for listener in self._listeners:
            inner = getattr(listener, "transport_listener", listener)
            sock = getattr(inner, "socket", None)
            if sock is not None:
                host, port = sock.getsockname()[:2]
                found.append((str(host), int(port)))
        return found

    def statistics(self) -> ServerStatistics:
        """The server's figures now."""
        lag = self._lag
        return ServerStatistics(
            connections=len(self._connections),
            connections_opened=self._opened,
            disconnects=dict(self._disconnects),
            loop_lag_max=lag.lag_max,
            loop_lag_p99=lag.lag_p99(),
            stalled=lag.ledger.total,
        )

    def metrics(self) -> ServerMetrics:
        """The server's figures now, connections open and ended alike, for
        export to a metrics system (``serve --metrics-port`` serves them to
        Prometheus). Takes time in proportion to the open connections: for
        scrapes, not for every frame."""
        totals = self._ended.copy()
        totals.add_all([conn.session for conn in self._connections])
        lag = self._lag.lateness
        kicks = self._kicker.lateness
        return ServerMetrics(
            connections=len(self._connections),
            connections_opened=self._opened,
            handshake_failures=dict(self._refusals),
            disconnects={
                reason.name.lower(): count
                for reason, count in self._disconnects.items()
            },
            pings_received=totals.pings,
            pongs_sent=totals.pongs_sent,
            frames_received=totals.frames,
            bytes_received=totals.bytes_received,
            bytes_sent=totals.bytes_sent,
            loop_lag_buckets=lag.buckets(),
            loop_lag_count=lag.count,
            loop_lag_sum=lag.sum,
            loop_lag_max=lag.max,
            stalled_seconds=self._lag.ledger.total,
            kick_lateness_buckets=kicks.buckets(),
            kick_lateness_count=kicks.count,
            kick_lateness_sum=kicks.sum,
            kick_lateness_max=kicks.max,
            presence_listed=len(self._listed),
            presence_unreachable=int(
                self.presence is not None and not self.presence.healthy
            ),
        )

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]] = (
            trio.TASK_STATUS_IGNORED
        ),
    ) -> NoReturn:
        """Serve on any Trio listeners, forever; see :func:`serve_listeners`."""
        if self._serving:
            raise RuntimeError("this HeartbeatServer is serving already")
        self._serving = True
        self._listeners = list(listeners)
        if not self.enforce:
            logger.warning(
                "heartbeat enforcement is OFF: silent clients are never kicked"
            )
        try:
            async with trio.open_nursery() as nursery:
                connections = handler_nursery or nursery
                self._connection_nursery = connections
                # The kicker lives where the connections do: with an outside
                # handler_nursery they may outlast this call, and stay watched.
                if self.enforce:
                    connections.start_soon(self._kicker.run)
                if self.config.lag_probe_interval is not None:
                    nursery.start_soon(self._lag.run)
                if self.presence is not None:
                    await nursery.start(self.presence.run, self._replaced)
                try:
                    await serve_accept_loop(
                        self.handle,
                        list(listeners),
                        handler_nursery=connections,
                        task_status=task_status,
                    )
                finally:
                    self._kicker.stop()
        finally:
            self._serving = False
            self._listeners = []

    async def serve_tcp(
        self,
        port: int,
        *,
        host: str | bytes | None = None,
        backlog: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]] = (
            trio.TASK_STATUS_IGNORED
        ),
    ) -> NoReturn:
        """Listen on TCP ``port`` (0 picks a free one) and serve forever; see
        :func:`serve_tcp`."""
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"port must be int, not {port!r}")
        listeners: list[Any] = await trio.open_tcp_listeners(
            port, host=host, backlog=backlog
        )
        if ssl_context is not None:
            # https_compatible=False: our CLOSE handshake ends the session cleanly.
            listeners = [trio.SSLListener(tcp, ssl_context) for tcp in listeners]
        await self.serve_listeners(
            listeners, handler_nursery=handler_nursery, task_status=task_status
        )

    # ------------------------------------------------------------ the life

    async def handle(self, stream: trio.abc.Stream) -> None:
        """One connection, from accept to finish."""
        conn = self._connection(stream)
        self._opened += 1
        refusal = self._admit(conn)
        if refusal is not None:
            await self._finish(conn, False, CloseCode.SERVER_FULL, refusal,
                               DisconnectReason.SERVER_FULL)  # fmt: skip
            return
        host = peer_host(stream)
        self._connections.add(conn)
        if host is not None:
            self._per_ip[host] += 1
        ending = _ENDED_NORMALLY
        connected = False
        try:
            if await self._handshake(conn):
                connected = True
                self._index(conn, add=True)
                # Serve: inline rather than a call, as this frame lives as long
                # as the connection (a frame is ~0.35 KB of it).
                interval = conn.negotiated.interval if conn.negotiated else 0
                logger.info(
                    "connect %s (interval %g s)",
                    conn.peer,
                    interval,
                    extra={
                        "event": "connect",
                        "peer": conn.peer,
                        "client_id": conn.client_id,
                        "interval": interval,
                    },
                )
                if self.on_connect is not None:
                    self.on_connect(conn)
                handler = self.handler
                if isinstance(handler, PerMessage):
                    # One task: the reader calls the handler for each DATA, so a
                    # plain cancel scope is all a kick needs to cancel.
                    with trio.CancelScope() as scope:
                        conn.bind_scope(scope)
                        self._watch(conn)
                        try:
                            await conn.run_reader(handler.on_data)
                        except BaseException as exc:
                            if self._handler_failed(conn, exc):
                                ending = _HANDLER_FAILED
                else:
                    async with trio.open_nursery() as nursery:
                        conn.bind_scope(nursery.cancel_scope)
                        self._watch(conn)
                        nursery.start_soon(conn.run_reader)
                        try:
                            await handler(conn)
                        except BaseException as exc:
                            if self._handler_failed(conn, exc):
                                ending = _HANDLER_FAILED
                        # The reader stops here; finishing reads the client's
                        # answer to our CLOSE itself.
                        nursery.cancel_scope.cancel()
        except Exception as exc:
            # Never expected; but whatever one connection raises must cost that
            # connection only, never the server and everyone else on it.
            logger.error(
                "internal error on %s",
                conn.peer,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            ending = _INTERNAL_ERROR
        except BaseException as exc:
            if split_cancelled(exc)[0]:
                ending = _SHUTTING_DOWN
            raise
        finally:
            try:
                if (
                    self._kicker.busy and conn.done_sending and not conn.answer_held
                ):  # kicks first (Kicker)
                    with trio.CancelScope(shield=True):
                        await self._kicker.cleanup_turn()
                await self._finish(conn, connected, *ending)
            finally:
                if connected:
                    self._index(conn, add=False)
                if self._listed:
                    self._unlist(conn)
                self._connections.discard(conn)
                self._kicker.connection_ended()
                if host is not None:
                    self._per_ip[host] -= 1
                    if not self._per_ip[host]:
                        del self._per_ip[host]

    def _index(self, conn: HeartbeatConnection, *, add: bool) -> None:
        client_id = conn.client_id
        if client_id is None:
            return
        if add:
            self._by_client_id.setdefault(client_id, set()).add(conn)
        else:
            same = self._by_client_id.get(client_id)
            if same is not None:
                same.discard(conn)
                if not same:
                    del self._by_client_id[client_id]

    def _connection(self, stream: trio.abc.Stream) -> HeartbeatConnection:
        config = self.config
        apply_keepalive(stream, config.keepalive, config.timeout)
        session = Session(Role.SERVER, max_frame_size=config.max_frame_size)
        conn = HeartbeatConnection(
            stream,
            session=session,
            close_timeout=config.close_timeout,
            send_timeout=config.send_timeout,
        )
        if self.pong_payload is not None:
            conn.pong_payload = partial(self.pong_payload, conn)
        return conn

    def _admit(self, conn: HeartbeatConnection) -> str | None:
        """Why the server refuses this connection now, or None to admit it."""
        config = self.config
        limit = config.max_connections
        if limit is not None and len(self._connections) >= limit:
            return f"server full ({limit} connections)"
        per_ip = config.max_connections_per_ip
        host = peer_host(conn.stream)
        if per_ip is not None and host is not None and self._per_ip[host] >= per_ip:
            return f"too many connections from {host} ({per_ip})"
        return None

    async def _handshake(self, conn: HeartbeatConnection) -> bool:
        """HELLO in, HELLO out; False if the connection ended instead.

        Its own frame, so that the HELLO and the handshake's scope are freed
        before the connection settles in for hours. The deadline is absolute:
        trickling bytes does not extend it.
        """
        config = self.config
        session = conn.session
        with trio.move_on_after(config.handshake_timeout):
            try:
                fields = await conn.read_hello()
                # The token is checked, then dropped: it must not linger where
                # handlers or logs could show it.
                offered = conn.peer_hello.pop("token", None)
                if config.token is not None and not _token_matches(
                    offered, config.token
                ):
                    raise HandshakeError("authentication failed")
                negotiated: Negotiated = negotiate(fields, config)
                if self.authenticate is not None:
                    conn.identity = await self._authenticated(conn, fields)
                if self.presence is not None and conn.client_id is not None:
                    await self._join(conn, fields)
            except HandshakeError as exc:
                session.record(
                    CloseInfo(
                        CloseCode.HANDSHAKE_FAILED,
                        str(exc),
                        False,
                        DisconnectReason.HANDSHAKE_FAILED,
                    )
                )
                return False
            except ConnectionClosed:
                return False  # the reason is recorded on the session
            if self.enforce:
                session.min_ping_interval = negotiated.min_interval
                session.max_ping_strikes = config.max_ping_strikes
                if config.detector == "phi":
                    interval = negotiated.interval
                    session.detector = PhiAccrual.from_settings(
                        config, interval, interval
                    )
            try:
                await conn.accept(negotiated)
            except ConnectionClosed:
                return False
            return True
        session.record(
            CloseInfo(
                CloseCode.HANDSHAKE_FAILED,
                f"no HELLO within {config.handshake_timeout:g} s",
                False,
                DisconnectReason.HANDSHAKE_FAILED,
            )
        )
        return False

    async def _join(self, conn: HeartbeatConnection, hello: Mapping[str, Any]) -> None:
        """List the client (its HELLO's ``meta`` object as metadata), applying
        the duplicate rule; HandshakeError if it is refused."""
        assert self.presence is not None and conn.client_id is not None
        meta = hello.get("meta")
        session = PresenceSession(
            session_id=new_session_id(),
            client_id=conn.client_id,
            node=self.presence.node,
            peer=conn.peer,
            since=time.time(),
            meta=meta if isinstance(meta, dict) else {},
        )
        try:
            await self.presence.join(session, self.duplicate)
        except JoinRefused as exc:
            raise HandshakeError(str(exc)) from None
        self._listed[conn] = session
        self._by_session[session.session_id] = conn

    def _replaced(self, session_id: str) -> None:
        """Presence: a newer session of this client replaced ``session_id``
        (here or on another node): CLOSE(8), as promptly as a kick."""
        conn = self._by_session.get(session_id)
        if conn is None or conn.closed:
            return
        reason = "replaced by a newer session of this client_id"
        if not conn.can_end_now:
            # TLS, or a send in progress: the CLOSE goes out after it, from a
            # task of the connection's nursery (the client must get CLOSE(8),
            # or it would reconnect and replace the newer session in turn).
            assert self._connection_nursery is not None
            self._connection_nursery.start_soon(
                conn.end, CloseCode.REPLACED, reason, DisconnectReason.REPLACED
            )
            return
        alone = conn.end_now(CloseCode.REPLACED, reason, DisconnectReason.REPLACED)
        if alone:
            if self.enforce:
                self._kicker.linger(conn)
            else:
                conn.stop_lingering()
        else:
            conn.cancel()

    def _unlist(self, conn: HeartbeatConnection) -> None:
        session = self._listed.pop(conn, None)
        if session is None:
            return
        del self._by_session[session.session_id]
        assert self.presence is not None
        info = conn.session.close_info
        category = info.disconnect_reason if info is not None else None
        self.presence.leave(session, _LEAVE_REASONS.get(category, LeaveReason.KICKED))

    async def _authenticated(
        self, conn: HeartbeatConnection, hello: Mapping[str, Any]
    ) -> object:
        """The identity the application's hook returns; HandshakeError refuses."""
        assert self.authenticate is not None
        try:
            return await self.authenticate(hello)
        except HandshakeError:
            raise
        except Exception as exc:
            logger.warning(
                "authenticate() failed for %s",
                conn.peer,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            raise HandshakeError("authentication failed") from None

    def _watch(self, conn: HeartbeatConnection) -> None:
        if self.enforce:
            self._kicker.watch(conn)

    def _handler_failed(self, conn: HeartbeatConnection, exc: BaseException) -> bool:
        """Sort out what escaped the handler: True if the handler itself failed.

        A ConnectionClosed is the normal way for a handler to learn the peer
        left; anything else is a bug of the handler, logged here so that it
        cannot take the server down. Cancellation is re-raised.
        """
        cancelled, rest = split_cancelled(exc)
        failed = not only_connection_closed(rest)
        if failed:
            assert rest is not None
            logger.error(
                "handler failed for %s",
                conn.peer,
                exc_info=(type(rest), rest, rest.__traceback__),
            )
        if cancelled:
            if isinstance(exc, BaseExceptionGroup):
                only_cancelled, _ = exc.split(trio.Cancelled)
                assert only_cancelled is not None
                raise only_cancelled from None
            raise exc
        return failed

    def _kick(self, conn: HeartbeatConnection) -> bool:
        """The kicker found ``conn`` silent for ``timeout``: end it now.

        Returns True when the connection then lingers for the client's answer
        by itself (the kicker stops that after ``close_timeout``).
        """
        if conn.replying:
            # The reader has been stuck sending PONGs since the last bytes it
            # read: the client floods or stopped reading. The send in progress
            # may leave a partial frame, so no CLOSE can follow.
            alone = conn.end_now(
                None,
                f"PONGs unread for {self.config.timeout:g} s: the peer stopped reading",
                DisconnectReason.SLOW_CONSUMER,
            )
        else:
            alone = conn.end_now(
                CloseCode.HEARTBEAT_TIMEOUT,
                self._kick_text(conn),
                DisconnectReason.HEARTBEAT_TIMEOUT,
            )
            if logger.isEnabledFor(logging.WARNING):  # else no line to write
                self._kicked.append((conn, trio.current_time() - conn.last_received))
        # Cancelling costs as much as the rest of a kick (Trio records who
        # cancelled): skipped where the socket's end already ends everything.
        if alone:
            conn.hold_answer(self._kicker.cleanup_turn)  # kicks first (Kicker)
        else:
            conn.cancel()
        return alone

    def _kick_text(self, conn: HeartbeatConnection) -> str:
        """The CLOSE(1) text: the fixed rule's is the same for all."""
        session = conn.session
        if session.detector is None:
            return self._kick_reason
        now = trio.current_time()
        return (
            f"nothing received for {now - session.last_received:.1f} s "
            f"(phi {session.phi(now) or 0.0:.1f})"
        )

    def _log_kicks(self, budget: int) -> bool:
        """Log up to ``budget`` kicks, oldest first; whether some are left.

        Called by the kicker after each pass, with the share it gives cleanups:
        a line costs about as much as a kick, so during a burst the lines wait
        until the kicks are out (each says how long its client had been silent
        when it was kicked). Their cleanup, which waits for the client's
        answer, is reported by ``on_disconnect`` later.
        """
        kicked = self._kicked
        for _ in range(min(budget, len(kicked))):
            conn, silent = kicked.popleft()
            info = conn.session.close_info
            reason = info.reason if info is not None else self._kick_reason
            logger.warning(
                "kick %s: heartbeat timeout [CLOSE %d]: %s",
                conn.peer,
                CloseCode.HEARTBEAT_TIMEOUT,
                reason,
                extra={
                    "event": "kick",
                    "peer": conn.peer,
                    "client_id": conn.client_id,
                    "reason": "heartbeat_timeout",
                    "code": int(CloseCode.HEARTBEAT_TIMEOUT),
                    "detail": reason,
                    "silent": round(silent, 3),
                },
            )
        return bool(kicked)

    async def _finish(
        self,
        conn: HeartbeatConnection,
        connected: bool,
        code: int,
        reason: str,
        disconnect_reason: DisconnectReason,
    ) -> None:
        """End the connection (once): CLOSE, close, then one log line and one
        hook: ``on_disconnect`` for a connection that was ``connected``
        (announced by ``on_connect``), ``on_refuse`` for one that was not.

        If the connection had already ended another way (the peer closed, a
        protocol error, a kick), that first reason is what is reported. The log
        line and the hook run even if this is cancelled.
        """
        try:
            await conn.end(code, reason, disconnect_reason)
        finally:
            info = conn.session.close_info
            assert info is not None
            category = info.disconnect_reason
            self._disconnects[category] += 1
            self._ended.add(conn.session)
            if not connected:
                self._refusals["none" if info.code is None else str(info.code)] += 1
            detail = f": {info.reason}" if info.reason else ""
            shown = "" if info.code is None else f" [CLOSE {info.code}]"
            if category is not DisconnectReason.HEARTBEAT_TIMEOUT:  # logged at kick
                logger.info(
                    "disconnect %s: %s%s%s", conn.peer, category.value, shown, detail,
                    extra={
                        "event": "disconnect" if connected else "refuse",
                        "peer": conn.peer,
                        "client_id": conn.client_id,
                        "reason": category.name.lower(),
                        "code": info.code,
                        "detail": info.reason,
                        "by_peer": info.by_peer,
                    },
                )  # fmt: skip
            if connected:
                if self.on_disconnect is not None:
                    self.on_disconnect(conn, category)
            elif self.on_refuse is not None:
                self.on_refuse(conn, category)


async def serve_listeners(
    handler: Handler,
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    config: ServerConfig | None = None,
    on_connect: ConnectHook | None = None,
    on_disconnect: DisconnectHook | None = None,
    on_refuse: RefuseHook | None = None,
    authenticate: Authenticate | None = None,
    pong_payload: PongPayload | None = None,
    presence: Presence | None = None,
    duplicate: Duplicate = "allow",
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]] = (
        trio.TASK_STATUS_IGNORED
    ),
) -> NoReturn:
    """Serve heartbeat connections on any Trio listeners, forever.

    ``handler(conn)`` runs once per connection after a successful handshake, in
    the connection's own nursery beside its reader task. When the handler
    returns, the connection is closed with CLOSE(0). When nothing has been
    received from the client for ``config.timeout`` seconds of the server's
    awake time, the handler is cancelled and the client gets CLOSE(1).
    Cancelling this function shuts down: every client gets CLOSE(5).

    Accept errors that mean "out of file descriptors or memory" are logged and
    retried after a short sleep, as :func:`trio.serve_listeners` does; other
    errors propagate. The hooks, ``authenticate``, ``pong_payload``,
    ``presence`` and ``duplicate`` are :class:`HeartbeatServer`'s; make one
    yourself to keep a handle on the server (its connections, their lookup by
    ``client_id``, its figures).

    ``handler_nursery``: where the connections' tasks run (by default, inside
    this call). Pass a nursery of your own to keep connections going after
    this function is cancelled (the listeners close; the connections do not).
    """
    server = HeartbeatServer(
        handler,
        config=config,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        on_refuse=on_refuse,
        authenticate=authenticate,
        pong_payload=pong_payload,
        presence=presence,
        duplicate=duplicate,
    )
    await server.serve_listeners(
        listeners, handler_nursery=handler_nursery, task_status=task_status
    )


async def serve_tcp(
    handler: Handler,
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    config: ServerConfig | None = None,
    on_connect: ConnectHook | None = None,
    on_disconnect: DisconnectHook | None = None,
    on_refuse: RefuseHook | None = None,
    authenticate: Authenticate | None = None,
    pong_payload: PongPayload | None = None,
    presence: Presence | None = None,
    duplicate: Duplicate = "allow",
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
    server = HeartbeatServer(
        handler,
        config=config,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        on_refuse=on_refuse,
        authenticate=authenticate,
        pong_payload=pong_payload,
        presence=presence,
        duplicate=duplicate,
    )
    await server.serve_tcp(
        port,
        host=host,
        backlog=backlog,
        ssl_context=ssl_context,
        handler_nursery=handler_nursery,
        task_status=task_status,
    )
