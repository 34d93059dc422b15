"""One task per server enforces every connection's idle deadline, lazily.

A read only stores its time (the session's ``last_received``, one float). The
kicker keeps a heap of *candidate* deadlines and sleeps until the earliest; when
it wakes, a connection heard from since is pushed back at last received +
timeout, and a silent one is kicked there and then. Compared with moving a
cancel-scope deadline on every read, the heartbeat path does no heap work at
all, and each connection costs the kicker about one heap operation per timeout
period. Kicking from one task also means that when a thousand clients fall
silent together, their CLOSE frames are written in a few passes (of up to
``KICKS_PER_PASS``, with everyone else's turn in between) rather than after
several scheduler rounds across every task involved.

Silence is measured in the server's *awake* time, and nobody is judged on bytes
the server has not read yet:

* each deadline is pushed back by the stalls since that connection was last
  heard from (the server's :class:`~._lag.LagMonitor` records them: a blocking
  call, SIGSTOP, CPU starvation, VM steal). A kicker behind its deadlines is
  busy, not stalled: it notes no lateness of its own for a deadline already
  past when it went back to waiting (a backlog of kicks counted as a stall
  would push every deadline behind it back, again and again while the burst
  lasts);
* a connection with unread bytes in the kernel (FIONREAD) is alive, whatever
  its reader has managed to read (unless its reader is stuck writing to it:
  then the peer stopped reading, and is dropped as a slow consumer);
* where the transport cannot tell (no socket underneath, no FIONREAD), a
  kicker that wakes late judges nobody for a short grace
  (``STALL_TOLERANCE``), in which the readers read what piled up meanwhile.
  Over sockets FIONREAD answers at once: a grace there would only hold back
  every kick due behind a burst of the kicker's own work (10,000 clients
  silent at once: p99 of CLOSE writes 536 ms with it, 390 ms without, one
  process).

A silent client is still kicked, at most ``timeout`` of awake time after its
last byte.

A kicked connection whose reader keeps waiting for the client's answer to the
CLOSE (a per-message reader on a plain socket) is *lingering*: the kicker ends
that wait ``close_timeout`` later. Every linger lasts the same, so a FIFO queue
keeps them in deadline order.

Kicks come before cleanups. When thousands fall silent together, each kick
wakes its connection's task a moment later (the client answers the CLOSE), and
the teardown that follows (closing the socket, the hooks, the task's end) costs
more than the kick. Run in turn with the kicks, those teardowns would make every
kick behind them late: with 10,000 at once, the later kicks came hundreds of
milliseconds after their deadlines. So while the kicker is busy (kicks overdue,
or some in its last pass), a connection that ends waits in :meth:`cleanup_turn`,
and the kicker lets the waiting through in chunks: a few per pass while kicks
are overdue (so they are never starved), more otherwise. The kicks' log
lines (``after_kicks``) get the same share per pass.

The answers themselves are kept out of the way too. A kicked connection whose
reader waits on its socket for the client's answer is not woken by it at all
while kicks go on: the kicker takes the socket out of Trio's epoll
(:class:`~._readpause.ReadPause`; Linux, through Trio's internals, else not at
all) and puts it back once no kick has come for ``ASLEEP_UNTIL_QUIET``, after
``ASLEEP_AT_MOST`` whatever comes, before it stops a linger, and when it ends;
``CLEANUPS_PER_PASS`` at a time. With 10,000 clients silent at once in one
process, each answer's wake-up (10-15 us) had been what made the kicks late.
A reader woken while the kicker is still busy waits its turn before it even
reads the answer (the server's ``hold_answer``).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
import sys
from collections.abc import Callable, Collection
from typing import Final

import trio

from ._connection import HeartbeatConnection
from ._lag import KICK_BUCKETS, STALL_TOLERANCE, Histogram, LagMonitor
from ._readpause import ReadPause
from ._transport import stream_socket

__all__ = ["Kicker"]

#: Cleanups (and kick log lines) let through per pass of the kicker while kicks
#: are overdue, and otherwise (each costs tens of microseconds, and the cleanups
#: let through run in one scheduler round).
CLEANUPS_WHILE_BEHIND: Final = 8
CLEANUPS_PER_PASS: Final = 64
#: Kicks per pass at most: then everyone else gets a turn (a PONG held behind
#: 1,000 kicks would wait tens of milliseconds), and the kicker goes on next
#: scheduler round.
KICKS_PER_PASS: Final = 128
#: Kicked connections' readers sleep until no kick has come for this long
#: (seconds), or for ASLEEP_AT_MOST, then wake CLEANUPS_PER_PASS at a time.
ASLEEP_UNTIL_QUIET: Final = 0.05
ASLEEP_AT_MOST: Final = 1.0


class Kicker:
    """Kicks connections silent for ``timeout`` seconds, via ``kick(conn)``.

    ``kick`` returns True when the connection lingers by itself afterwards; the
    kicker then calls its ``stop_lingering()`` after ``close_timeout``.
    ``after_kicks(budget)``, if given, runs after every pass: the kicks'
    follow-ups (their log lines), at most ``budget`` of them, the same share
    as cleanups get; it returns whether some are left. On exit it runs once
    more with no limit.
    ``live`` is the server's set of connections still being served: an entry
    whose connection left it is dropped when it comes up. After :meth:`stop`,
    :meth:`run` returns as soon as ``live`` is empty.

    :attr:`lateness` counts how late each kick came: when its CLOSE was
    written, against when the rule made the connection due (stalls included in
    the rule, so a kick held back by the server's own stall is not late).
    """

    def __init__(
        self,
        timeout: float,
        close_timeout: float,
        kick: Callable[[HeartbeatConnection], bool],
        live: Collection[HeartbeatConnection],
        after_kicks: Callable[[int], bool] | None = None,
        monitor: LagMonitor | None = None,
    ) -> None:
        self.timeout = timeout
        self._after_kicks = after_kicks
        self._monitor = monitor or LagMonitor()
        self.close_timeout = close_timeout
        self._kick = kick
        self._live = live
        self._heap: list[tuple[float, int, HeartbeatConnection]] = []
        self._lingering: collections.deque[tuple[float, HeartbeatConnection]] = (
            collections.deque()
        )
        self._order = itertools.count()  # ties: no comparing connections
        self._wakeup = trio.Event()
        self._stopping = False
        self.lateness = Histogram(KICK_BUCKETS)
        self._cleanups = trio.lowlevel.ParkingLot()
        self._busy = False  # kicks overdue, or some in the last pass
        self._asleep = ReadPause()  # kicked connections' readers
        self._quiet_at = -math.inf  # when the readers may wake: no kick since

    def watch(self, conn: HeartbeatConnection) -> None:
        """Start watching ``conn``: kicked ``timeout`` after it was last heard
        from, or after now if that is later (the handshake just finished)."""
        allowed = conn.session.silence_allowed(self.timeout)
        entry = (trio.current_time() + allowed, next(self._order), conn)
        heapq.heappush(self._heap, entry)
        # Only a new earliest entry changes when the kicker must wake (with the
        # fixed rule, every other entry is due no later: same timeout, earlier
        # start).
        if self._heap[0] is entry:
            self._wakeup.set()

    def linger(self, conn: HeartbeatConnection) -> None:
        """``conn`` was ended from outside (replaced) and lingers for its
        client's answer: stop that wait after ``close_timeout``."""
        self._lingering.append((trio.current_time() + self.close_timeout, conn))
        self._wakeup.set()

    @property
    def busy(self) -> bool:
        """Whether an ending connection must wait its turn to clean up: kicks
        were overdue or made when the kicker last looked, or others wait."""
        return self._busy or bool(self._cleanups)

    async def cleanup_turn(self) -> None:
        """Wait until the kicker lets an ending connection clean up (when
        :attr:`busy`; else return at once). Call it shielded: the kicker lets
        every waiter through before it returns."""
        if self.busy:
            self._wakeup.set()
            await self._cleanups.park()

    def stop(self) -> None:
        """No new connections will come; end once the last one is gone."""
        self._stopping = True
        self._wakeup.set()

    def connection_ended(self) -> None:
        if self._stopping and not self._live:
            self._wakeup.set()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._busy = False
            self._asleep.resume()
            self._cleanups.unpark_all()
            if self._after_kicks is not None:
                self._after_kicks(sys.maxsize)

    async def _run(self) -> None:
        heap = self._heap
        lingering = self._lingering
        cleanups = self._cleanups
        timeout = self.timeout
        monitor = self._monitor
        ledger = monitor.ledger
        lateness = self.lateness
        wake = math.inf
        grace_until = -math.inf
        while True:
            now = trio.current_time()
            if now < wake:
                monitor.sample(now)
            elif monitor.observe(wake, now):
                # The process was stalled: the readers read what piled up
                # meanwhile before anyone is judged.
                grace_until = now + STALL_TOLERANCE
            while lingering and lingering[0][0] <= now:
                _, conn = lingering.popleft()
                if conn in self._live:
                    self._asleep.resume_fd(_fileno(conn))
                    conn.stop_lingering()
            kicked = 0
            while heap and heap[0][0] <= now and kicked < KICKS_PER_PASS:
                _, _, conn = heapq.heappop(heap)
                if conn.closed or conn not in self._live:
                    continue  # ending already, or gone
                since = conn.last_received
                due = (
                    since
                    + conn.session.silence_allowed(timeout)
                    + ledger.stalled_since(since)
                )
                if due <= now and not conn.replying:  # (replying: stuck
                    # writing, the peer stopped reading) Bytes in the kernel
                    # mean alive; where the transport cannot tell, a stall's
                    # grace lets the reader read what piled up first.
                    unread = conn.unread_input()
                    if unread or (unread is None and now < grace_until):
                        due = max(grace_until, now + STALL_TOLERANCE)  # see then
                if due > now:
                    heapq.heappush(heap, (due, next(self._order), conn))
                    continue
                kicked += 1
                if self._kick(conn):
                    lingering.append((now + self.close_timeout, conn))
                    self._asleep.pause(_fileno(conn), now + ASLEEP_AT_MOST)
                lateness.observe(trio.current_time() - due)
            now = trio.current_time()
            if kicked:
                self._quiet_at = now + ASLEEP_UNTIL_QUIET
            asleep = self._asleep
            if asleep:  # once quiet, the oldest; else those asleep too long
                quiet = now >= self._quiet_at
                asleep.resume(CLEANUPS_PER_PASS, math.inf if quiet else now)
            # The next of those, if any are left (now: more to let through).
            wake_asleep = max(now, min(self._quiet_at, asleep.next_until))
            behind = bool(heap) and heap[0][0] <= now
            self._busy = behind or kicked > 0
            share = CLEANUPS_WHILE_BEHIND if behind else CLEANUPS_PER_PASS
            if cleanups:
                cleanups.unpark(count=share)
            more = self._after_kicks is not None and self._after_kicks(share)
            if self._stopping and not self._live:
                return
            self._wakeup = trio.Event()
            wake = min(
                heap[0][0] if heap else math.inf,
                lingering[0][0] if lingering else math.inf,
                # Back next round: more to let through, or to see whether the
                # burst of kicks is over.
                now if cleanups or kicked or more else math.inf,
                wake_asleep if asleep else math.inf,
            )
            # When to run again, as asked now: a deadline already past is a
            # backlog of kicks, not a wake-up that comes late.
            wake = max(wake, trio.current_time())
            with trio.move_on_at(wake):
                await self._wakeup.wait()


def _fileno(conn: HeartbeatConnection) -> int:
    """The descriptor under ``conn`` (-1: none, or closed)."""
    sock = stream_socket(conn.stream)
    return sock.fileno() if sock is not None else -1
