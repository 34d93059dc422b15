"""The φ accrual failure detector (Hayashibara, Défago, Yared, Katayama, 2004).

A fixed rule says "dead after T of silence" whatever the link's rhythm. An
accrual detector instead learns how long the gaps between a peer's heartbeats
usually are, and turns the current silence into a suspicion level φ: the
silence has a probability 10^-φ of being a normal gap. A verdict is taken when
φ reaches a threshold (8 in Akka and Cassandra: one false verdict in 10^8
gaps, if gaps were normally distributed). On a steady link that is soon after
the usual gap; on a jittery one, later.

As Akka's detector: the gaps are modelled as a normal distribution whose mean
is shifted by an *acceptable pause* (silences this much longer than usual are
not suspicious at all), with a floor under the standard deviation (a perfectly
regular peer would otherwise be convicted for a millisecond's delay), and φ is
computed with the logistic approximation of the normal CDF. Unlike Akka's
sliding window of 1,000 samples, the mean and variance are exponentially
weighted (a window of about :data:`WINDOW` gaps), so a detector costs three
floats, whatever the history: a server holds one per connection.

Sans-IO: gaps and times are passed in.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, Final

__all__ = ["WINDOW", "PhiAccrual", "phi", "suspicion_after"]

#: The exponential weighting's equivalent window, in gaps. With heartbeats a
#: few seconds to a minute apart, the last hundred span minutes to hours.
WINDOW: Final = 100


def phi(elapsed: float, mean: float, std: float) -> float:
    """φ of a silence of ``elapsed`` seconds, for gaps ~ N(mean, std²).

    The logistic approximation of the normal CDF that Akka uses
    (Bowling et al., 2009), accurate to 1.4e-4 and cheap.
    """
    y = (elapsed - mean) / std
    exponent = -y * (1.5976 + 0.070566 * y * y)
    if exponent < -700:  # exp() underflows: beyond any threshold
        return math.inf
    e = math.exp(min(exponent, 700.0))
    if elapsed > mean:
        return -math.log10(e / (1.0 + e))
    return -math.log10(1.0 - 1.0 / (1.0 + e))


@cache
def suspicion_after(threshold: float) -> float:
    """The ``y`` (standard deviations past the mean) at which φ = ``threshold``.

    Solves ``-log10(e / (1 + e)) = threshold`` with ``e = exp(-y (1.5976 +
    0.070566 y²))`` by Newton's method; computed once per threshold.
    """
    p = 10.0**-threshold
    target = math.log(p / (1.0 - p))  # ln e at the threshold
    y = 1.0
    for _ in range(50):
        value = -y * (1.5976 + 0.070566 * y * y) - target
        slope = -(1.5976 + 3 * 0.070566 * y * y)
        step = value / slope
        y -= step
        if abs(step) < 1e-12:
            break
    return y


class PhiAccrual:
    """φ of one peer, learnt from the gaps between its heartbeats.

    ``first_gap`` seeds the estimate (a server seeds with the negotiated
    interval), with a standard deviation of a quarter of it, as Akka seeds from
    its first heartbeat; ``None`` starts with no estimate, and no verdict until
    the first gap. ``min_std`` and ``acceptable_pause`` are in seconds.
    """

    __slots__ = (
        "acceptable_pause",
        "mean",
        "min_std",
        "samples",
        "threshold",
        "variance",
    )

    def __init__(
        self,
        first_gap: float | None,
        *,
        threshold: float = 8.0,
        min_std: float,
        acceptable_pause: float,
    ) -> None:
        self.threshold = threshold
        self.min_std = min_std
        self.acceptable_pause = acceptable_pause
        self.mean = 0.0 if first_gap is None else first_gap
        self.variance = (self.mean / 4) ** 2
        self.samples = 0 if first_gap is None else 1

    @classmethod
    def from_settings(
        cls, settings: Any, first_gap: float | None, scale: float
    ) -> PhiAccrual:
        """A detector from a config's ``phi_*`` fields (client or server);
        ``scale`` (the expected gap) sets the defaults: a standard deviation
        floor of a tenth of it, and a pause of it that is not suspicious."""
        return cls(
            first_gap,
            threshold=settings.phi_threshold,
            min_std=settings.phi_min_std or scale / 10,
            acceptable_pause=(
                scale
                if settings.phi_acceptable_pause is None
                else settings.phi_acceptable_pause
            ),
        )

    @property
    def std(self) -> float:
        """The standard deviation used: the estimate, or the floor."""
        return max(math.sqrt(self.variance), self.min_std)

    def gap(self, seconds: float) -> None:
        """A heartbeat came ``seconds`` after the one before."""
        self.samples += 1
        alpha = 1.0 / min(self.samples, WINDOW)
        diff = seconds - self.mean
        self.mean += alpha * diff
        self.variance = (1.0 - alpha) * (self.variance + alpha * diff * diff)

    def phi(self, silence: float) -> float:
        """The suspicion level after ``silence`` seconds without a heartbeat."""
        if not self.samples:
            return 0.0
        return phi(silence, self.mean + self.acceptable_pause, self.std)

    def verdict_after(self) -> float:
        """The silence, in seconds, at which φ reaches the threshold (``inf``
        before any gap is known)."""
        if not self.samples:
            return math.inf
        y = suspicion_after(self.threshold)
        return self.mean + self.acceptable_pause + y * self.std
