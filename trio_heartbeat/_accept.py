"""The accept loop: one task per listener, one handler task per connection.

The same behaviour as :func:`trio.serve_listeners` (accept errors that mean
"out of file descriptors or memory" are logged and retried after a short sleep,
others propagate), without its per-connection wrapper task frame and second
forced close: the heartbeat server closes each stream itself.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NoReturn

import trio

__all__ = ["ACCEPT_CAPACITY_ERRNOS", "serve_accept_loop"]

logger = logging.getLogger("trio_heartbeat.server")

#: As trio.serve_listeners: these mean "try again when resources free up".
ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
#: Trio's choice too: long enough not to spin, short enough to recover fast.
ACCEPT_RETRY_SLEEP: Final = 0.1


def _limit_note(code: int | None) -> str:
    """For EMFILE: the descriptor limit that was reached."""
    if code != errno.EMFILE:
        return ""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return ""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f": all {soft} file descriptors of this process are in use"


async def _accept_forever(
    listener: trio.abc.Listener[Any],
    handler_nursery: trio.Nursery,
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
) -> NoReturn:
    failed = 0  # accepts failed in this burst
    burst_start = 0.0
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                if not failed:  # once per burst, not every retry
                    burst_start = trio.current_time()
                    logger.error(
                        "accept returned %s (%s)%s; retrying every %s s, "
                        "waiting clients stay in the listen backlog",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                        os.strerror(exc.errno or 0),
                        _limit_note(exc.errno),
                        ACCEPT_RETRY_SLEEP,
                        extra={"event": "accept_failed", "code": exc.errno},
                    )
                failed += 1
                await trio.sleep(ACCEPT_RETRY_SLEEP)
            else:
                if failed:
                    logger.warning(
                        "accepting again, after %d failed accepts over %.1f s",
                        failed,
                        trio.current_time() - burst_start,
                        extra={"event": "accept_recovered"},
                    )
                    failed = 0
                handler_nursery.start_soon(handler, stream)


async def serve_accept_loop(
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    handler_nursery: trio.Nursery | None,
    task_status: trio.TaskStatus[Sequence[trio.abc.Listener[Any]]],
) -> NoReturn:
    """Accept on every listener; ``handler(stream)`` must close its stream."""
    async with trio.open_nursery() as nursery:
        if handler_nursery is None:
            handler_nursery = nursery
        for listener in listeners:
            nursery.start_soon(_accept_forever, listener, handler_nursery, handler)
        # The listeners are already open and listening: report them now.
        task_status.started(listeners)
    raise AssertionError("accept loops never end")  # pragma: no cover
