"""Reconnect delays: exponential backoff with full jitter (sans-IO).

"Full jitter" (the AWS architecture blog's name) draws each delay uniformly from
[0, min(cap, base x 2**attempt)]: clients that lost the server together spread
their reconnects over the whole window instead of arriving in waves.
"""

from __future__ import annotations

import math
import random

import attrs

from ._config import positive

__all__ = ["Backoff"]


@attrs.define(kw_only=True)
class Backoff:
    """Delay before each reconnect attempt.

    ``base`` is the first window, doubled per consecutive failure up to ``cap``.
    A connection that stayed up for at least ``reset_after`` seconds resets the
    sequence. ``jitter=False`` gives the bare exponential (for tests and docs).
    """

    base: float = attrs.field(default=0.5, validator=positive)
    cap: float = attrs.field(default=30.0, validator=positive)
    reset_after: float = attrs.field(default=60.0, validator=positive)
    jitter: bool = True
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    attempt: int = 0

    def window(self) -> float:
        """The upper bound of the next delay."""
        # Bound the exponent so 2**attempt never overflows a float.
        return min(self.cap, math.ldexp(self.base, min(self.attempt, 60)))

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count the failure."""
        window = self.window()
        self.attempt += 1
        return self.rng.uniform(0, window) if self.jitter else window

    def connection_ended(self, uptime: float) -> None:
        """Report how long the last connection stayed up."""
        if uptime >= self.reset_after:
            self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0
