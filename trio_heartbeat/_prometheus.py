"""``/metrics`` for Prometheus, served from the server's own Trio run.

Needs the ``metrics`` extra (``prometheus_client``), imported only when a
metrics port is asked for. Each scrape takes one :class:`ServerMetrics`
snapshot (in a single process, from the server; under ``--workers``, the
workers' snapshots added up by the supervisor) and renders it with
prometheus_client's text format: no thread per scrape, nothing counted on
the heartbeat path.

The endpoint speaks just enough HTTP/1.1 for scrapers and ``curl``: ``GET
/metrics`` (Prometheus text), ``GET /metrics.json`` (the snapshot as JSON, what
the supervisor reads from its workers), 404 otherwise; one request per
connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import trio

from ._metrics import ServerMetrics

__all__ = ["fetch_metrics", "render", "serve_metrics"]

logger = logging.getLogger("trio_heartbeat.metrics")

#: A request head larger than this, or slower than REQUEST_TIMEOUT, is refused.
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 10.0


class _Collector:
    """A prometheus_client collector over one snapshot."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        m = self.metrics
        p = "trio_heartbeat_"
        yield GaugeMetricFamily(
            p + "connections", "Open connections (handshaking included).",
            value=m.connections,
        )  # fmt: skip
        yield CounterMetricFamily(
            p + "connections_opened", "Connections accepted.",
            value=m.connections_opened,
        )  # fmt: skip
        failures = CounterMetricFamily(
            p + "handshake_failures",
            "Connections refused before or during the handshake, by CLOSE code.",
            labels=["code"],
        )
        for code, count in sorted(m.handshake_failures.items()):
            failures.add_metric([code], count)
        yield failures
        disconnects = CounterMetricFamily(
            p + "disconnects", "Connections that ended, by reason.", labels=["reason"]
        )
        for reason, count in sorted(m.disconnects.items()):
            disconnects.add_metric([reason], count)
        yield disconnects
        yield CounterMetricFamily(
            p + "pings_received", "PING frames received.", value=m.pings_received
        )
        yield CounterMetricFamily(
            p + "pongs_sent", "PONG frames sent.", value=m.pongs_sent
        )
        frames = CounterMetricFamily(
            p + "frames_received", "Frames received, by type.", labels=["type"]
        )
        for kind, count in m.frames_received.items():
            frames.add_metric([kind], count)
        yield frames
        yield CounterMetricFamily(
            p + "received_bytes", "Bytes received.", value=m.bytes_received
        )
        yield CounterMetricFamily(p + "sent_bytes", "Bytes sent.", value=m.bytes_sent)
        yield from _histogram(
            p + "loop_lag",
            "How late the server's own event loop woke a probe task.",
            m.loop_lag_buckets, m.loop_lag_sum,
            "The worst loop lateness so far.", m.loop_lag_max,
        )  # fmt: skip
        yield CounterMetricFamily(
            p + "stalled_seconds",
            "Seconds the server was stalled, counted against no client.",
            value=m.stalled_seconds,
        )
        yield from _histogram(
            p + "kick_lateness",
            "How late heartbeat-timeout kicks came, against when they were due.",
            m.kick_lateness_buckets, m.kick_lateness_sum,
            "The latest kick so far.", m.kick_lateness_max,
        )  # fmt: skip
        yield GaugeMetricFamily(
            p + "presence_listed",
            "Sessions this server lists in its presence store.",
            value=m.presence_listed,
        )
        yield GaugeMetricFamily(
            p + "presence_unreachable",
            "Servers (workers) that cannot reach their presence store now.",
            value=m.presence_unreachable,
        )
        yield GaugeMetricFamily(
            p + "workers", "Server processes summed in these figures.",
            value=m.workers,
        )  # fmt: skip


def _histogram(
    name: str,
    documentation: str,
    buckets: tuple[tuple[float, int], ...],
    total: float,
    max_documentation: str,
    maximum: float,
) -> Iterator[Any]:
    """``{name}_seconds`` (a histogram) and ``{name}_max_seconds`` (a gauge)."""
    from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

    yield HistogramMetricFamily(
        name + "_seconds", documentation, buckets=_cumulative(buckets),
        sum_value=total,
    )  # fmt: skip
    yield GaugeMetricFamily(name + "_max_seconds", max_documentation, value=maximum)


def _cumulative(
    buckets: tuple[tuple[float, int], ...],
) -> list[tuple[str, int]]:
    """Per-bucket counts as Prometheus's cumulative ``le`` buckets."""
    cumulative, out = 0, []
    for le, count in buckets:
        cumulative += count
        out.append(("+Inf" if math.isinf(le) else repr(le), cumulative))
    return out


def render(metrics: ServerMetrics) -> bytes:
    """The Prometheus text format of one snapshot."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics))
    return generate_latest(registry)


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _answer(
    snapshot: Callable[[], Awaitable[ServerMetrics]], stream: trio.abc.Stream
) -> None:
    async with stream:
        head = b""
        with trio.move_on_after(REQUEST_TIMEOUT):
            while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        if b"\r\n\r\n" not in head:
            return  # slow, huge or cut: no answer
        method, _, rest = head.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method not in (b"GET", b"HEAD"):
            reply = _response("405 Method Not Allowed", "text/plain", b"GET only\n")
        elif path == b"/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            reply = _response("200 OK", CONTENT_TYPE_LATEST, render(await snapshot()))
        elif path == b"/metrics.json":
            body = json.dumps((await snapshot()).to_json()).encode()
            reply = _response("200 OK", "application/json", body)
        else:
            reply = _response("404 Not Found", "text/plain", b"try /metrics\n")
        if method == b"HEAD":
            reply = reply.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(reply)  # unless the scraper went away


async def serve_metrics(
    snapshot: Callable[[], Awaitable[ServerMetrics]],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` on ``host:port`` forever; started, it reports the
    address it listens on (``port`` 0 picks one)."""
    import prometheus_client  # noqa: F401  (fail here, before listening)

    listeners = await trio.open_tcp_listeners(port, host=host)
    address = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(trio.serve_listeners, partial(_answer, snapshot), listeners)
        )
        task_status.started((address[0], address[1]))


#: How long a worker has to answer the supervisor's scrape.
WORKER_TIMEOUT = 2.0


async def fetch_metrics(host: str, port: int) -> ServerMetrics:
    """GET ``/metrics.json`` from a worker; raises ``OSError`` or
    ``trio.TooSlowError`` when it does not answer within WORKER_TIMEOUT."""
    with trio.fail_after(WORKER_TIMEOUT):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(b"GET /metrics.json HTTP/1.1\r\nHost: worker\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"worker metrics: {head.splitlines()[:1]!r}")
    return ServerMetrics.from_json(json.loads(body))
