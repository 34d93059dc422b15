"""Round-trip time estimation from PING/PONG samples (RFC 6298 style).

Sans-IO: the caller measures samples with its own clock.
"""

from __future__ import annotations

import attrs

__all__ = ["RttEstimator"]

# RFC 6298 section 2: alpha = 1/8, beta = 1/4.
ALPHA = 0.125
BETA = 0.25


@attrs.define(slots=True)
class RttEstimator:
    """Smoothed RTT and RTT variation.

    The first sample R sets ``srtt = R`` and ``rttvar = R / 2``; each later sample
    updates ``rttvar = (1 - beta) rttvar + beta |srtt - R|`` and then
    ``srtt = (1 - alpha) srtt + alpha R``. Samples from retransmitted PINGs must
    not be fed in (Karn's algorithm): an answer cannot be matched to its PING.
    """

    srtt: float | None = None
    rttvar: float | None = None
    latest: float | None = None
    samples: int = 0

    def update(self, sample: float) -> None:
        if sample < 0:
            raise ValueError(f"RTT sample must be >= 0, not {sample!r}")
        self.latest = sample
        self.samples += 1
        if self.srtt is None or self.rttvar is None:
            self.srtt = sample
            self.rttvar = sample / 2
            return
        self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - sample)
        self.srtt = (1 - ALPHA) * self.srtt + ALPHA * sample
