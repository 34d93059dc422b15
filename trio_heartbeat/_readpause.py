"""Keeping a blocked reader asleep for a while (Linux, Trio's epoll).

A task blocked in ``trio.lowlevel.wait_readable`` wakes as soon as its socket
becomes readable. The kicker wants the opposite for the connections it has
just kicked: their clients answer the CLOSE at once, and with thousands kicked
together each answer's wake-up (some 10 µs of the server's thread) lands while
later kicks are due; with 10,000 clients silent at once that was most of what
made the kicks late. :class:`ReadPause` takes such a socket out of Trio's epoll
without waking its reader, and puts it back later: the reader then wakes for
whatever arrived meanwhile (epoll is level-triggered).

Trio has no public API for this, so it reaches into Trio's epoll I/O manager
(its ``_registered`` waiters, ``_epoll`` and ``_update_registrations``). Where
those are missing (another platform, another Trio), :meth:`ReadPause.pause`
returns False and the reader wakes as it always did. What keeps it safe:

* a socket is paused only while one task waits to read it and none to write;
* a paused reader that is cancelled, or whose socket is closed (Trio's
  ``notify_closing``), wakes as usual: those paths do not need the epoll
  registration;
* the owner resumes every socket it paused (the kicker: once no kick has come
  for a moment, before it stops a linger, and when it ends). A socket that
  was closed meanwhile is skipped, and one whose descriptor was reused is
  left to its new owner.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import trio

__all__ = ["ReadPause"]

_NEEDED = ("_registered", "_epoll", "_update_registrations")
_WAITERS = ("read_task", "write_task", "current_flags")


def _epoll_manager() -> Any | None:
    """This Trio run's epoll I/O manager, if it has what a pause needs: the
    names above, and per descriptor a record of its reader, its writer and
    what is registered (checked on a fresh one, before anything is paused)."""
    runner = getattr(trio._core._run.GLOBAL_RUN_CONTEXT, "runner", None)
    manager = getattr(runner, "io_manager", None)
    if manager is None or not all(hasattr(manager, name) for name in _NEEDED):
        return None
    make_waiters = getattr(manager._registered, "default_factory", None)
    try:
        waiters = make_waiters() if callable(make_waiters) else None
    except TypeError:
        return None
    if waiters is None or not all(hasattr(waiters, name) for name in _WAITERS):
        return None
    return manager


class ReadPause:
    """Sockets whose blocked reader is kept asleep until :meth:`resume`.

    Used from within one Trio run (the one that was current at the first
    :meth:`pause`).
    """

    __slots__ = ("_looked", "_manager", "_paused")

    def __init__(self) -> None:
        self._looked = False  # for the manager, at the first pause
        self._manager: Any | None = None
        # Descriptor: until, oldest first. Ordered, because a plain dict emptied
        # from its front scans the emptied slots on every look at the first
        # (resuming 10,000, 64 at a time: 3 us per socket, instead of 0.3).
        self._paused: collections.OrderedDict[int, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._paused)

    @property
    def next_until(self) -> float:
        """The earliest ``until`` of the paused sockets (inf: none)."""
        return next(iter(self._paused.values()), math.inf)

    def pause(self, fd: int, until: float = math.inf) -> bool:
        """Keep the task reading ``fd`` asleep, whatever arrives, until a
        resume (:meth:`resume` wakes it by ``until``: give them in order);
        False if it cannot be done (nobody or a writer waits on it, or no
        epoll here)."""
        if not self._looked:
            self._looked = True
            self._manager = _epoll_manager()
        manager = self._manager
        if manager is None:
            return False
        waiters = manager._registered.get(fd)
        if (
            waiters is None
            or waiters.read_task is None
            or waiters.write_task is not None
            or fd in self._paused
        ):
            return False
        try:
            manager._epoll.unregister(fd)
        except OSError:
            return False
        # What Trio believes is registered: nothing, so that the next change
        # (a resume, a write wait) registers the socket again.
        waiters.current_flags = 0
        self._paused[fd] = until
        return True

    def resume(self, count: int | None = None, due: float = math.inf) -> None:
        """Wake-ups back on for the ``count`` oldest paused sockets (all),
        of those whose ``until`` is ``due`` or earlier."""
        paused = self._paused
        for _ in range(len(paused) if count is None else min(count, len(paused))):
            fd, until = next(iter(paused.items()))
            if until > due:
                return
            del paused[fd]
            self._rearm(fd)

    def resume_fd(self, fd: int) -> None:
        """Wake-ups back on for ``fd``, if it is paused."""
        if self._paused.pop(fd, None) is not None:
            self._rearm(fd)

    def _rearm(self, fd: int) -> None:
        manager = self._manager
        if manager is None:  # pragma: no cover - only what pause() added
            return
        waiters = manager._registered.get(fd)
        # Gone (closed, or its reader was cancelled), or registered again by
        # someone since: nothing to put back.
        if waiters is not None and waiters.current_flags == 0:
            manager._update_registrations(fd)
