"""The client's retry rule, sans-IO: when to PING, resend, or declare the server dead.

The rule, exactly:

* PING when nothing was *sent* for ``interval`` (keep the path open) or nothing
  was *received* for ``interval`` (sending is no proof that the server is
  there);
* after a PING, if nothing at all is received for ``retry_interval``, resend;
* after ``retries`` unanswered resends (``retries + 1`` PINGs) the server is
  dead: at first PING + (retries + 1) x retry_interval.

Any bytes received after the first PING are an answer. ``jitter`` draws each idle
wait from interval x [1 - jitter, 1 + jitter], so that clients that reconnected
together drift apart instead of pinging in lockstep.

With a φ accrual detector (over the PINGs' round trips), the server is also
declared dead once φ of the unanswered PING's wait reaches its threshold,
whichever comes first.

The client's own stalls (a laptop lid, SIGSTOP, a long collection) are no
evidence against the server: after one (:meth:`RetrySchedule.stalled`), a probe
under way is retried with a fresh PING and a full ``retry_interval`` to answer
it, so that no verdict is taken without a PING sent after resuming.

The framed client and the legacy client both drive this one implementation: they
ask :meth:`RetrySchedule.poll` what to do now, do it, and sleep until
:meth:`RetrySchedule.next_wakeup`.
"""

from __future__ import annotations

import enum
import math
import random

from ._detector import PhiAccrual

__all__ = ["Action", "RetrySchedule"]


class Action(enum.Enum):
    """What :meth:`RetrySchedule.poll` asks the client to do now."""

    NOTHING = "nothing"
    PING = "ping"
    RESEND = "resend"
    DEAD = "dead"


class RetrySchedule:
    """The retry rule of one connection.

    Times are the caller's clock (``trio.current_time()``); ``last_sent`` and
    ``last_received`` are when the connection last wrote and received anything.
    """

    __slots__ = (
        "_attempt",
        "_idle_wait",
        "_polled",
        "_probe_start",
        "_resend_now",
        "answered",
        "detector",
        "interval",
        "jitter",
        "jitter_below",
        "retries",
        "retry_interval",
        "rng",
    )

    def __init__(
        self,
        interval: float,
        retry_interval: float,
        retries: int,
        *,
        jitter: float = 0.0,
        rng: random.Random | None = None,
        detector: PhiAccrual | None = None,
    ) -> None:
        #: The idle interval; an adaptive client may change it between periods.
        self.interval = interval
        self.retry_interval = retry_interval
        self.retries = retries
        self.jitter = jitter
        #: Draw waits from interval x [1 - jitter, 1] instead (an adaptive
        #: client's interval is a ceiling it learned, never to be exceeded).
        self.jitter_below = False
        self.rng = rng or random.Random()
        #: First PING of the unanswered probe under way, else None.
        self._probe_start: float | None = None
        #: Probes answered so far (an adaptive client counts its evidence).
        self.answered = 0
        self._attempt = 0
        self._resend_now = False
        self._idle_wait = self._draw_wait()
        self._polled = -math.inf
        #: φ over round trips (None: the fixed rule alone).
        self.detector = detector

    def _draw_wait(self) -> float:
        if not self.jitter:
            return self.interval
        if self.jitter_below:
            return self.interval * (1 - self.rng.uniform(0, self.jitter))
        return self.interval * (1 + self.rng.uniform(-self.jitter, self.jitter))

    def set_interval(self, interval: float) -> None:
        """Use ``interval`` from now on (the wait under way is drawn afresh,
        still counted from the last traffic)."""
        self.interval = interval
        self._idle_wait = self._draw_wait()

    @property
    def probing(self) -> bool:
        """Whether a PING is out and still unanswered."""
        return self._probe_start is not None

    @property
    def probe_start(self) -> float | None:
        """When the unanswered probe's first PING was sent."""
        return self._probe_start

    @property
    def verdict_after(self) -> float:
        """Seconds from the first PING to the verdict: (retries + 1) x
        retry_interval."""
        return (self.retries + 1) * self.retry_interval

    def attempt_deadline(self) -> float:
        """Until when the current PING (first or resend) may take to go out."""
        assert self._probe_start is not None
        return self._probe_start + (self._attempt + 1) * self.retry_interval

    def _phi_verdict(self, start: float) -> float:
        if self.detector is None:
            return math.inf
        return start + self.detector.verdict_after()

    def take_answer(self, last_received: float) -> bool:
        """Whether the probe under way was answered (by anything received
        since its first PING); if so, it is over, and a new idle period began
        with that answer."""
        start = self._probe_start
        if start is None or last_received < start:
            return False
        self._probe_start = None
        self.answered += 1
        self._resend_now = False
        self._idle_wait = self._draw_wait()
        return True

    def poll(self, now: float, last_sent: float, last_received: float) -> Action:
        """What to do at ``now``."""
        self._polled = now
        self.take_answer(last_received)
        start = self._probe_start
        if start is not None:
            if self._resend_now:
                self._resend_now = False
                return Action.RESEND
            elif now >= self._phi_verdict(start):
                return Action.DEAD
            elif now >= start + (self._attempt + 1) * self.retry_interval:
                self._attempt += 1
                if self._attempt > self.retries:
                    return Action.DEAD
                return Action.RESEND
            else:
                return Action.NOTHING
        if now >= min(last_sent, last_received) + self._idle_wait:
            self._probe_start = now
            self._attempt = 0
            return Action.PING
        return Action.NOTHING

    def next_wakeup(self, last_sent: float, last_received: float) -> float:
        """When :meth:`poll` may next have something to do."""
        start = self._probe_start
        if start is not None:
            if self._resend_now:
                return -math.inf
            attempt_due = start + (self._attempt + 1) * self.retry_interval
            wake = min(attempt_due, self._phi_verdict(start))
            if self._idle_wait < self.retry_interval:
                # An answer starts a new idle period, whose PING may be due
                # before the next attempt: look again every idle wait.
                periods = math.floor((self._polled - start) / self._idle_wait) + 1
                wake = min(wake, start + periods * self._idle_wait)
            return wake
        due = min(last_sent, last_received) + self._idle_wait
        return due if math.isfinite(due) else -math.inf

    def stalled(self, now: float) -> None:
        """This side was stalled until ``now``: a probe under way gets a fresh
        PING (the next :meth:`poll` says RESEND) and a full retry interval, as
        if its current attempt began now."""
        if self._probe_start is not None:
            self._probe_start = now - self._attempt * self.retry_interval
            self._resend_now = True
