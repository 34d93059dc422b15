"""Detection quality: the fixed rule against φ accrual, on replayed heartbeat traces.

Run: python benchmarks/detection.py [--hours 2] [--seed 1] [--rst FILE]

A client heartbeats every second (a server would see the same shape at any
interval: everything here scales with it). Each trace is the arrival times of
its heartbeats at the server over ``--hours`` hours of life, then a crash right
after its last heartbeat. Every trace is replayed through each detector exactly
as the server applies it (``ServerConfig(detector=...)``): after each arrival the
detector allows a silence (the fixed rule: ``timeout``; φ: until φ reaches its
threshold, never more than ``timeout``, here 10 intervals), and a gap longer
than that is a false verdict: a live client kicked. The quality metrics are
those of Chen, Toueg and Aguilera (2002), "On the quality of service of failure
detectors":

* T_D, detection time: from the crash to the verdict;
* mistakes: false verdicts in the live part (and the rate per hour, λ_M);
* P_A, query accuracy: the fraction of the live time not wrongly suspected.

The traces (seeded, so every run prints the same table):

* steady: 1 s apart, ±5 ms of network jitter;
* jittery: gaps from a log-normal distribution around 1 s (a congested mobile
  path: mostly 0.6-1.6 s, now and then 3 s and more);
* pauses: steady, but every ten minutes or so the client stalls 2-6 s (a long
  collection, a frozen process) and then resumes.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trio_heartbeat._detector import PhiAccrual

INTERVAL = 1.0
#: The fixed rule at the library's default proportion (timeout 60 s for a 25 s
#: interval is 2.4 intervals), and a lenient server's (10 intervals: it lets
#: clients stretch their interval, as adaptive ones do).
TIMEOUTS = (2.4 * INTERVAL, 10 * INTERVAL)
#: φ never allows more silence than the server's timeout; here, the lenient one.
PHI_CAP = TIMEOUTS[1]


def steady(rng: random.Random, seconds: float) -> list[float]:
    times, t = [], 0.0
    while t < seconds:
        t += INTERVAL + rng.uniform(-0.005, 0.005)
        times.append(t)
    return times


def jittery(rng: random.Random, seconds: float) -> list[float]:
    times, t = [], 0.0
    while t < seconds:
        t += rng.lognormvariate(math.log(INTERVAL) - 0.08, 0.4)
        times.append(t)
    return times


def pauses(rng: random.Random, seconds: float) -> list[float]:
    times, t = [], 0.0
    next_pause = rng.expovariate(1 / 600)
    while t < seconds:
        t += INTERVAL + rng.uniform(-0.005, 0.005)
        if t > next_pause:
            t += rng.uniform(2.0, 6.0)
            next_pause = t + rng.expovariate(1 / 600)
        times.append(t)
    return times


TRACES: dict[str, Callable[[random.Random, float], list[float]]] = {
    "steady": steady,
    "jittery": jittery,
    "pauses": pauses,
}


class Fixed:
    def __init__(self, timeout: float) -> None:
        self.name = f"fixed, timeout {timeout / INTERVAL:g} intervals"
        self.timeout = timeout

    def allowed(self) -> float:
        return self.timeout

    def gap(self, seconds: float) -> None:
        pass


class Phi:
    """φ as the server runs it: seeded with the interval, a tenth of it as the
    floor under the deviation, an acceptable pause (the server's default is
    one interval), capped at the server's timeout."""

    def __init__(self, threshold: float, pause: float = INTERVAL) -> None:
        self.name = f"phi {threshold:g}, pause {pause / INTERVAL:g} interval"
        self.detector = PhiAccrual(
            INTERVAL,
            threshold=threshold,
            min_std=INTERVAL / 10,
            acceptable_pause=pause,
        )

    def allowed(self) -> float:
        return min(PHI_CAP, self.detector.verdict_after())

    def gap(self, seconds: float) -> None:
        self.detector.gap(seconds)


def replay(times: list[float], detector: Fixed | Phi) -> tuple[float, int, float]:
    """Detection time, false verdicts, and the time wrongly suspected."""
    mistakes = 0
    suspected = 0.0
    previous = 0.0
    for arrival in times:
        gap = arrival - previous
        allowed = detector.allowed()
        if gap > allowed:
            mistakes += 1
            suspected += gap - allowed
        detector.gap(gap)
        previous = arrival
    return detector.allowed(), mistakes, suspected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rst", help="also write the table as reStructuredText")
    args = parser.parse_args()
    seconds = args.hours * 3600
    rows = []
    for trace_name, make in TRACES.items():
        times = make(random.Random(f"{args.seed}:{trace_name}"), seconds)
        live = times[-1]
        detectors: list[Fixed | Phi] = [
            *(Fixed(timeout) for timeout in TIMEOUTS),
            Phi(8.0),
            Phi(8.0, pause=0.0),
            Phi(3.0, pause=0.0),
            Phi(12.0, pause=0.0),
        ]
        for detector in detectors:
            detection, mistakes, suspected = replay(times, detector)
            rows.append(
                (
                    trace_name,
                    detector.name,
                    f"{detection:.2f}",
                    str(mistakes),
                    f"{mistakes / (live / 3600):.1f}",
                    f"{1 - suspected / live:.6f}",
                )
            )
    header = ("trace", "detector", "T_D (s)", "mistakes", "per hour", "P_A")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"{args.hours:g} h per trace, heartbeats every {INTERVAL:g} s, "
          f"seed {args.seed}")  # fmt: skip
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )
    if args.rst:
        rule = "  ".join("=" * width for width in widths)
        lines = [rule]
        lines.append("  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)))
        lines.append(rule)
        for row in rows:
            lines.append(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            )
        lines.append(rule)
        Path(args.rst).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
