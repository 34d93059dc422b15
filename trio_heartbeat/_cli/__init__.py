"""``python -m trio_heartbeat serve|connect|presence``: demo server, interactive
client, and who is online.

Built on the public API only (``from trio_heartbeat import ...``), as any
application would be. The flag names are a contract that tests and scripts rely
on; ``--protocol seed`` is kept as a deprecated name of ``--protocol legacy``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from ._connect import run_connect
from ._logging import setup_logging
from ._options import (
    EXIT_USAGE,
    build_parser,
    client_config,
    client_tls,
    learner_from,
    server_config,
    server_tls,
)
from ._presence import run_presence
from ._serve import run_serve

__all__ = ["main"]


def main(
    argv: Sequence[str] | None = None,
    *,
    read_chunk: Callable[[], bytes] | None = None,
) -> int:
    """Run the command line; returns the exit code.

    ``read_chunk`` replaces reading stdin for ``connect`` (b"" means EOF).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    setup_logging(args.log_level, args.log_format)
    if args.command == "presence":
        try:
            return run_presence(args)
        except ValueError as exc:  # the URL
            print(f"{parser.prog} presence: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.protocol == "seed":
        logging.getLogger("trio_heartbeat.cli").warning(
            "--protocol seed is deprecated; it is now called --protocol legacy"
        )
    try:
        if args.command == "serve":
            tls = server_tls(args)
            config = server_config(args)
        else:
            tls = client_tls(args)
            client = client_config(args)
            learner = learner_from(args, network="")
    except (ValueError, TypeError) as exc:  # UsageError, or a config's validation
        parser.print_usage(sys.stderr)
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return run_serve(args, config, tls, argv[1:])
        return run_connect(args, client, tls, read_chunk, learner)
    except KeyboardInterrupt:
        return 130
