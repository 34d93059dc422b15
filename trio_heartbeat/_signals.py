"""Graceful shutdown on SIGINT / SIGTERM, for programs that run a server.

``trio.run(serve_tcp, ...)`` stops on Ctrl-C with a ``KeyboardInterrupt``
raised through the server's nurseries: the clients do get CLOSE(5), but the
program ends in a traceback. Cancelling the server instead, when the signal
comes, is the Trio way to shut down: every connection sends CLOSE(5), waits
briefly for its client, and the program returns normally.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable

import trio

__all__ = ["cancel_on_signals"]

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def cancel_on_signals(
    scope: trio.CancelScope, signals: Iterable[int] = DEFAULT_SIGNALS
) -> int:
    """Wait for one of ``signals``, then cancel ``scope``; returns the signal.

    Start it beside your server, in the nursery whose scope you pass::

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    trio_heartbeat.cancel_on_signals, nursery.cancel_scope
                )
                await nursery.start(trio_heartbeat.serve_tcp, handler, 5005)

        trio.run(main)  # Ctrl-C or SIGTERM: CLOSE(5) to everyone, then returns

    The handlers are installed while it waits (Trio restores the previous
    ones afterwards), and only in the main thread, as signal handling must be.
    """
    with trio.open_signal_receiver(*signals) as received:
        async for signum in received:
            scope.cancel()
            return signum
    raise AssertionError("the signal receiver ended")  # pragma: no cover
