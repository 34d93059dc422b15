"""The judge's own stalls: measured, so that nobody is judged for them.

While a process is stalled (a long garbage collection, a blocking call, CPU
starvation, VM steal, SIGSTOP, a laptop lid) no clock of its own runs a task:
timers fire late, and what the peers sent piles up unread in the socket
buffers. A verdict ("silent for ``timeout``") taken on waking would blame the
peers for the judge's own absence. So the time a task wakes *later than it
asked to* beyond a small tolerance is recorded as a stall, and liveness is
measured in *awake time*: elapsed time minus the stalls in between
(Cassandra's failure detector refuses to convict after a local pause for the
same reason).

:class:`StallLedger` is the sans-IO record (times are passed in);
:class:`LagMonitor` adds the Trio probe that keeps it current while nothing
else would notice, and the loop-lag figures operators watch.
"""

from __future__ import annotations

import bisect
import collections
import math
from typing import Final

import trio

__all__ = ["STALL_TOLERANCE", "LagMonitor", "StallLedger"]

#: Lateness up to this is ordinary scheduling (a busy batch, a short collection)
#: and not a stall. Heartbeat timeouts are seconds; a tenth of one is noise.
STALL_TOLERANCE: Final = 0.1
#: How often the probe wakes by default: nothing measurable in CPU (idle CPU
#: stays 0.0 %), and the figures are at most a second old.
PROBE_PERIOD: Final = 1.0
#: Lateness samples kept for the "recent" percentile.
RECENT: Final = 1024
#: Stalls the ledger remembers; older ones are folded into one base figure.
#: Even a server stalled four times a second for hours stays within it.
MAX_STALLS: Final = 65536


class StallLedger:
    """Stalls observed so far, as (end, cumulative seconds) steps.

    :meth:`observe` takes "I asked to run at ``expected``, and run at
    ``actual``"; lateness beyond ``tolerance`` is a stall from ``expected`` to
    ``actual``. Several observers may report the same stall: each second is
    counted once. :meth:`stalled_since` answers how much of the time since an
    instant was stalled.
    """

    __slots__ = ("_base", "_ends", "_totals", "accounted_until", "tolerance", "total")

    def __init__(self, tolerance: float = STALL_TOLERANCE) -> None:
        self.tolerance = tolerance
        #: Seconds stalled in all.
        self.total = 0.0
        #: Up to when stalls have been accounted for.
        self.accounted_until = -math.inf
        self._ends: list[float] = []
        self._totals: list[float] = []
        # The cumulative figure of stalls forgotten (older than any kept).
        self._base = 0.0

    def observe(self, expected: float, actual: float) -> float:
        """Record a wake-up; returns the stall it reveals (0 if none)."""
        late = actual - expected
        if late <= self.tolerance or actual <= self.accounted_until:
            return 0.0
        start = max(expected, self.accounted_until)
        stalled = actual - start
        self.accounted_until = actual
        self.total += stalled
        self._ends.append(actual)
        self._totals.append(self.total)
        if len(self._ends) > MAX_STALLS:
            self._forget(len(self._ends) // 2)
        return stalled

    def stalled_since(self, since: float) -> float:
        """Seconds of stalls that ended after ``since`` (a stall cannot
        contain an instant at which something ran, so each is wholly after)."""
        index = bisect.bisect_right(self._ends, since)
        before = self._totals[index - 1] if index else self._base
        return self.total - before

    def _forget(self, count: int) -> None:
        self._base = self._totals[count - 1]
        del self._ends[:count]
        del self._totals[:count]


class LagMonitor:
    """A Trio task's view of the event loop: lag samples and the stall ledger.

    :meth:`run` wakes every ``period`` and records how late it woke. Its figures:
    :attr:`lag_max` (the worst since start) and :meth:`lag_p99` (over the last
    1,024 wake-ups), in seconds.
    """

    __slots__ = ("_recent", "lag_max", "ledger", "period", "wakeups")

    def __init__(
        self, period: float = PROBE_PERIOD, tolerance: float = STALL_TOLERANCE
    ) -> None:
        self.period = period
        self.ledger = StallLedger(tolerance)
        self.lag_max = 0.0
        self.wakeups = 0
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT)

    def observe(self, expected: float, actual: float) -> float:
        """A task woke at ``actual`` for ``expected``; the stall it reveals."""
        late = max(0.0, actual - expected)
        self.wakeups += 1
        self._recent.append(late)
        if late > self.lag_max:
            self.lag_max = late
        return self.ledger.observe(expected, actual)

    def lag_p99(self) -> float:
        """The 99th percentile of recent lateness, seconds (0 before any)."""
        if not self._recent:
            return 0.0
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    async def run(self) -> None:
        """Probe forever (cancel to stop)."""
        expected = trio.current_time() + self.period
        while True:
            await trio.sleep_until(expected)
            now = trio.current_time()
            self.observe(expected, now)
            expected = now + self.period
