"""Heartbeat settings for both sides, their validation, and the negotiation rule.

Pure data and pure functions: nothing here does I/O or reads a clock, so the
rules can be tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from ._protocol import DEFAULT_MAX_FRAME_SIZE, MAX_ENCODABLE_LENGTH, PROTOCOL_VERSION

__all__ = [
    "AUTO",
    "DETECTORS",
    "ClientConfig",
    "HandshakeError",
    "KeepaliveConfig",
    "Negotiated",
    "ServerConfig",
    "negotiate",
]

# Defaults, with where each comes from.
# Client idle interval 25 s, 5 retries 5 s apart: the classic C client's settings.
# 25 s also sits inside the 15-45 s range instant-messaging clients use, under
# the ~30 s idle timeout of the most aggressive carrier NATs.
DEFAULT_INTERVAL: Final = 25.0
DEFAULT_RETRIES: Final = 5
DEFAULT_RETRY_INTERVAL: Final = 5.0
# Server kicks after 60 s of silence: the classic C server's SERVER_TIMEOUT. It is
# more than the client's interval + retries x retry interval (25 + 30 = 55 s), so
# a live client on a slow path is not kicked before it has finished retrying.
DEFAULT_TIMEOUT: Final = 60.0
# A client must say HELLO within 10 s; long enough for a TLS handshake over a poor
# mobile link, short enough that half-open sockets do not pile up.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
# No PINGs closer together than 1 s: anything faster is not a heartbeat but a
# flood (gRPC's keepalive enforcement uses a minimum in the same spirit).
DEFAULT_MIN_INTERVAL: Final = 1.0
# Two strikes: a delayed PING arriving just before its on-time resend, and one
# more of slack (gRPC's GRPC_ARG_HTTP2_MAX_PING_STRIKES default).
DEFAULT_MAX_PING_STRIKES: Final = 2
# How long a graceful close may spend sending its CLOSE frame before the stream
# is closed anyway.
DEFAULT_CLOSE_TIMEOUT: Final = 1.0
# A client that has not read for 10 s while we have data for it is not coming
# back soon; a healthy one drains a socket buffer in milliseconds.
DEFAULT_SEND_TIMEOUT: Final = 10.0


def positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a finite number > 0 (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


def _non_negative_int(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {value!r}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


def _optional_positive_int(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int or None, not {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, not {value!r}")


def _frame_size(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {value!r}")
    if not 16 <= value <= MAX_ENCODABLE_LENGTH:
        raise ValueError(
            f"{attribute.name} must be in 16..{MAX_ENCODABLE_LENGTH}, not {value!r}"
        )


def _optional_non_negative(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number or None, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


#: The ways a verdict can be taken: ``"fixed"``, silent for a fixed time (the
#: server's ``timeout``, the client's retries); ``"phi"``, the φ accrual
#: detector, which learns the link's rhythm.
DETECTORS: Final = ("fixed", "phi")
# One wake-up a second: lateness figures that are current, at no measurable cost.
DEFAULT_LAG_PROBE_INTERVAL: Final = 1.0
# φ = 8: one false verdict in 10^8 normal gaps; Akka's and Cassandra's default.
DEFAULT_PHI_THRESHOLD: Final = 8.0


def _jitter(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, not {value!r}")
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be in [0, 1), not {value!r}")


#: ``user_timeout=AUTO``: derive TCP_USER_TIMEOUT from the heartbeat timeout, so
#: the kernel and the application agree on when a peer is dead (gRPC does the
#: same on Linux with its keepalive timeout).
AUTO: Final = "auto"


def _optional_positive(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None or (attribute.name == "user_timeout" and value == AUTO):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number or None, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


@attrs.frozen(kw_only=True)
class KeepaliveConfig:
    """Kernel keepalive settings; ``None`` leaves the system default.

    Setting any of ``idle``, ``interval`` or ``count`` turns SO_KEEPALIVE on.
    ``user_timeout`` is seconds, or :data:`AUTO` to take the heartbeat timeout.
    The kernel's own defaults (Linux: idle 7200 s, interval 75 s, 9 probes)
    detect a dead idle peer after more than two hours.
    """

    #: Seconds without traffic before the first probe (TCP_KEEPIDLE).
    idle: float | None = attrs.field(default=None, validator=_optional_positive)
    #: Seconds between probes (TCP_KEEPINTVL).
    interval: float | None = attrs.field(default=None, validator=_optional_positive)
    #: Unanswered probes before the kernel drops the connection (TCP_KEEPCNT).
    count: int | None = attrs.field(default=None, validator=_optional_positive_int)
    #: Longest time sent data may stay unacknowledged (TCP_USER_TIMEOUT,
    #: Linux), seconds; :data:`AUTO`: the heartbeat's own bound.
    user_timeout: float | Literal["auto"] | None = attrs.field(
        default=None, validator=_optional_positive
    )

    @property
    def keepalive(self) -> bool:
        return any(v is not None for v in (self.idle, self.interval, self.count))

    @property
    def active(self) -> bool:
        return self.keepalive or self.user_timeout is not None

    def resolve(self, heartbeat_timeout: float) -> KeepaliveConfig:
        """Replace ``user_timeout=AUTO`` with ``heartbeat_timeout``."""
        if self.user_timeout == AUTO:
            return attrs.evolve(self, user_timeout=heartbeat_timeout)
        return self


@attrs.frozen(kw_only=True)
class ClientConfig:
    """The client's heartbeat settings.

    The client sends PING after ``interval`` seconds with nothing sent or nothing
    received, resends it every ``retry_interval`` seconds while nothing at all
    is received, and declares the server dead after ``retries`` unanswered
    resends: at the first PING + (``retries`` + 1) x ``retry_interval``.
    """

    #: Seconds with nothing sent or nothing received before the client PINGs
    #: (the wish sent in HELLO: the server may grant another).
    interval: float = attrs.field(default=DEFAULT_INTERVAL, validator=positive)
    #: Unanswered resends after the first PING before the server is dead.
    retries: int = attrs.field(default=DEFAULT_RETRIES, validator=_non_negative_int)
    #: Seconds between resends (never less than the server's ``min_interval``).
    retry_interval: float = attrs.field(
        default=DEFAULT_RETRY_INTERVAL, validator=positive
    )
    #: Each idle wait is drawn from interval x [1 - jitter, 1 + jitter], so clients
    #: that reconnected together drift apart instead of pinging in lockstep.
    jitter: float = attrs.field(default=0.0, validator=_jitter)
    #: Seconds the server has to answer the client's HELLO.
    handshake_timeout: float = attrs.field(
        default=DEFAULT_HANDSHAKE_TIMEOUT, validator=positive
    )
    #: The largest frame payload accepted from the server, bytes.
    max_frame_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, validator=_frame_size
    )
    #: Seconds closing may take: sending CLOSE, then waiting for the server's.
    close_timeout: float = attrs.field(
        default=DEFAULT_CLOSE_TIMEOUT, validator=positive
    )
    #: Heartbeat enforcement: ``False`` still answers the server's PINGs but never
    #: sends PINGs or declares the server dead (for debugging).
    enabled: bool = True
    #: Sent in HELLO so the server can tell clients apart in its logs.
    client_id: str | None = None
    #: Sent in HELLO for servers that require a shared token (never logged).
    token: str | None = attrs.field(default=None, repr=False)
    #: Kernel keepalive / TCP_USER_TIMEOUT for the client's socket. With
    #: ``user_timeout=AUTO`` it is the dead-server bound:
    #: interval + (retries + 1) x retry_interval.
    keepalive: KeepaliveConfig | None = None
    #: How the server is declared dead: ``"fixed"`` (after ``retries``
    #: unanswered resends) or ``"phi"``: the φ accrual detector over the PONGs'
    #: round trips; then the verdict comes once φ of the unanswered PING's wait
    #: reaches ``phi_threshold``, never later than the fixed rule.
    detector: Literal["fixed", "phi"] = attrs.field(
        default="fixed", validator=attrs.validators.in_(DETECTORS)
    )
    #: With ``detector="phi"``: the suspicion level of a verdict.
    phi_threshold: float = attrs.field(
        default=DEFAULT_PHI_THRESHOLD, validator=positive
    )
    #: Floor under φ's standard deviation, seconds (``None``: a tenth of
    #: ``retry_interval``).
    phi_min_std: float | None = attrs.field(default=None, validator=_optional_positive)
    #: A wait this much longer than usual is not suspicious at all, seconds
    #: (``None``: one ``retry_interval``).
    phi_acceptable_pause: float | None = attrs.field(
        default=None, validator=_optional_non_negative
    )

    @property
    def detection_bound(self) -> float:
        """Longest time from the last exchange until the server is declared
        dead, with the interval as requested (the server may grant another:
        see :meth:`Negotiated.detection_bound`)."""
        return self.interval + (self.retries + 1) * self.retry_interval


@attrs.frozen(kw_only=True)
class ServerConfig:
    """The server's heartbeat settings.

    A connection from which nothing is received for ``timeout`` seconds is kicked with
    CLOSE(1). Clients are told to PING at an interval clamped into
    [``min_interval``, ``timeout`` / 2].
    """

    #: Seconds without receiving anything (of the server's awake time) after
    #: which a client is kicked with CLOSE(1).
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, validator=positive)
    #: Seconds a client has to complete its HELLO (an absolute deadline:
    #: trickled bytes do not extend it); CLOSE(7) after it.
    handshake_timeout: float = attrs.field(
        default=DEFAULT_HANDSHAKE_TIMEOUT, validator=positive
    )
    #: The shortest interval granted, and the closest spacing of PINGs accepted.
    min_interval: float = attrs.field(default=DEFAULT_MIN_INTERVAL, validator=positive)
    #: The largest frame payload accepted from a client, bytes (CLOSE(3) past
    #: it, decided from the frame's header alone).
    max_frame_size: int = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, validator=_frame_size
    )
    #: Connections served at once; the next gets CLOSE(6) (``None``: no limit).
    max_connections: int | None = attrs.field(
        default=None, validator=_optional_positive_int
    )
    #: Connections allowed from one IP address; the newest past it gets CLOSE(6).
    max_connections_per_ip: int | None = attrs.field(
        default=None, validator=_optional_positive_int
    )
    #: Shared secret every client must present in its HELLO (``"token"``),
    #: compared in constant time; a wrong or missing one gets CLOSE(7). Kept
    #: out of repr() so that it never reaches a log.
    token: str | None = attrs.field(default=None, repr=False)
    #: Seconds closing may take: sending CLOSE, then waiting for the client's
    #: answer (its CLOSE, or the end of its stream).
    close_timeout: float = attrs.field(
        default=DEFAULT_CLOSE_TIMEOUT, validator=positive
    )
    #: A send blocked this long means the client stopped reading (a slow
    #: consumer): it is dropped instead of holding a task and buffers forever.
    send_timeout: float = attrs.field(default=DEFAULT_SEND_TIMEOUT, validator=positive)
    #: PINGs in a row sent closer together than ``min_interval`` that are
    #: tolerated; one more gets CLOSE(4), too many pings. ``0`` tolerates any
    #: number (as gRPC's GRPC_ARG_HTTP2_MAX_PING_STRIKES, whose default is 2 too).
    max_ping_strikes: int = attrs.field(
        default=DEFAULT_MAX_PING_STRIKES, validator=_non_negative_int
    )
    #: Heartbeat enforcement: ``False`` still answers PINGs but never kicks, so a
    #: client paused in a debugger keeps its connection.
    enabled: bool = True
    #: Kernel keepalive / TCP_USER_TIMEOUT for accepted sockets. With
    #: ``user_timeout=AUTO`` it is ``timeout``.
    keepalive: KeepaliveConfig | None = None
    #: How often the server samples its own event loop's lateness (for
    #: :meth:`HeartbeatServer.statistics` and the status line), seconds;
    #: ``None``: never (stalls are still noticed when the kicker wakes late).
    lag_probe_interval: float | None = attrs.field(
        default=DEFAULT_LAG_PROBE_INTERVAL, validator=_optional_positive
    )
    #: How silent clients are judged: ``"fixed"`` (nothing received for
    #: ``timeout``) or ``"phi"``: the φ accrual detector learns each client's
    #: rhythm from its heartbeats, and kicks once φ of its silence reaches
    #: ``phi_threshold``: soon after a steady client's usual gap, later for a
    #: jittery one, never later than ``timeout``.
    detector: Literal["fixed", "phi"] = attrs.field(
        default="fixed", validator=attrs.validators.in_(DETECTORS)
    )
    #: With ``detector="phi"``: the suspicion level of a verdict.
    phi_threshold: float = attrs.field(
        default=DEFAULT_PHI_THRESHOLD, validator=positive
    )
    #: Floor under φ's standard deviation, seconds (``None``: a tenth of the
    #: negotiated interval).
    phi_min_std: float | None = attrs.field(default=None, validator=_optional_positive)
    #: A silence this much longer than usual is not suspicious at all, seconds
    #: (``None``: one negotiated interval).
    phi_acceptable_pause: float | None = attrs.field(
        default=None, validator=_optional_non_negative
    )

    @min_interval.validator
    def _check_min_interval(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value > self.timeout / 2:
            raise ValueError(
                f"min_interval must be <= timeout / 2 ({self.timeout / 2!r}), "
                f"not {value!r}"
            )


class HandshakeError(Exception):
    """A HELLO that cannot be accepted (wrong version, bad values).

    The server answers it with CLOSE(7), handshake failed.
    """


@attrs.frozen(kw_only=True)
class Negotiated:
    """The values that apply to one connection, as the server's HELLO states them."""

    version: int = PROTOCOL_VERSION
    interval: float
    timeout: float
    min_interval: float
    max_frame_size: int

    def detection_bound(self, config: ClientConfig) -> float:
        """Longest time from the last exchange until a client with ``config``
        declares the server dead, with the values this handshake settled on
        (its resends are never closer together than ``min_interval``)."""
        retry_interval = max(config.retry_interval, self.min_interval)
        return self.interval + (config.retries + 1) * retry_interval

    def to_hello(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "interval": self.interval,
            "timeout": self.timeout,
            "min_interval": self.min_interval,
            "max_frame_size": self.max_frame_size,
        }

    @classmethod
    def from_hello(cls, fields: Mapping[str, Any]) -> Negotiated:
        """Read the server's answer; raises :class:`HandshakeError` if malformed."""
        version = fields.get("version")
        if version != PROTOCOL_VERSION:
            raise HandshakeError(f"server speaks protocol version {version!r}")
        values: dict[str, float] = {}
        for name in ("interval", "timeout", "min_interval"):
            value = fields.get(name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise HandshakeError(f"server HELLO has invalid {name!r}: {value!r}")
            values[name] = float(value)
        max_frame_size = fields.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)
        if (
            isinstance(max_frame_size, bool)
            or not isinstance(max_frame_size, int)
            or max_frame_size <= 0
        ):
            raise HandshakeError(
                f"server HELLO has invalid 'max_frame_size': {max_frame_size!r}"
            )
        return cls(
            version=PROTOCOL_VERSION,
            interval=values["interval"],
            timeout=values["timeout"],
            min_interval=values["min_interval"],
            max_frame_size=max_frame_size,
        )


def negotiate(request: Mapping[str, Any], config: ServerConfig) -> Negotiated:
    """Apply the server's rule to a client's HELLO fields.

    The requested ``interval`` is clamped into [``min_interval``, ``timeout`` / 2]:
    never faster than the server allows, and frequent enough that a client on
    schedule PINGs at least twice per server timeout. A missing interval gets
    ``timeout`` / 2. Raises :class:`HandshakeError` for a version other than 1 or
    an interval that is not a positive number.
    """
    version = request.get("version")
    if version != PROTOCOL_VERSION:
        raise HandshakeError(
            f"unsupported protocol version {version!r} "
            f"(this server speaks {PROTOCOL_VERSION})"
        )
    upper = config.timeout / 2
    requested = request.get("interval", upper)
    if (
        isinstance(requested, bool)
        or not isinstance(requested, (int, float))
        or not math.isfinite(requested)
        or requested <= 0
    ):
        raise HandshakeError(f"interval must be a positive number, not {requested!r}")
    interval = min(max(float(requested), config.min_interval), upper)
    return Negotiated(
        interval=interval,
        timeout=config.timeout,
        min_interval=config.min_interval,
        max_frame_size=config.max_frame_size,
    )
