"""A server's figures as one typed snapshot: what metrics systems export.

Nothing here is counted on the heartbeat path. Each connection's session
already counts its frames and bytes in plain integers; the server adds a
connection's counts to its totals once, when the connection ends, and a
snapshot sums the totals and the open connections' counts at the moment it is
taken (a scrape). :mod:`trio_heartbeat._prometheus` turns snapshots into the
Prometheus text format; ``serve --workers`` adds the workers' snapshots up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._lag import KICK_BUCKETS, LAG_BUCKETS

__all__ = ["FRAME_TYPES", "ServerMetrics", "SessionTotals"]

#: The ``type`` label values of ``frames_received``.
FRAME_TYPES = ("hello", "data", "ping", "pong", "close")


class SessionTotals:
    """Counts of connections that ended, kept by a server."""

    __slots__ = ("bytes_received", "bytes_sent", "frames", "pings", "pongs_sent")

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.pings = 0
        self.pongs_sent = 0
        #: Frames received, by FRAME_TYPES.
        self.frames = dict.fromkeys(FRAME_TYPES, 0)

    def copy(self) -> SessionTotals:
        """These counts, to add more to without changing them."""
        copied = SessionTotals()
        copied.bytes_received, copied.bytes_sent = self.bytes_received, self.bytes_sent
        copied.pings, copied.pongs_sent = self.pings, self.pongs_sent
        copied.frames = dict(self.frames)
        return copied

    def add(self, session: Any) -> None:
        """Add one session's counts (:class:`~trio_heartbeat.Session`)."""
        self.add_all((session,))

    def add_all(self, sessions: Iterable[Any]) -> None:
        """Add many sessions' counts: what :meth:`add` does for each, in one
        pass of plain local sums (a scrape over 16,700 connections: 18 ms one
        by one, a few ms so)."""
        received = sent = pings = pongs_sent = pongs = data = frames = closes = 0
        for session in sessions:
            received += session.bytes_received
            sent += session.bytes_sent
            pings += session.pings_received
            pongs_sent += session.pongs_sent
            pongs += session.pongs_received
            data += session.data_received
            frames += session.frames_received
            info = session.close_info
            if info is not None and info.by_peer and info.code is not None:
                closes += 1
        self.bytes_received += received
        self.bytes_sent += sent
        self.pings += pings
        self.pongs_sent += pongs_sent
        counts = self.frames
        # HELLO and CLOSE are not counted one by one (at most one of each per
        # session): what is not a PING, PONG, DATA or CLOSE is a HELLO.
        counts["hello"] += max(0, frames - pings - pongs - data - closes)
        counts["data"] += data
        counts["ping"] += pings
        counts["pong"] += pongs
        counts["close"] += closes


def empty_lag_buckets(
    bounds: tuple[float, ...] = LAG_BUCKETS,
) -> tuple[tuple[float, int], ...]:
    """A histogram with nothing counted yet (``inf`` last)."""
    return (*((le, 0) for le in bounds), (math.inf, 0))


def empty_kick_buckets() -> tuple[tuple[float, int], ...]:
    return empty_lag_buckets(KICK_BUCKETS)


@attrs.frozen(kw_only=True)
class ServerMetrics:
    """A :class:`HeartbeatServer`'s figures at one moment
    (:meth:`HeartbeatServer.metrics`), for applications that export them to a
    metrics system of their own. Counts are since the server was made."""

    #: Connections open now (handshaking included).
    connections: int = 0
    #: Connections accepted in all.
    connections_opened: int = 0
    #: Connections refused before or during the handshake, by the CLOSE code
    #: they got (``"none"``: the stream ended first).
    handshake_failures: Mapping[str, int] = attrs.field(factory=dict)
    #: Connections that ended, by :class:`DisconnectReason` name in lower case
    #: (``heartbeat_timeout``, ``closed_by_peer``, ``too_many_pings``...).
    disconnects: Mapping[str, int] = attrs.field(factory=dict)
    #: PINGs received and PONGs sent.
    pings_received: int = 0
    pongs_sent: int = 0
    #: Frames received, by type (``hello``, ``data``, ``ping``, ``pong``,
    #: ``close``).
    frames_received: Mapping[str, int] = attrs.field(factory=dict)
    #: Bytes read and written, frames and partial frames alike.
    bytes_received: int = 0
    bytes_sent: int = 0
    #: The server's own scheduling lateness: wake-ups of its probe per
    #: histogram bucket (upper bounds in seconds, ``inf`` last; not
    #: cumulative), their count and their sum.
    loop_lag_buckets: tuple[tuple[float, int], ...] = attrs.field(
        factory=empty_lag_buckets
    )
    loop_lag_count: int = 0
    loop_lag_sum: float = 0.0
    #: The worst lateness so far, seconds.
    loop_lag_max: float = 0.0
    #: Seconds the server was stalled (lateness beyond 0.1 s), counted against
    #: no client's liveness.
    stalled_seconds: float = 0.0
    #: How late each heartbeat-timeout kick came: when the server acted,
    #: against when the connection became due (seconds; buckets as for the
    #: loop lag, with 125, 150 and 200 ms besides). The server's own stalls
    #: are not counted as lateness: they move the due time (see "How verdicts
    #: are made").
    kick_lateness_buckets: tuple[tuple[float, int], ...] = attrs.field(
        factory=empty_kick_buckets
    )
    kick_lateness_count: int = 0
    kick_lateness_sum: float = 0.0
    kick_lateness_max: float = 0.0
    #: Sessions this server has listed in its presence store now.
    presence_listed: int = 0
    #: 1 while this server cannot reach its presence store (Redis down);
    #: summed over workers: how many are cut off.
    presence_unreachable: int = 0
    #: Worker processes summed into this snapshot (1 for one server).
    workers: int = 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``inf`` written as the string ``"inf"``)."""
        data = attrs.asdict(self)
        for name in ("loop_lag_buckets", "kick_lateness_buckets"):
            data[name] = [
                ["inf" if math.isinf(le) else le, count]
                for le, count in getattr(self, name)
            ]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerMetrics:
        """The inverse of :meth:`to_json`."""
        fields = dict(data)
        for name in ("loop_lag_buckets", "kick_lateness_buckets"):
            fields[name] = tuple(
                (float(le), int(count)) for le, count in data.get(name, ())
            )
        return cls(**fields)

    @classmethod
    def total(cls, parts: Iterable[ServerMetrics]) -> ServerMetrics:
        """Several servers' (workers') figures added up; the maxima are the
        worst of them."""
        parts = list(parts)
        if not parts:
            return cls(
                workers=0,
                loop_lag_buckets=empty_lag_buckets(),
                kick_lateness_buckets=empty_kick_buckets(),
            )

        def summed(name: str) -> Any:
            return sum(getattr(part, name) for part in parts)

        def merged(name: str) -> dict[str, int]:
            out: dict[str, int] = {}
            for part in parts:
                for key, value in getattr(part, name).items():
                    out[key] = out.get(key, 0) + value
            return out

        def histogram(name: str) -> tuple[tuple[float, int], ...]:
            buckets: dict[float, int] = {}
            for part in parts:
                for le, count in getattr(part, name):
                    buckets[le] = buckets.get(le, 0) + count
            return tuple(sorted(buckets.items()))

        return cls(
            connections=summed("connections"),
            connections_opened=summed("connections_opened"),
            handshake_failures=merged("handshake_failures"),
            disconnects=merged("disconnects"),
            pings_received=summed("pings_received"),
            pongs_sent=summed("pongs_sent"),
            frames_received=merged("frames_received"),
            bytes_received=summed("bytes_received"),
            bytes_sent=summed("bytes_sent"),
            loop_lag_buckets=histogram("loop_lag_buckets"),
            loop_lag_count=summed("loop_lag_count"),
            loop_lag_sum=summed("loop_lag_sum"),
            loop_lag_max=max(part.loop_lag_max for part in parts),
            stalled_seconds=summed("stalled_seconds"),
            kick_lateness_buckets=histogram("kick_lateness_buckets"),
            kick_lateness_count=summed("kick_lateness_count"),
            kick_lateness_sum=summed("kick_lateness_sum"),
            kick_lateness_max=max(part.kick_lateness_max for part in parts),
            presence_listed=summed("presence_listed"),
            presence_unreachable=summed("presence_unreachable"),
            workers=summed("workers"),
        )
