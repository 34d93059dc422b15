"""The judge's own stalls: measured, so that nobody is judged for them.

While a process is stalled (a blocking call, CPU starvation, VM steal,
SIGSTOP, a laptop lid) no clock of its own runs a task: timers fire late, and
what the peers sent piles up unread in the socket buffers. A verdict ("silent
for ``timeout``") taken on waking would blame the peers for the judge's own
absence. So the time a task wakes *later than it asked to* beyond a small
tolerance is recorded as a stall, and liveness is measured in *awake time*:
elapsed time minus the stalls in between (Cassandra's failure detector refuses
to convict after a local pause for the same reason).

A task also wakes late when the loop is merely busy: a burst of 10,000 kicks,
or of reads, runs for a few hundred milliseconds before the next timer fires.
That is not a stall (the judge is awake, the kernel keeps receiving, and unread
bytes are seen there), and counting it as one would push every deadline behind
the burst back by its length, again and again while the burst lasts. So a
wake-up counts as a stall only for the part of its lateness in which the loop's
thread was *not running* (wall time minus the thread's CPU time since a sample
taken no later than the wake-up was due; the kicker samples at every pass). A
long garbage collection runs on the CPU and is no stall either: the bytes it
holds up wait in the kernel, where the kicker looks before it judges.

:class:`StallLedger` is the sans-IO record (times are passed in);
:class:`LagMonitor` adds the Trio probe that keeps it current while nothing
else would notice, and the loop-lag figures operators watch.
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from collections.abc import Callable
from typing import Final

import trio

__all__ = [
    "KICK_BUCKETS",
    "LAG_BUCKETS",
    "STALL_TOLERANCE",
    "Histogram",
    "LagMonitor",
    "StallLedger",
]

#: Lateness up to this is ordinary scheduling (a busy batch, a short collection)
#: and not a stall. Heartbeat timeouts are seconds; a tenth of one is noise.
STALL_TOLERANCE: Final = 0.1
#: How often the probe wakes by default: nothing measurable in CPU (idle CPU
#: stays 0.0 %), and the figures are at most a second old.
PROBE_PERIOD: Final = 1.0
#: Upper bounds (seconds) of the lateness histogram's buckets (then +Inf).
LAG_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
#: Upper bounds of the kick-lateness histogram: the loop's, with the range
#: where a busy server's kicks land (50-250 ms) split finer, so that its p99
#: reads as more than "somewhere in 100-250 ms".
KICK_BUCKETS: Final = tuple(sorted({*LAG_BUCKETS, 0.125, 0.15, 0.2}))
#: Lateness samples kept for the "recent" percentile.
RECENT: Final = 1024
#: CPU-time samples kept to tell a busy loop from a stalled one (an observer
#: due since before all of them counts its whole lateness, as if idle
#: meanwhile), and how far apart they are at least: the CPU clock is a system
#: call (0.6 us), and the kicker may pass thousands of times a second. A sample
#: up to that much older than a due time counts that much more as a stall,
#: never less.
SAMPLES: Final = 8
SAMPLE_EVERY: Final = 0.01
#: Stalls the ledger remembers (the oldest half is dropped past it). A server
#: stalled every second for eighteen hours stays within it.
MAX_STALLS: Final = 65536


class Histogram:
    """Durations counted per bucket in plain integers (what a Prometheus
    histogram exports), plus the worst one seen: cheap enough to observe on
    every event it measures."""

    __slots__ = ("bounds", "count", "counts", "max", "sum")

    def __init__(self, bounds: tuple[float, ...] = LAG_BUCKETS) -> None:
        #: Upper bounds of the buckets, seconds (then +Inf).
        self.bounds = bounds
        #: Observations per bucket, not cumulative (the last: beyond every bound).
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        if value > self.max:
            self.max = value

    def buckets(self) -> tuple[tuple[float, int], ...]:
        """``(upper bound, count)`` pairs, ``inf`` last."""
        return tuple(zip((*self.bounds, math.inf), self.counts, strict=True))


class StallLedger:
    """Stalls observed so far, as merged intervals of time.

    :meth:`observe` takes "I asked to run at ``expected``, and run at
    ``actual``": lateness beyond ``tolerance`` reveals a stall from ``expected``
    to ``actual``. Several observers report the same stall, each knowing only
    when *it* expected to run: the intervals are merged, so each second is
    counted once and the stall starts at the earliest expectation.
    :meth:`stalled_since` answers how much of the time since an instant was
    stalled.
    """

    __slots__ = ("_intervals", "tolerance", "total")

    def __init__(self, tolerance: float = STALL_TOLERANCE) -> None:
        self.tolerance = tolerance
        #: Seconds stalled in all.
        self.total = 0.0
        self._intervals: list[list[float]] = []  # [start, end], in order

    def observe(self, expected: float, actual: float) -> float:
        """Record a wake-up; returns the seconds of stall it adds (0 if none)."""
        if actual - expected <= self.tolerance:
            return 0.0
        intervals = self._intervals
        if intervals and expected <= intervals[-1][1]:
            last = intervals[-1]
            before = last[1] - last[0]
            last[0] = min(last[0], expected)
            last[1] = max(last[1], actual)
            added = (last[1] - last[0]) - before
        else:
            intervals.append([expected, actual])
            added = actual - expected
            if len(intervals) > MAX_STALLS:
                del intervals[: MAX_STALLS // 2]
        self.total += added
        return added

    def stalled_since(self, since: float) -> float:
        """Seconds of the stalls recorded that lie after ``since``."""
        stalled = 0.0
        for start, end in reversed(self._intervals):
            if end <= since:
                break
            stalled += end - max(start, since)
        return stalled


class LagMonitor:
    """A Trio task's view of the event loop: lag samples and the stall ledger.

    :meth:`run` wakes every ``period`` and records how late it woke. Its figures:
    :attr:`lateness` (every wake-up, a histogram), :attr:`lag_max` (the worst
    since start) and :meth:`lag_p99` (over the last 1,024 wake-ups), in seconds.
    """

    __slots__ = ("_cpu", "_recent", "_samples", "lateness", "ledger", "period")

    def __init__(
        self,
        period: float = PROBE_PERIOD,
        tolerance: float = STALL_TOLERANCE,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        self.period = period
        self.ledger = StallLedger(tolerance)
        self.lateness = Histogram(LAG_BUCKETS)
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT)
        self._cpu = cpu_clock  # chosen on first use (see _cpu_clock) if None
        # (loop time, CPU time of the loop's thread), newest last.
        self._samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=SAMPLES
        )

    def sample(self, now: float) -> None:
        """Note the loop's thread CPU time at loop time ``now`` (the kicker
        calls this at every pass; at most one reading per ``SAMPLE_EVERY``):
        a busy stretch after it is then told from a stall."""
        samples = self._samples
        if not samples or now - samples[-1][0] >= SAMPLE_EVERY:
            samples.append((now, self._cpu_time()))

    def observe(self, expected: float, actual: float) -> float:
        """A task woke at ``actual`` for ``expected``; the stall it reveals:
        of the lateness, the part the loop's thread did not run."""
        late = max(0.0, actual - expected)
        self.lateness.observe(late)
        self._recent.append(late)
        if late <= self.ledger.tolerance:
            self.sample(actual)
            return 0.0
        cpu = self._cpu_time()
        for at, cpu_at in reversed(self._samples):
            if at <= expected:
                idle = (actual - at) - (cpu - cpu_at)
                if idle < late:
                    expected = actual - max(0.0, idle)
                break
        self._samples.append((actual, cpu))
        return self.ledger.observe(expected, actual)

    def _cpu_time(self) -> float:
        if self._cpu is None:
            self._cpu = _cpu_clock()
        return self._cpu()

    @property
    def lag_max(self) -> float:
        """The worst lateness since start, seconds."""
        return self.lateness.max

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


def _cpu_clock() -> Callable[[], float]:
    """The loop thread's CPU time, under Trio's own clock. Under any other
    (``trio.testing.MockClock``: virtual time passes only while no task runs,
    or jumps as a stall would) one that stands still: every late second is
    then a second the loop did not run."""
    clock = type(trio.lowlevel.current_clock())
    if clock.__name__ == "SystemClock" and clock.__module__.startswith("trio."):
        return time.thread_time
    return _still


def _still() -> float:
    return 0.0
