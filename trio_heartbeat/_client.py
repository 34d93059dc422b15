"""The client: HELLO handshake, the heartbeat retry loop, and reconnecting.

The retry rule lives in ``_schedule.py`` (sans-IO, shared with the legacy
client); this module runs it beside the application with Trio.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any

import attrs
import trio

from ._adaptive import IntervalChange, IntervalLearner
from ._backoff import Backoff
from ._config import DEFAULT_INTERVAL, ClientConfig, Negotiated
from ._connection import HeartbeatConnection
from ._detector import PhiAccrual
from ._groups import only, unwrap
from ._keepalive import apply_keepalive
from ._lag import STALL_TOLERANCE
from ._protocol import PROTOCOL_VERSION, CloseCode
from ._schedule import Action, RetrySchedule
from ._session import (
    CloseInfo,
    ConnectionClosed,
    DisconnectReason,
    HeartbeatTimeout,
    Role,
    Session,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "ConnectionAttempt",
    "Reconnector",
    "connect_stream",
    "open_connection",
    "reconnecting",
]

logger = logging.getLogger("trio_heartbeat.client")

#: ``ping_payload()``: the bytes of each PING the heartbeat sends.
PingPayload = Callable[[], bytes]
#: ``on_pong(payload)``: the payload of each PONG received.
OnPong = Callable[[bytes], None]

#: What ends one connection of a reconnect loop, rather than the program;
#: in the order that says most about what happened.
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    HeartbeatTimeout,
    ConnectionClosed,
    OSError,
    trio.BrokenResourceError,
)


def is_permanent(failure: BaseException) -> bool:
    """The default ``Reconnector(is_permanent=...)``: whether retrying cannot
    help, or must not. A TLS certificate that does not verify will not verify
    on the next try either; a session replaced by a newer one of the same
    ``client_id`` (CLOSE(8)) must not come back and replace it in turn.
    Everything else (refused, reset, kicked, timed out) may pass.
    """
    seen: BaseException | None = failure
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if isinstance(seen, ConnectionClosed) and seen.code == CloseCode.REPLACED:
            return True
        seen = seen.__cause__
    return False


def _hello_fields(
    config: ClientConfig, learner: IntervalLearner | None = None
) -> dict[str, Any]:
    fields: dict[str, Any] = {"version": PROTOCOL_VERSION}
    if learner is None:
        fields["interval"] = config.interval
    elif math.isfinite(learner.maximum):
        # An adaptive client asks for the longest interval it may try; the
        # server grants at most timeout / 2 (asking nothing gets exactly that).
        fields["interval"] = learner.maximum
    fields["retry_interval"] = config.retry_interval
    fields["retries"] = config.retries
    if config.client_id is not None:
        fields["client_id"] = config.client_id
    if config.token is not None:
        fields["token"] = config.token
    return fields


def _new_connection(
    stream: trio.abc.Stream, config: ClientConfig, on_pong: OnPong | None
) -> HeartbeatConnection:
    return HeartbeatConnection(
        stream,
        session=Session(Role.CLIENT, max_frame_size=config.max_frame_size),
        close_timeout=config.close_timeout,
        on_pong=on_pong,
    )


def adaptive_learner(
    adaptive: bool | IntervalLearner, config: ClientConfig
) -> IntervalLearner | None:
    """The learner for ``adaptive=``: ``True`` starts at ``config.interval``
    with no maximum but the server's."""
    if adaptive is True:
        return IntervalLearner(config.interval, tolerance=config.jitter)
    if adaptive is False:
        return None
    return adaptive


async def _load_learned(learner: IntervalLearner | None) -> None:
    """Read what the learner's store kept for its network, once."""
    if learner is None or learner.loaded or learner.store is None:
        return
    learner.loaded = True
    state = await learner.store.load(learner.key)
    if state is not None:
        change = learner.restore(state)
        if change is not None:
            logger.info(
                "heartbeat interval for network %r: %g s, as learned before",
                learner.key,
                change.new,
            )


async def _handshake(
    conn: HeartbeatConnection,
    config: ClientConfig,
    learner: IntervalLearner | None = None,
) -> Negotiated:
    """Send HELLO, adopt the server's answer; on failure, end the connection
    (CLOSE 7 where it is ours to send) and raise :class:`ConnectionClosed`.

    Kernel keepalive is set once the interval is known: ``user_timeout=AUTO``
    is the dead-server bound with the interval the server granted.
    """
    try:
        with trio.move_on_after(config.handshake_timeout):
            negotiated = await conn.handshake(_hello_fields(config, learner))
            if learner is None and negotiated.interval != config.interval:
                # The server clamps the wish into [min_interval, timeout / 2]:
                # worth a warning when the interval was chosen, not defaulted.
                chosen = config.interval != DEFAULT_INTERVAL
                logger.log(
                    logging.WARNING if chosen else logging.INFO,
                    "%s grants a heartbeat interval of %g s, not the %g s asked "
                    "(its timeout: %g s)",
                    conn.peer,
                    negotiated.interval,
                    config.interval,
                    negotiated.timeout,
                )
            apply_keepalive(
                conn.stream, config.keepalive, negotiated.detection_bound(config)
            )
            return negotiated
        conn.session.record(
            CloseInfo(
                CloseCode.HANDSHAKE_FAILED,
                f"no HELLO from the server within {config.handshake_timeout:g} s",
                False,
                DisconnectReason.HANDSHAKE_FAILED,
            )
        )
    except ConnectionClosed as exc:
        cause = exc.__cause__  # what broke, such as a TLS certificate refused
    except BaseException:
        await conn.close_stream()
        raise
    else:
        cause = None
    await conn.end(CloseCode.HANDSHAKE_FAILED, "", DisconnectReason.HANDSHAKE_FAILED)
    raise conn.session.error() from cause


@attrs.define
class _Probe:
    """An adaptive client's probe under way: the evidence about the path."""

    learner: IntervalLearner
    #: The idle period the unanswered PING ended, else None.
    idle: float | None = None
    #: When that PING was sent.
    sent: float = -math.inf

    #: When the body of the connection ended, and the last traffic before.
    ended_at: float = math.inf
    last_traffic: float = -math.inf

    def note_end(self, conn: HeartbeatConnection) -> None:
        """Note when the connection stopped (the first time only): closing it
        afterwards takes a while, and the heartbeat may still write."""
        if self.ended_at == math.inf:
            self.ended_at = trio.current_time()
            self.last_traffic = max(conn.last_sent, conn.last_received)

    async def watch(self, conn: HeartbeatConnection) -> None:
        """Note the moment the connection's input ends."""
        await conn.wait_input_ended()
        self.note_end(conn)

    async def connection_ended(self, conn: HeartbeatConnection) -> None:
        """Lost (no CLOSE) while a PING waited for its answer, or while idle:
        the idle time killed the link (a middlebox that closes idle flows
        ends them so)."""
        info = conn.session.close_info
        if info is None or info.code is not None:
            return  # open, or closed with a CLOSE frame: said, not lost
        if info.disconnect_reason not in (
            DisconnectReason.CONNECTION_LOST,
            DisconnectReason.CLOSED_BY_PEER,  # the stream ended, no CLOSE
        ):
            return
        if (
            self.idle is not None
            and self.sent <= self.ended_at
            and self.last_traffic <= self.sent
        ):
            idle = self.idle  # its PING was out, unanswered
        else:
            idle = self.ended_at - self.last_traffic
        self.idle = None
        change = self.learner.failed(idle)
        await _apply_change(self.learner, change, None, conn)


async def _apply_change(
    learner: IntervalLearner,
    change: IntervalChange | None,
    use: Callable[[float], None] | None,
    conn: HeartbeatConnection,
) -> None:
    """Use the learner's new interval, log it, keep it in its store."""
    if change is None:
        return
    if use is not None:
        use(change.new)
    extra = {
        "event": "interval",
        "peer": conn.peer,
        "old": change.old,
        "new": change.new,
        "reason": change.reason,
        "network": learner.key,
    }
    if change.new == change.old:
        logger.info(
            "%s: heartbeat interval stays at %g s (%s)",
            conn.peer,
            change.new,
            change.reason,
            extra=extra,
        )
    else:
        logger.info(
            "%s: heartbeat interval %g s -> %g s (%s)",
            conn.peer,
            change.old,
            change.new,
            change.reason,
            extra=extra,
        )
    if learner.store is not None:
        await learner.store.save(learner.key, learner.state())


async def _heartbeat_loop(
    conn: HeartbeatConnection,
    config: ClientConfig,
    negotiated: Negotiated,
    ping_payload: PingPayload | None,
    rng: random.Random,
    probe: _Probe | None = None,
) -> None:
    """Run the retry rule until the connection ends or the server is dead.

    With a learner, each idle period that ends in an answer, or in a dead
    link, is reported to it, and its interval is used from then on.
    """
    # Never PING closer together than the server allows.
    retry_interval = max(config.retry_interval, negotiated.min_interval)
    if config.detector == "phi":
        conn.session.detector = PhiAccrual.from_settings(config, None, retry_interval)
    schedule = RetrySchedule(
        negotiated.interval,
        retry_interval,
        config.retries,
        jitter=config.jitter,
        rng=rng,
        detector=conn.session.detector,
    )
    learner = None if probe is None else probe.learner
    if learner is not None:
        schedule.jitter_below = True
        schedule.set_interval(learner.interval)
    wake = math.inf
    try:
        while True:
            now = trio.current_time()
            if now - wake > STALL_TOLERANCE:
                # We were stalled (asleep, frozen): that is no evidence against
                # the server. Let the reader take what arrived meanwhile, then
                # probe afresh before any verdict.
                logger.info(
                    "%s: this side was stalled for %.1f s; probing afresh",
                    conn.peer,
                    now - wake,
                )
                await trio.lowlevel.checkpoint()
                now = trio.current_time()
                schedule.stalled(now)
            if (
                probe is not None
                and learner is not None
                and schedule.take_answer(conn.last_received)
                and probe.idle is not None
            ):
                # Before deciding on the next PING: it follows the new interval.
                change = learner.succeeded(probe.idle)
                probe.idle = None
                await _apply_change(learner, change, schedule.set_interval, conn)
            action = schedule.poll(now, conn.last_sent, conn.last_received)
            if probe is not None and learner is not None:
                if action is Action.PING:
                    probe.idle = now - max(conn.last_sent, conn.last_received)
                    probe.sent = now
                elif action is Action.DEAD and probe.idle is not None:
                    change = learner.failed(probe.idle)
                    probe.idle = None
                    await _apply_change(learner, change, schedule.set_interval, conn)
            if action is Action.DEAD:
                verdict = schedule.verdict_after
                logger.warning(
                    "server %s declared dead: %d PINGs unanswered over %g s",
                    conn.peer,
                    config.retries + 1,
                    verdict,
                    extra={
                        "event": "server_dead",
                        "peer": conn.peer,
                        "reason": "heartbeat_timeout",
                        "pings": config.retries + 1,
                        "duration": verdict,
                    },
                )
                await conn.abort(
                    CloseInfo(
                        None,
                        f"{config.retries + 1} PINGs unanswered over {verdict:g} s",
                        False,
                        DisconnectReason.HEARTBEAT_TIMEOUT,
                        HeartbeatTimeout,
                    )
                )
                return
            if action is not Action.NOTHING:
                if action is Action.RESEND:
                    logger.info("no answer from %s: resending PING", conn.peer)
                # Bounded by the attempt's deadline, sending included: a send
                # stuck behind a blocked DATA frame (a dead peer's full window)
                # must not hold up the verdict.
                with trio.move_on_at(schedule.attempt_deadline()):
                    payload = ping_payload() if ping_payload is not None else b""
                    await conn.send_heartbeat(payload, resend=action is Action.RESEND)
            # The idle deadline moves whenever something is sent or received,
            # so poll() re-checks on waking; no task is woken per send.
            wake = schedule.next_wakeup(conn.last_sent, conn.last_received)
            await trio.sleep_until(wake)
            wake = max(wake, now)
    except ConnectionClosed:
        return  # the connection ended some other way; its reason is recorded


@asynccontextmanager
async def _run_connected(
    conn: HeartbeatConnection,
    config: ClientConfig,
    negotiated: Negotiated,
    ping_payload: PingPayload | None,
    rng: random.Random,
    learner: IntervalLearner | None = None,
) -> AsyncIterator[HeartbeatConnection]:
    """Run the reader and the heartbeat loop beside the body; close afterwards.

    If the connection dies while the body is busy elsewhere (server declared
    dead, server closed), the body is cancelled and the connection's exception
    is raised from the ``async with``.
    """
    body_scope = trio.CancelScope()
    probe = None
    if learner is not None and config.enabled:
        learner.tolerance = max(learner.tolerance, config.jitter)
        learner.bound(negotiated.min_interval, negotiated.interval)
        conn.learner = learner
        probe = _Probe(learner)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run_reader)
            if probe is not None:
                nursery.start_soon(probe.watch, conn)
            if config.enabled:
                nursery.start_soon(
                    _heartbeat_loop, conn, config, negotiated, ping_payload, rng, probe
                )
            try:
                with body_scope:
                    conn.bind_scope(body_scope)
                    yield conn
            finally:
                if probe is not None:
                    probe.note_end(conn)
                conn.bind_scope(None)
                await conn.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise unwrap(group) from None
    finally:
        if probe is not None:
            with trio.CancelScope(shield=True):
                await probe.connection_ended(conn)
    if body_scope.cancelled_caught:
        error = conn.close_error
        assert error is not None
        raise error


@asynccontextmanager
async def connect_stream(
    stream: trio.abc.Stream,
    *,
    config: ClientConfig | None = None,
    ping_payload: PingPayload | None = None,
    on_pong: OnPong | None = None,
    rng: random.Random | None = None,
    adaptive: bool | IntervalLearner = False,
) -> AsyncIterator[HeartbeatConnection]:
    """Speak the heartbeat protocol, as the client, over an open stream.

    Sends HELLO, adopts the server's answer, then runs the heartbeat loop beside
    the body of the ``async with``. ``ping_payload()`` supplies each PING's
    bytes; ``on_pong(payload)`` receives each PONG's (for example an unread
    count the server piggybacks). On exit the connection is closed with
    CLOSE(0). Raises :class:`ConnectionClosed` if the handshake fails or the
    server refuses (its CLOSE code is on the exception), and
    :class:`HeartbeatTimeout` if the server is declared dead.

    ``adaptive=True`` learns the longest interval the path allows, from
    ``config.interval`` up to the server's ``timeout`` / 2 (an
    :class:`IntervalLearner` instead sets the steps, the range and where the
    result is kept; see :doc:`/mobile`). ``conn.learner`` is the learner, and
    :meth:`HeartbeatConnection.stats` shows the interval in use.
    """
    config = config or ClientConfig()
    learner = adaptive_learner(adaptive, config)
    await _load_learned(learner)
    conn = _new_connection(stream, config, on_pong)
    negotiated = await _handshake(conn, config, learner)
    async with _run_connected(
        conn, config, negotiated, ping_payload, rng or random.Random(), learner
    ) as connected:
        yield connected


@asynccontextmanager
async def open_connection(
    host: str,
    port: int,
    *,
    config: ClientConfig | None = None,
    ping_payload: PingPayload | None = None,
    on_pong: OnPong | None = None,
    ssl_context: ssl.SSLContext | None = None,
    adaptive: bool | IntervalLearner = False,
) -> AsyncIterator[HeartbeatConnection]:
    """Connect over TCP (TLS with ``ssl_context``) and run the heartbeat client.

    See :func:`connect_stream`. ``OSError`` (connection refused, unreachable)
    propagates from the connect. With TLS, the handshake runs inside the
    handshake timeout, and a certificate problem raises
    :class:`ConnectionClosed` whose reason carries the TLS error.
    """
    stream: trio.abc.Stream
    if ssl_context is None:
        stream = await trio.open_tcp_stream(host, port)
    else:
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl_context
        )
    async with connect_stream(
        stream,
        config=config,
        ping_payload=ping_payload,
        on_pong=on_pong,
        adaptive=adaptive,
    ) as conn:
        yield conn


class ConnectionAttempt:
    """One connection of a :class:`Reconnector` loop.

    Enter it with ``async with attempt as conn``. A connection failure inside
    (server declared dead, closed, lost) ends the block quietly and is kept in
    :attr:`failure`, and the loop reconnects; any other exception propagates.
    That holds for failures raised in tasks of a nursery inside the block too,
    however deeply their exception groups nest, as long as they hold nothing
    but connection failures.
    """

    def __init__(
        self,
        reconnector: Reconnector,
        conn: HeartbeatConnection,
        negotiated: Negotiated,
        number: int,
        delay: float,
    ) -> None:
        self._reconnector = reconnector
        self._conn = conn
        self._negotiated = negotiated
        self._manager: Any = None
        self._entered = False
        #: 1 for the first connection, counting successful connections only.
        self.number = number
        #: Backoff delay slept before this connection was made.
        self.delay = delay
        #: What ended this connection, once it has ended: a
        #: :class:`ConnectionClosed` (:class:`HeartbeatTimeout` when the server
        #: was declared dead), or an ``OSError``; ``None`` if the body returned
        #: (or the server closed normally, CLOSE 0).
        self.failure: BaseException | None = None
        #: When the handshake completed (``trio.current_time()``).
        self.connected_at = trio.current_time()

    async def __aenter__(self) -> HeartbeatConnection:
        if self._entered:
            raise RuntimeError("a ConnectionAttempt can be entered only once")
        self._entered = True
        r = self._reconnector
        self._manager = _run_connected(
            self._conn, r.config, self._negotiated, r.ping_payload, r.rng, r.learner
        )
        conn: HeartbeatConnection = await self._manager.__aenter__()
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            await self._manager.__aexit__(exc_type, exc_value, traceback)
        except BaseException as raised:
            failure = only(raised, CONNECTION_FAILURES)
            if failure is None:
                raise
            self._ended(failure)
            return True
        failure = None if exc_value is None else only(exc_value, CONNECTION_FAILURES)
        self._ended(failure)
        return failure is not None

    def _ended(self, failure: BaseException | None) -> None:
        self.failure = failure
        self._reconnector.attempt_ended(self, failure)

    async def discard(self) -> None:
        """Close an attempt the loop moved past without entering it."""
        if not self._entered:
            self._entered = True
            await self._conn.aclose()
            self._reconnector.attempt_ended(self, None)


class Reconnector:
    """Keep a connection up, reconnecting with backoff.

    ``open_stream()`` makes each new transport (TCP, TLS, a Unix socket...);
    :func:`reconnecting` is the TCP shorthand::

        async for attempt in reconnecting("example.net", 5005):
            async with attempt as conn:
                async for data in conn:
                    ...
            print("connection ended:", attempt.failure)

    Each iteration sleeps the backoff delay (none before the first), connects
    and completes the handshake, retrying failed connects until one succeeds.
    A connection that stayed up for ``backoff.reset_after`` seconds resets the
    backoff. Break out of the loop to stop.

    Failures, both kinds: a connect or handshake that failed (the loop tries
    again), and a connection that ended (also in ``attempt.failure``). Each is
    logged, kept in :attr:`last_failure`, and passed to ``on_failure(exc,
    next_window)`` if given, with ``exc.connecting`` set to ``True`` for the
    first kind and ``False`` for the second. ``on_failure`` may raise to stop
    the loop: the exception comes out of the ``async for``.

    A failure that retrying cannot cure or must not (``is_permanent(exc)``; by
    default a TLS certificate that does not verify, or a connection replaced
    by a newer session of its ``client_id``, CLOSE(8)) is raised from the
    ``async for`` instead of retried: at once when connecting, at the next
    iteration when a connection ended so.

    ``on_pong(payload)`` is given to every connection; to tell connections
    apart, set ``conn.on_pong`` inside the attempt instead.

    ``adaptive`` is :func:`connect_stream`'s; the one learner (also
    :attr:`learner`) carries what it learned from each connection to the next.
    """

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]],
        *,
        config: ClientConfig | None = None,
        backoff: Backoff | None = None,
        ping_payload: PingPayload | None = None,
        on_pong: OnPong | None = None,
        on_failure: Callable[[BaseException, float], object] | None = None,
        is_permanent: Callable[[BaseException], bool] = is_permanent,
        rng: random.Random | None = None,
        name: str = "server",
        adaptive: bool | IntervalLearner = False,
    ) -> None:
        self.open_stream = open_stream
        self.config = config or ClientConfig()
        self.backoff = backoff or Backoff()
        self.ping_payload = ping_payload
        self.on_pong = on_pong
        self.on_failure = on_failure
        self.is_permanent = is_permanent
        self.rng = rng or random.Random()
        self.name = name
        #: The adaptive interval's learner, shared by all connections (None:
        #: a fixed interval).
        self.learner = adaptive_learner(adaptive, self.config)
        self.last_failure: BaseException | None = None
        #: Connections made so far (successful handshakes).
        self.connections = 0
        self._pending: ConnectionAttempt | None = None
        self._delay_next = False
        self._permanent: BaseException | None = None

    def __aiter__(self) -> Reconnector:
        return self

    def _failed(self, failure: BaseException, connecting: bool) -> None:
        self.last_failure = failure
        what = "could not connect to" if connecting else "connection ended to"
        reason = getattr(failure, "disconnect_reason", None)
        logger.warning(
            "%s %s: %s",
            what,
            self.name,
            failure or type(failure).__name__,
            extra={
                "event": "connect_failed" if connecting else "connection_ended",
                "peer": self.name,
                "reason": None if reason is None else reason.name.lower(),
                "code": getattr(failure, "code", None),
                "detail": str(failure) or type(failure).__name__,
            },
        )
        failure.connecting = connecting  # type: ignore[attr-defined]
        if self.on_failure is not None:
            self.on_failure(failure, self.backoff.window())

    def attempt_ended(
        self, attempt: ConnectionAttempt, failure: BaseException | None
    ) -> None:
        """Called by a :class:`ConnectionAttempt` when its connection ended."""
        self.backoff.connection_ended(trio.current_time() - attempt.connected_at)
        if failure is not None:
            self._failed(failure, connecting=False)
            if self.is_permanent(failure):
                self._permanent = failure
        if (
            isinstance(failure, ConnectionClosed)
            and failure.code == CloseCode.TOO_MANY_PINGS
        ):
            # The server found us too chatty: slow down, as gRPC clients do.
            interval = self.config.interval * 2
            logger.warning(
                "%s says too many pings: interval doubled to %g s", self.name, interval
            )
            self.config = attrs.evolve(self.config, interval=interval)

    async def _connect(self) -> tuple[HeartbeatConnection, Negotiated]:
        await _load_learned(self.learner)
        stream = await self.open_stream()
        conn = _new_connection(stream, self.config, self.on_pong)
        return conn, await _handshake(conn, self.config, self.learner)

    async def __anext__(self) -> ConnectionAttempt:
        if self._pending is not None:
            await self._pending.discard()
            self._pending = None
        if self._permanent is not None:
            raise self._permanent
        while True:
            delay = self.backoff.next_delay() if self._delay_next else 0.0
            self._delay_next = True
            if delay:
                logger.info("reconnecting to %s in %.2f s", self.name, delay)
                await trio.sleep(delay)
            try:
                conn, negotiated = await self._connect()
            except CONNECTION_FAILURES as exc:
                self._failed(exc, connecting=True)
                if self.is_permanent(exc):
                    raise
                continue
            self.connections += 1
            attempt = ConnectionAttempt(self, conn, negotiated, self.connections, delay)
            self._pending = attempt
            return attempt


def reconnecting(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    **kwargs: Any,
) -> Reconnector:
    """A :class:`Reconnector` over TCP (TLS with ``ssl_context``) to ``host:port``.

    Other keyword options are :class:`Reconnector`'s; ``name`` (for logs)
    defaults to ``host:port``.
    """
    open_stream: Callable[[], Awaitable[trio.abc.Stream]]
    if ssl_context is None:
        open_stream = partial(trio.open_tcp_stream, host, port)
    else:
        open_stream = partial(
            trio.open_ssl_over_tcp_stream, host, port, ssl_context=ssl_context
        )
    kwargs.setdefault("name", f"{host}:{port}")
    return Reconnector(open_stream, **kwargs)
