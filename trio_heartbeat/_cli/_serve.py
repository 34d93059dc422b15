"""``serve``: the demo server (upper-casing echo), one process or N workers."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import attrs
import trio

from trio_heartbeat import (
    Duplicate,
    HeartbeatConnection,
    HeartbeatServer,
    MemoryPresence,
    Presence,
    RedisPresence,
    ServerConfig,
    ServerMetrics,
    per_message,
    serve_legacy_listeners,
)

from ._options import (
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_USAGE,
    LEGACY_PROTOCOLS,
    strip_options,
)
from ._status import process_status
from ._workers import (
    ReusePortUnavailable,
    check_reuse_port,
    open_reuse_port_listener,
    supervise,
)

__all__ = ["run_serve"]

logger = logging.getLogger("trio_heartbeat.cli")


@per_message
async def echo_upper(conn: HeartbeatConnection, data: bytes) -> None:
    """The demo application of the classic heartbeat servers: answer each DATA
    upper-cased. Per message, so the server runs one task per connection."""
    await conn.send(data.upper())


def raise_fd_limit() -> None:
    """Raise the soft limit on open file descriptors to the hard one, as
    nginx's ``worker_rlimit_nofile`` does: each connection holds one, and the
    usual soft default (1,024) would cap the server near 1,000 clients. Logs
    the resulting capacity."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            logger.warning("could not raise the file descriptor limit: %s", exc)
        else:
            soft = target
    logger.info(
        "file descriptors: up to %s, room for about %s connections",
        soft,
        "unlimited" if soft == resource.RLIM_INFINITY else max(0, soft - 50),
        extra={"event": "fd_limit"},
    )


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


#: How often ``serve`` freezes what its connections made (seconds).
FREEZE_PERIOD = 1.0


async def freeze_settled(period: float = FREEZE_PERIOD) -> None:
    """Every ``period``, freeze whatever the collector tracks (run as a task).

    A connection renews about 17 tracked objects each time its reader goes back
    to waiting (Trio's coroutines, the wait's closure and records), so with
    steady heartbeats every connection's waiting state is *young* again within
    one interval. The collector's allocation count hardly moves meanwhile (each
    new object replaces one freed), so no young collection comes: the young
    generation grows to every connection's waiting state, and the collection
    that finally comes (a burst of kicks or of new clients tips it) walks all
    of it while nothing else runs. 16,000 connections at one PING per 24 s:
    245,000 young objects, collections of 90-140 ms in one process and of
    0.7-1 s with six workers sharing two cores (PONGs waited up to 2 s).

    Frozen every second (``gc.freeze``, which only moves a list), a collection
    walks at most one second's worth; frozen objects are still freed by
    reference counting when they end. What a frozen object could leak is a
    *cycle*, which the collector no longer looks at: ``serve``'s path (a
    per-message handler) makes none, in heartbeats or in any way a
    connection ends (tests/test_gc.py; a full audit after 16,000 connections,
    33,000 PINGs and 1,667 kicks found no unreachable object).
    """
    while True:
        await trio.sleep(period)
        gc.freeze()


async def _serve(
    config: ServerConfig,
    host: str,
    port: int,
    legacy: bool,
    reuse_port: bool,
    tls: ssl.SSLContext | None,
    metrics: tuple[str, int] | None = None,
    presence: PresenceOptions | None = None,
) -> int:
    raise_fd_limit()
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
    server: HeartbeatServer | None = None
    if legacy:
        serve: Any = partial(serve_legacy_listeners, tcp, config=config)
    else:
        store: Presence | None = None
        duplicate: Duplicate = "allow"
        if presence is not None:
            store = presence.store(worker=reuse_port)
            duplicate = presence.duplicate
        server = HeartbeatServer(
            echo_upper, config=config, presence=store, duplicate=duplicate
        )
        serve = partial(server.serve_listeners, tcp)
    async with trio.open_nursery() as nursery:
        listeners: list[Any] = await nursery.start(serve)
        metrics_address = None
        if metrics is not None and server is not None:
            from trio_heartbeat._prometheus import serve_metrics

            async def snapshot(server: HeartbeatServer = server) -> ServerMetrics:
                return server.metrics()

            try:
                metrics_address = await nursery.start(serve_metrics, snapshot, *metrics)
            except OSError as exc:
                print(f"cannot serve metrics on {metrics[0]}:{metrics[1]}: {exc}",
                      file=sys.stderr)  # fmt: skip
                nursery.cancel_scope.cancel()
                return EXIT_CONNECTION
        _freeze_startup_objects()
        if server is not None:
            nursery.start_soon(freeze_settled)
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
            if metrics_address is not None:
                host_shown, metrics_port = metrics_address
                print(f"metrics on http://{host_shown}:{metrics_port}/metrics",
                      flush=True)  # fmt: skip
            async for signum in signals:
                if signum in status_signals:
                    logger.warning("status: %s", _status_line(server))
                    continue
                logger.info(
                    "%s received: closing every connection", signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break
    return EXIT_OK


def _status_line(server: HeartbeatServer | None) -> str:
    """The SIGUSR1 line: the process, then the server's own figures."""
    line = process_status()
    if server is not None:
        figures = server.statistics()
        line += (
            f" connections={figures.connections}"
            f" lag_max_ms={figures.loop_lag_max * 1000:.1f}"
            f" lag_p99_ms={figures.loop_lag_p99 * 1000:.1f}"
            f" stalled_s={figures.stalled:.1f}"
        )
    return line


def _run_workers(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Re-run this command line as N workers under a supervisor."""
    try:
        check_reuse_port()
    except ReusePortUnavailable as exc:
        print(f"python -m trio_heartbeat serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    forwarded = strip_options(
        argv, ("--workers", "--host", "--port", "--metrics-port", "--metrics-host")
    )
    metrics = None
    if args.metrics_port is not None:
        # Each worker serves its figures on a loopback port of its own; the
        # supervisor answers scrapes with their sum.
        forwarded += ["--metrics-host", "127.0.0.1", "--metrics-port", "0"]
        metrics = (args.metrics_host, args.metrics_port)
    raise_fd_limit()
    return trio.run(supervise, args.workers, args.host, args.port, forwarded, metrics)


@attrs.frozen
class PresenceOptions:
    """``serve``'s presence flags."""

    url: str
    node_id: str | None
    ttl: float
    duplicate: Duplicate

    def store(self, *, worker: bool) -> Presence:
        node = self.node_id
        if node is not None and worker:  # one name per worker process
            node = f"{node}/{os.getpid()}"
        if self.url == "memory":
            return MemoryPresence(node)
        return RedisPresence(self.url, node=node, ttl=self.ttl)


def run_serve(
    args: argparse.Namespace,
    config: ServerConfig,
    tls: ssl.SSLContext | None,
    argv: Sequence[str],
) -> int:
    """Run ``serve`` as parsed; ``argv`` is its own arguments (for workers)."""
    if args.workers > 1:
        return _run_workers(args, argv)
    legacy = args.protocol in LEGACY_PROTOCOLS
    metrics = None
    if args.metrics_port is not None:
        metrics = (args.metrics_host, args.metrics_port)
    presence = PresenceOptions(
        args.presence, args.node_id, args.presence_ttl, args.duplicate
    )
    return trio.run(
        _serve, config, args.host, args.port, legacy, args.reuse_port, tls, metrics,
        None if legacy else presence,
    )  # fmt: skip
