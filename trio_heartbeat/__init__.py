"""trio_heartbeat: reliable liveness for long-lived connections on Trio.

Everything public is re-exported here; the ``_modules`` are private.
"""

from __future__ import annotations

import contextlib as _contextlib
import logging as _logging

from ._adaptive import IntervalChange as IntervalChange
from ._adaptive import IntervalLearner as IntervalLearner
from ._adaptive import IntervalStore as IntervalStore
from ._adaptive import JsonIntervalStore as JsonIntervalStore
from ._adaptive import LearnerPhase as LearnerPhase
from ._adaptive import MemoryIntervalStore as MemoryIntervalStore
from ._backoff import Backoff as Backoff
from ._client import ConnectionAttempt as ConnectionAttempt
from ._client import OnPong as OnPong
from ._client import PingPayload as PingPayload
from ._client import Reconnector as Reconnector
from ._client import connect_stream as connect_stream
from ._client import is_permanent as is_permanent
from ._client import open_connection as open_connection
from ._client import reconnecting as reconnecting
from ._config import AUTO as AUTO
from ._config import ClientConfig as ClientConfig
from ._config import HandshakeError as HandshakeError
from ._config import KeepaliveConfig as KeepaliveConfig
from ._config import Negotiated as Negotiated
from ._config import ServerConfig as ServerConfig
from ._config import negotiate as negotiate
from ._connection import ConnectionStats as ConnectionStats
from ._connection import HeartbeatConnection as HeartbeatConnection
from ._connection import PingResult as PingResult
from ._idle import IdleWatchdog as IdleWatchdog
from ._idle import idle_timeout as idle_timeout
from ._keepalive import configure_keepalive as configure_keepalive
from ._legacy import LegacyConnection as LegacyConnection
from ._legacy import LegacyHeartbeatTimeout as LegacyHeartbeatTimeout
from ._legacy import open_legacy_connection as open_legacy_connection
from ._legacy import serve_legacy_listeners as serve_legacy_listeners
from ._legacy import serve_legacy_tcp as serve_legacy_tcp
from ._metrics import ServerMetrics as ServerMetrics
from ._presence import Duplicate as Duplicate
from ._presence import JoinRefused as JoinRefused
from ._presence import LeaveReason as LeaveReason
from ._presence import MemoryPresence as MemoryPresence
from ._presence import Presence as Presence
from ._presence import PresenceEvent as PresenceEvent
from ._presence import PresenceSession as PresenceSession
from ._presence import PresenceUnavailable as PresenceUnavailable
from ._presence import WatchLagged as WatchLagged
from ._protocol import DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE
from ._protocol import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._protocol import Close as Close
from ._protocol import CloseCode as CloseCode
from ._protocol import Data as Data
from ._protocol import DecoderFailedError as DecoderFailedError
from ._protocol import FrameDecoder as FrameDecoder
from ._protocol import FrameTooLargeError as FrameTooLargeError
from ._protocol import FrameType as FrameType
from ._protocol import Hello as Hello
from ._protocol import InvalidCloseError as InvalidCloseError
from ._protocol import InvalidHelloError as InvalidHelloError
from ._protocol import LocalProtocolError as LocalProtocolError
from ._protocol import Ping as Ping
from ._protocol import Pong as Pong
from ._protocol import ProtocolError as ProtocolError
from ._protocol import RemoteProtocolError as RemoteProtocolError
from ._protocol import TruncatedFrameError as TruncatedFrameError
from ._protocol import UnknownFrameTypeError as UnknownFrameTypeError
from ._protocol import VarintTooLongError as VarintTooLongError
from ._protocol import encode as encode
from ._redis_presence import RedisPresence as RedisPresence
from ._rtt import RttEstimator as RttEstimator
from ._server import DISABLE_ENV_VAR as DISABLE_ENV_VAR
from ._server import Authenticate as Authenticate
from ._server import ConnectHook as ConnectHook
from ._server import DisconnectHook as DisconnectHook
from ._server import Handler as Handler
from ._server import HeartbeatServer as HeartbeatServer
from ._server import MessageHandler as MessageHandler
from ._server import PerMessage as PerMessage
from ._server import PongPayload as PongPayload
from ._server import RefuseHook as RefuseHook
from ._server import ServerStatistics as ServerStatistics
from ._server import per_message as per_message
from ._server import serve_listeners as serve_listeners
from ._server import serve_tcp as serve_tcp
from ._session import CloseInfo as CloseInfo
from ._session import ConnectionClosed as ConnectionClosed
from ._session import DisconnectReason as DisconnectReason
from ._session import EndOfStream as EndOfStream
from ._session import Established as Established
from ._session import HeartbeatTimeout as HeartbeatTimeout
from ._session import HelloReceived as HelloReceived
from ._session import ProtocolFailure as ProtocolFailure
from ._session import Role as Role
from ._session import Session as Session
from ._session import SessionState as SessionState
from ._signals import cancel_on_signals as cancel_on_signals

__all__ = [
    "AUTO",
    "DEFAULT_MAX_FRAME_SIZE",
    "DISABLE_ENV_VAR",
    "PROTOCOL_VERSION",
    "Authenticate",
    "Backoff",
    "ClientConfig",
    "Close",
    "CloseCode",
    "CloseInfo",
    "ConnectHook",
    "ConnectionAttempt",
    "ConnectionClosed",
    "ConnectionStats",
    "Data",
    "DecoderFailedError",
    "DisconnectHook",
    "DisconnectReason",
    "Duplicate",
    "EndOfStream",
    "Established",
    "FrameDecoder",
    "FrameTooLargeError",
    "FrameType",
    "Handler",
    "HandshakeError",
    "HeartbeatConnection",
    "HeartbeatServer",
    "HeartbeatTimeout",
    "Hello",
    "HelloReceived",
    "IdleWatchdog",
    "IntervalChange",
    "IntervalLearner",
    "IntervalStore",
    "InvalidCloseError",
    "InvalidHelloError",
    "JoinRefused",
    "JsonIntervalStore",
    "KeepaliveConfig",
    "LearnerPhase",
    "LeaveReason",
    "LegacyConnection",
    "LegacyHeartbeatTimeout",
    "LocalProtocolError",
    "MemoryIntervalStore",
    "MemoryPresence",
    "MessageHandler",
    "Negotiated",
    "OnPong",
    "PerMessage",
    "Ping",
    "PingPayload",
    "PingResult",
    "Pong",
    "PongPayload",
    "Presence",
    "PresenceEvent",
    "PresenceSession",
    "PresenceUnavailable",
    "ProtocolError",
    "ProtocolFailure",
    "Reconnector",
    "RedisPresence",
    "RefuseHook",
    "RemoteProtocolError",
    "Role",
    "RttEstimator",
    "ServerConfig",
    "ServerMetrics",
    "ServerStatistics",
    "Session",
    "SessionState",
    "TruncatedFrameError",
    "UnknownFrameTypeError",
    "VarintTooLongError",
    "WatchLagged",
    "cancel_on_signals",
    "configure_keepalive",
    "connect_stream",
    "encode",
    "idle_timeout",
    "is_permanent",
    "negotiate",
    "open_connection",
    "open_legacy_connection",
    "per_message",
    "reconnecting",
    "serve_legacy_listeners",
    "serve_legacy_tcp",
    "serve_listeners",
    "serve_tcp",
]

__version__ = "0.1.0"


def _fixup_module_metadata() -> None:
    # As trio does: make tracebacks, reprs and Sphinx show the public path.
    for name in __all__:
        obj = globals()[name]
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith("trio_heartbeat._"):
            with _contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = "trio_heartbeat"


_fixup_module_metadata()
del _fixup_module_metadata

# A library logs, an application decides where logs go: without this, records
# of a program that configured no logging would reach Python's last-resort
# handler (warnings and above, on stderr, unformatted).
_logging.getLogger("trio_heartbeat").addHandler(_logging.NullHandler())
