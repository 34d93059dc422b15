"""The command line's options, and the configs they build.

Every option that sets a config field takes its default (and the "default ..."
in its help) from the config class itself, so the CLI never restates a number.
Abbreviated options are refused everywhere (``allow_abbrev=False``): ``serve
--work 3`` is an error, not ``--workers 3``.
"""

from __future__ import annotations

import argparse
import math
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

import attrs

from trio_heartbeat import (
    AUTO,
    Backoff,
    ClientConfig,
    IntervalLearner,
    JsonIntervalStore,
    KeepaliveConfig,
    ServerConfig,
)

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_DEAD",
    "EXIT_OK",
    "EXIT_USAGE",
    "LEGACY_PROTOCOLS",
    "UsageError",
    "build_parser",
    "client_config",
    "client_tls",
    "keepalive_from",
    "learner_from",
    "server_config",
    "server_tls",
]

EXIT_OK: Final = 0
EXIT_CONNECTION: Final = 1
EXIT_USAGE: Final = 2
EXIT_DEAD: Final = 3

LOG_LEVELS: Final = ["DEBUG", "INFO", "WARNING", "ERROR"]
#: ``--protocol`` values meaning the legacy text protocol; ``seed`` is the old,
#: deprecated name of ``legacy``.
LEGACY_PROTOCOLS: Final = ("legacy", "seed")


class UsageError(ValueError):
    """A command line that parses but cannot run (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _default(config_class: type, name: str) -> Any:
    default = getattr(attrs.fields(config_class), name).default
    assert default is not attrs.NOTHING, f"{config_class.__name__}.{name}"
    return default


def _config_option(
    parser: argparse.ArgumentParser | Any,
    flag: str,
    config_class: type,
    field: str,
    *,
    type: Callable[[str], Any],
    metavar: str,
    help: str,
) -> None:
    """An option for ``config_class.field``, its default taken from the class."""
    default = _default(config_class, field)
    if default is None:
        shown = "no limit"
    elif isinstance(default, float):
        shown = f"{default:g}"
    else:
        shown = str(default)
    parser.add_argument(
        flag, dest=field, type=type, default=default, metavar=metavar,
        help=f"{help} (default {shown})",
    )  # fmt: skip


def _user_timeout(value: str) -> float | str:
    return AUTO if value == AUTO else float(value)


def _add_detector(parser: argparse.ArgumentParser, config_class: type) -> None:
    parser.add_argument(
        "--detector",
        choices=["fixed", "phi"],
        default=_default(config_class, "detector"),
        help="how a peer is judged dead: fixed (silent for the timeout / the "
        "retries) or phi (the phi accrual detector, which learns the link's "
        "rhythm; never later than fixed) (default %(default)s)",
    )
    _config_option(
        parser,
        "--phi-threshold",
        config_class,
        "phi_threshold",
        type=float,
        metavar="PHI",
        help="with --detector phi: the suspicion level of a verdict",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text: one readable line per event; json: one JSON object per line "
        "(keys: time, level, logger, pid, event, message, and the event's "
        "fields such as peer, client_id, reason, code)",
    )
    parser.add_argument(
        "--protocol",
        choices=["framed", "legacy", "seed"],
        default="framed",
        help="framed: this project's protocol; legacy: the raw text protocol "
        "(HeartBeat/OK) of the classic C heartbeat server and client, to talk to "
        "them ('seed' is a deprecated name for it)",
    )
    kernel = parser.add_argument_group(
        "kernel keepalive",
        "TCP keepalive probes an idle connection; TCP_USER_TIMEOUT bounds how long "
        "sent data may stay unacknowledged (keepalive alone does nothing then).",
    )
    kernel.add_argument(
        "--keepalive-idle",
        type=float,
        metavar="S",
        help="idle seconds before the first probe (TCP_KEEPIDLE)",
    )
    kernel.add_argument(
        "--keepalive-interval",
        type=float,
        metavar="S",
        help="seconds between probes (TCP_KEEPINTVL)",
    )
    kernel.add_argument(
        "--keepalive-count",
        type=int,
        metavar="N",
        help="unanswered probes before the kernel drops it (TCP_KEEPCNT)",
    )
    kernel.add_argument("--user-timeout", type=_user_timeout, metavar="S|auto",
                        help="TCP_USER_TIMEOUT in seconds; 'auto' derives it from "
                        "the heartbeat timeout")  # fmt: skip


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the heartbeat server (an upper-casing echo server)",
        description="Run the heartbeat server. Each DATA frame is answered with "
        "the same bytes upper-cased; silent clients are kicked.",
        allow_abbrev=False,
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default %(default)s)"
    )
    serve.add_argument("--port", type=int, default=5005,
                       help="TCP port, 0 for any (default %(default)s)")  # fmt: skip
    option = _config_option
    option(
        serve,
        "--timeout",
        ServerConfig,
        "timeout",
        type=float,
        metavar="S",
        help="kick a client after S seconds without receiving anything",
    )
    option(
        serve,
        "--handshake-timeout",
        ServerConfig,
        "handshake_timeout",
        type=float,
        metavar="S",
        help="seconds a client has to send HELLO",
    )
    option(
        serve,
        "--min-interval",
        ServerConfig,
        "min_interval",
        type=float,
        metavar="S",
        help="smallest heartbeat interval granted",
    )
    option(
        serve,
        "--max-ping-strikes",
        ServerConfig,
        "max_ping_strikes",
        type=int,
        metavar="N",
        help="PINGs in a row sent closer together than "
        "--min-interval tolerated before CLOSE(4); 0 for any number",
    )
    option(
        serve,
        "--max-frame-size",
        ServerConfig,
        "max_frame_size",
        type=int,
        metavar="BYTES",
        help="largest frame accepted",
    )
    option(
        serve,
        "--max-connections",
        ServerConfig,
        "max_connections",
        type=int,
        metavar="N",
        help="refuse clients past N with CLOSE(6)",
    )
    option(
        serve,
        "--max-connections-per-ip",
        ServerConfig,
        "max_connections_per_ip",
        type=int,
        metavar="N",
        help="refuse the newest connection past N from one IP with CLOSE(6)",
    )
    option(
        serve,
        "--send-timeout",
        ServerConfig,
        "send_timeout",
        type=float,
        metavar="S",
        help="drop a client that stalls a send for S seconds",
    )
    _add_detector(serve, ServerConfig)
    serve.add_argument(
        "--no-heartbeat",
        action="store_true",
        help="never kick silent clients (debugging); PINGs are still answered",
    )
    serve.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS
    )
    serve.add_argument(
        "--token-file",
        metavar="F",
        help="require clients to present the token in file F (CLOSE(7) otherwise)",
    )
    serve.add_argument("--certfile", metavar="F", help="TLS: certificate chain (PEM)")
    serve.add_argument("--keyfile", metavar="F", help="TLS: private key (PEM)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N worker processes sharing the port (SO_REUSEPORT), supervised; "
        "limits such as --max-connections apply per worker (default 1)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    metrics = serve.add_argument_group(
        "metrics", "Prometheus metrics (needs: pip install 'trio_heartbeat[metrics]')."
    )
    metrics.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        help="serve /metrics on port P (with --workers: the supervisor, summing "
        "the workers)",
    )
    metrics.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="H",
        help="address for --metrics-port (default %(default)s)",
    )
    presence = serve.add_argument_group(
        "presence",
        "Who is online: clients that give a client_id (connect --client-id) are "
        "listed while connected. In this process by default; in Redis for a "
        "fleet (needs: pip install 'trio_heartbeat[presence]').",
    )
    presence.add_argument(
        "--presence",
        default="memory",
        metavar="URL",
        help="memory, or redis://HOST:PORT/DB to share the list with every "
        "server using that Redis (default %(default)s)",
    )
    presence.add_argument(
        "--node-id",
        metavar="NAME",
        help="this server's name in the list (default host:pid; with --workers "
        "each worker is NAME/pid)",
    )
    presence.add_argument(
        "--presence-ttl",
        type=float,
        default=30.0,
        metavar="S",
        help="a server that stops refreshing its sessions (killed, cut off) "
        "takes them off the list after S seconds (default %(default)g)",
    )
    presence.add_argument(
        "--duplicate",
        choices=["allow", "replace", "reject"],
        default="allow",
        help="a client_id that connects while listed: allow (both listed), "
        "replace (the older gets CLOSE(8), on any server), reject (the newer "
        "gets CLOSE(7)) (default %(default)s)",
    )
    _add_common(serve)


def _add_presence(commands: Any) -> None:
    presence = commands.add_parser(
        "presence",
        help="list who is online in a fleet's Redis",
        description="List the sessions online, from the Redis the servers share "
        "(serve --presence redis://...). One line per session: client_id, "
        "node, peer, since (local time). With CLIENT_IDs, only theirs, and the "
        "exit status says whether all of them are online (0) or not (1); 1 "
        "also when Redis cannot be reached.",
    )
    presence.add_argument(
        "--redis", required=True, metavar="URL", help="redis://HOST:PORT/DB"
    )
    presence.add_argument(
        "--json",
        action="store_true",
        help="a JSON list of objects with keys client_id, node, peer, since "
        "(Unix time) instead",
    )
    presence.add_argument("client_ids", nargs="*", metavar="CLIENT_ID")
    presence.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    presence.add_argument(
        "--log-format", default="text", choices=["text", "json"],
        help=argparse.SUPPRESS,
    )  # fmt: skip


def _add_connect(commands: Any) -> None:
    connect = commands.add_parser(
        "connect",
        help="connect, relay stdin lines as DATA, print DATA received",
        description="Interactive client: each stdin line is sent as one DATA "
        "frame; each DATA received is printed on its own line. Exit codes: 0 stdin "
        "ended and closed normally, 1 refused/closed/lost, 2 usage, 3 server "
        "declared dead.",
        allow_abbrev=False,
    )
    connect.add_argument(
        "host",
        nargs="?",
        default="127.0.0.1",
        help="server address (default %(default)s)",
    )
    connect.add_argument(
        "--port", type=int, default=5005, help="server port (default %(default)s)"
    )
    option = _config_option
    option(
        connect,
        "--interval",
        ClientConfig,
        "interval",
        type=float,
        metavar="S",
        help="PING after S seconds with nothing sent or nothing received",
    )
    option(
        connect,
        "--retries",
        ClientConfig,
        "retries",
        type=int,
        metavar="N",
        help="unanswered resends before the server is dead",
    )
    option(
        connect,
        "--retry-interval",
        ClientConfig,
        "retry_interval",
        type=float,
        metavar="S",
        help="seconds between resends",
    )
    adaptive = connect.add_argument_group(
        "adaptive interval",
        "Learn the longest interval the path keeps open (NATs and firewalls "
        "forget idle flows): start at --interval, try longer ones while they "
        "hold, settle below the first that kills the link. With --reconnect, "
        "what was learned survives reconnects.",
    )
    adaptive.add_argument(
        "--adaptive",
        action="store_true",
        help="learn the interval, from --interval (the shortest) up",
    )
    adaptive.add_argument(
        "--max-interval",
        type=float,
        metavar="S",
        help="--adaptive: the longest interval to try (default: the server's "
        "timeout / 2, which is also the cap)",
    )
    adaptive.add_argument(
        "--interval-cache",
        metavar="FILE",
        help="--adaptive: keep what was learned in FILE (JSON), per network, "
        "and start from it next time",
    )
    adaptive.add_argument(
        "--network",
        metavar="NAME",
        help="--adaptive: the network's name in the cache (default: this "
        "machine's address towards the server)",
    )
    connect.add_argument(
        "--client-id",
        metavar="ID",
        help="name this client in HELLO (server logs, presence)",
    )
    connect.add_argument(
        "--reconnect",
        action="store_true",
        help="reconnect with backoff instead of exiting, until stdin ends",
    )
    connect.add_argument(
        "--max-backoff",
        type=float,
        default=_default(Backoff, "cap"),
        metavar="S",
        help="--reconnect: the longest wait between attempts; waits start at up to "
        f"{_default(Backoff, 'base'):g} s and double per failure, with full jitter "
        "(default %(default)g)",
    )
    connect.add_argument(
        "--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS
    )
    connect.add_argument(
        "--token-file", metavar="F", help="present the token in file F in HELLO"
    )
    connect.add_argument("--tls", action="store_true", help="connect over TLS")
    connect.add_argument(
        "--cafile", metavar="F", help="TLS: trust the CA certificates in F (PEM)"
    )
    _add_common(connect)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m trio_heartbeat`` parser, with its ``serve`` and
    ``connect`` subcommands."""
    parser = _Parser(
        prog="python -m trio_heartbeat",
        description="Heartbeat server and client for long-lived TCP connections.",
    )
    commands = parser.add_subparsers(dest="command", required=True,
                                     parser_class=_Parser)  # fmt: skip
    _add_serve(commands)
    _add_connect(commands)
    _add_presence(commands)
    return parser


# ------------------------------------------------------------ configs


def keepalive_from(args: argparse.Namespace) -> KeepaliveConfig | None:
    """The kernel keepalive flags as a config, or None when none is given."""
    values = (args.keepalive_idle, args.keepalive_interval, args.keepalive_count,
              args.user_timeout)  # fmt: skip
    if all(value is None for value in values):
        return None
    return KeepaliveConfig(
        idle=args.keepalive_idle,
        interval=args.keepalive_interval,
        count=args.keepalive_count,
        user_timeout=args.user_timeout,
    )


def read_token(path: str | None) -> str | None:
    """The token in ``path`` (one trailing newline stripped); never echoed."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read --token-file {path!r}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"--token-file {path!r} is empty")
    return token


def _fields(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    names = {field.name for field in attrs.fields(config_class)}
    return {name: value for name, value in vars(args).items() if name in names}


def server_config(args: argparse.Namespace) -> ServerConfig:
    if args.workers < 1:
        raise UsageError(f"workers must be >= 1, not {args.workers!r}")
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise UsageError(f"--metrics-port must be 0-65535, not {args.metrics_port}")
        if args.protocol in LEGACY_PROTOCOLS:
            raise UsageError("--metrics-port needs the framed protocol")
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise UsageError(
                "--metrics-port needs prometheus_client: "
                "pip install 'trio_heartbeat[metrics]'"
            ) from None
    if args.presence != "memory":
        if args.protocol in LEGACY_PROTOCOLS:
            raise UsageError("--presence needs the framed protocol (a client_id)")
        if not args.presence.startswith(("redis://", "rediss://")):
            raise UsageError(
                f"--presence must be memory or redis://HOST:PORT/DB, not "
                f"{args.presence!r}"
            )
        try:
            import coredis  # noqa: F401
        except ImportError:
            raise UsageError(
                "--presence redis:// needs coredis: "
                "pip install 'trio_heartbeat[presence]'"
            ) from None
    if not (math.isfinite(args.presence_ttl) and args.presence_ttl > 0):
        raise UsageError(
            f"--presence-ttl must be a positive number, not {args.presence_ttl}"
        )
    fields = _fields(args, ServerConfig)
    fields.update(
        token=read_token(args.token_file),
        enabled=not args.no_heartbeat,
        keepalive=keepalive_from(args),
    )
    return ServerConfig(**fields)


def client_config(args: argparse.Namespace) -> ClientConfig:
    if not args.max_backoff > 0:
        raise UsageError(
            f"--max-backoff must be a positive number, not {args.max_backoff!r}"
        )
    fields = _fields(args, ClientConfig)
    fields.update(token=read_token(args.token_file), keepalive=keepalive_from(args))
    return ClientConfig(**fields)


def learner_from(args: argparse.Namespace, network: str) -> IntervalLearner | None:
    """The ``--adaptive`` learner (``None`` without it), its store the
    ``--interval-cache`` file, its key ``--network`` or ``network``."""
    if not args.adaptive:
        for flag in ("max_interval", "interval_cache", "network"):
            if getattr(args, flag) is not None:
                option = "--" + flag.replace("_", "-")
                raise UsageError(f"{option} needs --adaptive")
        return None
    if args.protocol in LEGACY_PROTOCOLS:
        raise UsageError("--adaptive needs the framed protocol, not --protocol legacy")
    maximum = math.inf if args.max_interval is None else args.max_interval
    if not maximum >= args.interval:
        raise UsageError(
            f"--max-interval ({maximum:g} s) is below --interval ({args.interval:g} s)"
        )
    return IntervalLearner(
        args.interval,
        maximum,
        store=None
        if args.interval_cache is None
        else JsonIntervalStore(args.interval_cache),
        key=args.network or network,
    )


def server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.certfile is None and args.keyfile is None:
        return None
    if args.certfile is None:
        raise UsageError("--keyfile needs --certfile")
    if args.protocol in LEGACY_PROTOCOLS:
        raise UsageError("the legacy protocol has no TLS")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate: {exc}") from None
    return context


def client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls:
        if args.cafile is not None:
            raise UsageError("--cafile needs --tls")
        return None
    if args.protocol in LEGACY_PROTOCOLS:
        raise UsageError("the legacy protocol has no TLS")
    try:
        return ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load --cafile {args.cafile!r}: {exc}") from None


def strip_options(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--x V`` and
    ``--x=V`` forms; abbreviations are refused by the parser, so the full
    spellings are all there is to strip)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in names:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept
