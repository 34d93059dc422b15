"""``serve --workers N``: N server processes sharing one port, supervised.

One Trio process uses one core. With SO_REUSEPORT, several processes listen on
the same address and the kernel spreads new connections across them. The
supervisor starts the workers, restarts one that dies, and on SIGINT/SIGTERM
passes SIGTERM on, so every worker closes its clients with CLOSE(5).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from typing import Final

import trio

from trio_heartbeat import ServerMetrics

__all__ = ["open_reuse_port_listener", "supervise"]

logger = logging.getLogger("trio_heartbeat.workers")

#: A worker that dies sooner than this after starting is restarted only after
#: this long, so a worker that crashes at start does not spin the supervisor.
RESTART_DELAY: Final = 1.0


class ReusePortUnavailable(RuntimeError):
    pass


def check_reuse_port() -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ReusePortUnavailable(
            f"--workers needs SO_REUSEPORT, which {sys.platform} does not offer; "
            "run one worker per port behind a load balancer instead"
        )


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    check_reuse_port()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A TCP listener that shares ``host:port`` with the other workers."""
    sock = _reuse_port_socket(host, port)
    sock.listen(socket.SOMAXCONN)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        line += chunk
    return line


async def _run_worker(
    index: int,
    command: list[str],
    ready: trio.MemorySendChannel[int],
    stopping: trio.Event,
    metrics: dict[int, tuple[str, int]],
) -> None:
    """Run worker ``index``, restarting it whenever it dies unasked. While it
    runs, ``metrics[index]`` is where it serves its figures (if it does)."""
    while not stopping.is_set():
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
            )
            assert process.stdout is not None
            line = await _read_line(process.stdout)
            if line.startswith(b"listening on"):
                if "--metrics-port" in command:
                    shown = await _read_line(
                        process.stdout
                    )  # metrics on http://H:P/...
                    address = shown.decode().strip().split("//", 1)[-1]
                    host, _, port = address.split("/", 1)[0].rpartition(":")
                    if port.isdigit():
                        metrics[index] = (host, int(port))
                logger.info("worker %d (pid %d) ready", index, process.pid)
                await ready.send(index)

            async def forward_stop(process: trio.Process = process) -> None:
                await stopping.wait()
                process.send_signal(signal.SIGTERM)

            nursery.start_soon(forward_stop)
            try:
                code = await process.wait()
            finally:
                metrics.pop(index, None)  # no stale figures from a dead worker
            nursery.cancel_scope.cancel()
        if stopping.is_set():
            logger.info("worker %d stopped (exit %d)", index, code)
            return
        logger.warning("worker %d (pid %d) exited with %d: restarting", index,
                       process.pid, code)  # fmt: skip
        if trio.current_time() - started < RESTART_DELAY:
            await trio.sleep(RESTART_DELAY)


async def _workers_total(addresses: dict[int, tuple[str, int]]) -> ServerMetrics:
    """The live workers' figures, added up (a worker that does not answer in
    time is left out, and logged)."""
    from trio_heartbeat._prometheus import fetch_metrics

    parts: list[ServerMetrics] = []

    async def fetch(index: int, host: str, port: int) -> None:
        try:
            parts.append(await fetch_metrics(host, port))
        except (OSError, trio.TooSlowError, ValueError) as exc:
            logger.warning("worker %d gave no metrics: %r", index, exc)

    async with trio.open_nursery() as nursery:
        for index, (host, port) in list(addresses.items()):
            nursery.start_soon(fetch, index, host, port)
    return ServerMetrics.total(parts)


async def supervise(
    workers: int,
    host: str,
    port: int,
    worker_args: Sequence[str],
    metrics: tuple[str, int] | None = None,
) -> int:
    """Start ``workers`` copies of ``serve`` on ``host:port``; return the exit code.

    ``port`` 0 picks a free port for all of them. Prints one ``listening on
    HOST:PORT`` line once every worker is ready. With ``metrics`` (host, port),
    serves ``/metrics`` there: the sum of the workers' own (they must be
    started with ``--metrics-port``).
    """
    # Hold the port (bound, not listening) so port 0 resolves once for all.
    holder = _reuse_port_socket(host, port)
    port = holder.getsockname()[1]
    command = [sys.executable, "-m", "trio_heartbeat", "serve", "--host", host,
               "--port", str(port), "--reuse-port", *worker_args]  # fmt: skip
    stopping = trio.Event()
    send_ready, receive_ready = trio.open_memory_channel[int](workers)
    addresses: dict[int, tuple[str, int]] = {}
    metrics_address = None
    try:
        async with trio.open_nursery() as outer:
            if metrics is not None:
                from trio_heartbeat._prometheus import serve_metrics

                metrics_address = await outer.start(
                    serve_metrics, partial(_workers_total, addresses), *metrics
                )
            async with trio.open_nursery() as nursery:
                for index in range(workers):
                    nursery.start_soon(
                        _run_worker, index, command, send_ready, stopping, addresses
                    )
                started: set[int] = set()
                with trio.open_signal_receiver(
                    signal.SIGINT, signal.SIGTERM
                ) as signals:

                    async def announce() -> None:
                        async for index in receive_ready:
                            started.add(index)
                            if len(started) == workers:
                                shown = f"[{host}]" if ":" in host else host
                                print(f"listening on {shown}:{port}", flush=True)
                                if metrics_address is not None:
                                    m_host, m_port = metrics_address
                                    print(
                                        f"metrics on http://{m_host}:{m_port}/metrics",
                                        flush=True,
                                    )
                                holder.close()
                                return

                    nursery.start_soon(announce)
                    async for signum in signals:
                        logger.info(
                            "%s received: stopping %d workers",
                            signal.Signals(signum).name,
                            workers,
                        )
                        stopping.set()
                        break
            # Every worker has stopped: so does the metrics endpoint.
            outer.cancel_scope.cancel()
    finally:
        holder.close()
    return 0
