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

The framed client and the legacy client both drive this one implementation: they
ask :meth:`RetrySchedule.poll` what to do now, do it, and sleep until
:meth:`RetrySchedule.next_wakeup`.
"""

from __future__ import annotations

import enum
import math
import random

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
        "_probe_start",
        "interval",
        "jitter",
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
    ) -> None:
        #: The idle interval; an adaptive client may change it between periods.
        self.interval = interval
        self.retry_interval = retry_interval
        self.retries = retries
        self.jitter = jitter
        self.rng = rng or random.Random()
        #: First PING of the unanswered probe under way, else None.
        self._probe_start: float | None = None
        self._attempt = 0
        self._idle_wait = self._draw_wait()

    def _draw_wait(self) -> float:
        if not self.jitter:
            return self.interval
        return self.interval * (1 + self.rng.uniform(-self.jitter, self.jitter))

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

    def poll(self, now: float, last_sent: float, last_received: float) -> Action:
        """What to do at ``now``."""
        start = self._probe_start
        if start is not None:
            if last_received >= start:
                # Answered: a new idle period began with that answer.
                self._probe_start = None
                self._idle_wait = self._draw_wait()
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
            return start + (self._attempt + 1) * self.retry_interval
        due = min(last_sent, last_received) + self._idle_wait
        return due if math.isfinite(due) else -math.inf
