"""Kernel help: TCP keepalive and TCP_USER_TIMEOUT, per platform.

The two kernel mechanisms cover different failures, which is why both exist:

* **Keepalive** probes an *idle* connection: after ``idle`` seconds without
  traffic the kernel sends a probe every ``interval`` seconds and declares the
  peer dead after ``count`` unanswered probes. It does nothing while data is
  in flight.
* **TCP_USER_TIMEOUT** (Linux) bounds how long sent data may stay
  unacknowledged. Without it, a connection with unacknowledged data to a dead
  peer lives through the whole retransmission schedule (``tcp_retries2``,
  about 15 minutes by default).

Options are best effort, as in trio's ``SocketStream``: one the platform lacks
is logged once as a warning and skipped, never an error.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
from typing import Any

import trio

from ._config import AUTO, KeepaliveConfig
from ._transport import stream_socket

__all__ = ["apply_keepalive", "configure_keepalive", "keepalive_settings"]

logger = logging.getLogger("trio_heartbeat.keepalive")

_warned: set[str] = set()


def _warn_once(option: str, why: str) -> None:
    if option not in _warned:
        _warned.add(option)
        logger.warning(
            "%s is not available on %s: %s; skipped", option, sys.platform, why
        )


def _whole_seconds(value: float) -> int:
    # The kernel takes whole seconds; round up so detection is never earlier
    # than asked, and never 0 (which the kernel rejects).
    return max(1, math.ceil(value))


def _socket_of(target: Any) -> socket.socket | Any:
    """The socket of a socket, a trio socket or a (possibly TLS-wrapped) stream."""
    sock = stream_socket(target)
    return target if sock is None else sock


def configure_keepalive(
    target: socket.socket | trio.socket.SocketType | trio.abc.Stream,
    *,
    idle: float | None = None,
    interval: float | None = None,
    count: int | None = None,
    user_timeout: float | None = None,
) -> dict[str, int]:
    """Set TCP keepalive and TCP_USER_TIMEOUT on a TCP socket or Trio stream.

    Returns the options actually set, as ``{name: value}`` in the kernel's units
    (seconds, except TCP_USER_TIMEOUT in milliseconds). On Linux the names are
    TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT; on macOS the idle time is
    TCP_KEEPALIVE; on Windows idle and interval go through
    ``SIO_KEEPALIVE_VALS`` and the probe count is fixed by the system.
    """
    sock = _socket_of(target)
    applied: dict[str, int] = {}

    def setopt(level: int, name: str, value: int) -> None:
        option = getattr(socket, name, None)
        if option is None:
            _warn_once(name, "the socket module does not define it")
            return
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:
            _warn_once(name, str(exc))
            return
        applied[name] = value

    if idle is not None or interval is not None or count is not None:
        setopt(socket.SOL_SOCKET, "SO_KEEPALIVE", 1)
        if sys.platform == "win32" and hasattr(socket, "SIO_KEEPALIVE_VALS"):
            idle_ms = int(_whole_seconds(idle or 7200) * 1000)
            interval_ms = int(_whole_seconds(interval or 1) * 1000)
            try:
                sock.ioctl(socket.SIO_KEEPALIVE_VALS, (1, idle_ms, interval_ms))
                applied["SIO_KEEPALIVE_VALS_IDLE_MS"] = idle_ms
                applied["SIO_KEEPALIVE_VALS_INTERVAL_MS"] = interval_ms
            except OSError as exc:
                _warn_once("SIO_KEEPALIVE_VALS", str(exc))
            if count is not None:
                _warn_once("TCP_KEEPCNT", "Windows fixes the probe count")
        else:
            if idle is not None:
                name = "TCP_KEEPALIVE" if sys.platform == "darwin" else "TCP_KEEPIDLE"
                setopt(socket.IPPROTO_TCP, name, _whole_seconds(idle))
            if interval is not None:
                setopt(socket.IPPROTO_TCP, "TCP_KEEPINTVL", _whole_seconds(interval))
            if count is not None:
                setopt(socket.IPPROTO_TCP, "TCP_KEEPCNT", count)
    if user_timeout is not None:
        setopt(
            socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", max(1, round(user_timeout * 1000))
        )
    return applied


def keepalive_settings(
    config: KeepaliveConfig, heartbeat_timeout: float
) -> dict[str, Any]:
    """Keyword arguments for :func:`configure_keepalive` from a config."""
    resolved = config.resolve(heartbeat_timeout)
    user_timeout = resolved.user_timeout
    assert user_timeout != AUTO
    return {
        "idle": resolved.idle,
        "interval": resolved.interval,
        "count": resolved.count,
        "user_timeout": user_timeout,
    }


def apply_keepalive(
    stream: trio.abc.Stream, config: KeepaliveConfig | None, heartbeat_timeout: float
) -> None:
    """Apply ``config`` to ``stream`` if it is set and the stream has a socket."""
    if config is None or not config.active:
        return
    sock = _socket_of(stream)
    if not hasattr(sock, "setsockopt"):
        return  # an in-memory or other non-socket stream
    configure_keepalive(sock, **keepalive_settings(config, heartbeat_timeout))
