"""The adaptive ("smart") heartbeat, sans-IO: learn the longest idle interval a
path keeps open.

NATs and stateful firewalls forget an idle TCP flow after a time nobody
announces: under a minute on some home routers, five minutes on some mobile
carriers, half an hour elsewhere. A fixed heartbeat interval is either too
short (every PING wakes a phone's radio) or too long (the flow is forgotten,
and the connection dies without a word). :class:`IntervalLearner` finds the
limit of the path it is on, the way mobile messaging clients do:

* it starts at ``minimum``; once an interval has held for ``confirmations``
  idle periods in a row, it tries one ``step`` longer (``interval x (1 + step)``),
  up to ``maximum``;
* an idle period that ends in a dead link (the PING unanswered, the connection
  lost) marks that interval as too long; the learner settles ``margin`` below
  the longest interval that held, and stays there;
* a settled interval that fails later (the path changed) steps down again;
  ``max_failures`` failures in a row send it back to ``minimum`` to learn
  afresh;
* after ``reprobe_periods`` settled periods it tries one step longer once more,
  since paths change for the better too.

Steps and margins are fractions of the intervals, so the same learner works in
seconds (tests) and in minutes (phones). The learner only counts and decides:
the client tells it how long each idle period really was (:meth:`succeeded`,
:meth:`failed`) and applies :attr:`interval`. Its state is a small mapping
(:meth:`state`, :meth:`restore`) that an :class:`IntervalStore` keeps per
network, so that a reconnect, or the next start, begins where the last one
ended.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

__all__ = [
    "IntervalChange",
    "IntervalLearner",
    "IntervalStore",
    "JsonIntervalStore",
    "LearnerPhase",
    "MemoryIntervalStore",
]


#: How much shorter than the interval (a fraction of it) an idle period may be
#: and still test it, beside the jitter's ``tolerance``.
IDLE_SLACK = 0.05


class LearnerPhase(enum.Enum):
    """Where an :class:`IntervalLearner` stands."""

    #: Trying longer intervals while they hold.
    GROWING = "growing"
    #: Found the limit (or the maximum): keeping this interval.
    SETTLED = "settled"


@attrs.frozen
class IntervalChange:
    """The learner moved to another interval, and why."""

    #: The interval before, in seconds.
    old: float
    #: The interval now, in seconds (the same as ``old`` when only the phase
    #: changed: settled where it was, or reset while at the minimum).
    new: float
    #: ``"longer"`` (the old one held), ``"settled"`` (one failed: back to a
    #: margin below the longest that held), ``"shorter"`` (a settled interval
    #: failed), ``"reset"`` (failures in a row: back to the start),
    #: ``"reprobe"`` (settled for long: trying longer again), ``"restored"``
    #: (from a store), ``"bounds"`` (the allowed range changed).
    reason: str


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


def _positive_or_inf(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and not math.isnan(value)):
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ValueError(f"{attribute.name} must be in [0, 1), not {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{attribute.name} must be an integer >= 1, not {value!r}")


@attrs.define(eq=False)
class IntervalLearner:
    """Learns the longest heartbeat interval the path allows; see the module
    docstring for the rule.

    One learner belongs to one client (a :class:`Reconnector` keeps it across
    its connections). Not thread-safe; no I/O, no clock.
    """

    #: The shortest interval, and the first one tried (seconds).
    minimum: float = attrs.field(validator=_positive)
    #: The longest interval ever tried (seconds; ``inf``: none but the
    #: server's). Each connection also caps it at the server's ``timeout`` / 2.
    maximum: float = attrs.field(default=math.inf, validator=_positive_or_inf)
    #: Each longer try is ``(1 + step)`` x the interval that held.
    step: float = attrs.field(default=0.5, validator=_positive)
    #: Idle periods an interval must hold, in a row, before a longer one.
    confirmations: int = attrs.field(default=3, validator=_at_least_one)
    #: After a failure, settle this fraction below the longest that held.
    margin: float = attrs.field(default=0.1, validator=_fraction)
    #: Failures in a row (no period held between them) that send the learner
    #: back to ``minimum``.
    max_failures: int = attrs.field(default=3, validator=_at_least_one)
    #: Settled periods before one longer interval is tried again (paths
    #: change); 0 never tries again.
    reprobe_periods: int = attrs.field(default=100)
    #: How much shorter than the interval an idle period may be and still
    #: count as holding it (the client's ``jitter``, which only shortens
    #: adaptive waits).
    tolerance: float = attrs.field(default=0.0, validator=_fraction)
    #: Called with an :class:`IntervalChange` whenever :attr:`interval` changes.
    on_change: Callable[[IntervalChange], None] | None = attrs.field(
        default=None, kw_only=True
    )
    #: Where the client keeps what was learned (read before the first
    #: connection, written after every change); ``None``: this process only.
    store: IntervalStore | None = attrs.field(default=None, kw_only=True)
    #: Which network this is, in ``store``: intervals learned on one network
    #: say nothing about another.
    key: str = attrs.field(default="default", kw_only=True)
    #: Whether ``store`` was read (the client reads it once).
    loaded: bool = attrs.field(default=False, kw_only=True)

    interval: float = attrs.field(init=False)
    phase: LearnerPhase = attrs.field(init=False, default=LearnerPhase.GROWING)
    #: The longest idle period that held (seconds; 0 while none has).
    held: float = attrs.field(init=False, default=0.0)
    #: The shortest idle period that ended in a dead link (``inf`` while none).
    too_long: float = attrs.field(init=False, default=math.inf)
    # This connection's range: the learner's, narrowed by the server's.
    _floor: float = attrs.field(init=False, default=0.0)
    _ceiling: float = attrs.field(init=False, default=math.inf)
    _streak: int = attrs.field(init=False, default=0)
    _failures: int = attrs.field(init=False, default=0)
    _settled_periods: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.maximum < self.minimum:
            raise ValueError(
                f"maximum ({self.maximum:g} s) is below minimum ({self.minimum:g} s)"
            )
        if self.reprobe_periods < 0:
            raise ValueError("reprobe_periods must be >= 0")
        self.interval = self.minimum
        self._floor = self.minimum
        self._ceiling = self.maximum

    @property
    def settled(self) -> bool:
        """Whether the learner keeps its interval (found the limit or the
        maximum)."""
        return self.phase is LearnerPhase.SETTLED

    def _move(
        self, new: float, reason: str, *, report: bool = False
    ) -> IntervalChange | None:
        """Go to ``new`` (within this connection's range); the change, if the
        interval changed or ``report`` (the phase did)."""
        new = min(max(new, self._floor), self._ceiling)
        self._streak = 0
        if new == self.interval and not report:
            return None
        change = IntervalChange(self.interval, new, reason)
        self.interval = new
        if self.on_change is not None:
            self.on_change(change)
        return change

    def _settle(self, interval: float, reason: str) -> IntervalChange | None:
        growing = self.phase is LearnerPhase.GROWING
        self.phase = LearnerPhase.SETTLED
        self._settled_periods = 0
        return self._move(interval, reason, report=growing)

    def bound(self, minimum: float, maximum: float) -> IntervalChange | None:
        """Narrow the range for one connection to [``minimum``, ``maximum``]
        (the server's ``min_interval`` and granted interval); the learner's
        own range comes back with the next call."""
        self._floor = max(minimum, self.minimum)
        self._ceiling = max(self._floor, min(maximum, self.maximum))
        if self._floor <= self.interval <= self._ceiling:
            return None
        return self._move(self.interval, "bounds")

    def _tests_interval(self, idle: float) -> bool:
        # An idle period is measured from the last byte either way (the
        # answer to the previous PING), so it falls short of the interval by
        # that round trip: 5 % absorbs it.
        return idle >= self.interval * (1 - self.tolerance - IDLE_SLACK)

    def succeeded(self, idle: float) -> IntervalChange | None:
        """An idle period of ``idle`` seconds ended with the server's answer."""
        self._failures = 0
        self.held = max(self.held, idle)
        if not self._tests_interval(idle):
            return None  # traffic broke the period up: it tested nothing
        self._streak += 1
        if self.settled:
            self._settled_periods += 1
            if (
                self.reprobe_periods
                and self._settled_periods >= self.reprobe_periods
                and self.interval < self._ceiling
            ):
                self.phase = LearnerPhase.GROWING
                self.too_long = math.inf
                return self._move(self.interval * (1 + self.step), "reprobe")
            return None
        if self._streak < self.confirmations:
            return None
        if self.interval >= self._ceiling:
            return self._settle(self._ceiling, "settled")
        longer = self.interval * (1 + self.step)
        if longer >= self.too_long:
            return self._settle(self.interval, "settled")
        return self._move(longer, "longer")

    def failed(self, idle: float) -> IntervalChange | None:
        """The link died after ``idle`` seconds without traffic: the PING that
        ended the idle period went unanswered, or the connection was lost
        during the period or while the PING waited (a proxy or NAT that
        closes idle flows, rather than forgetting them, ends them so).

        A link that dies within an idle time that held before says nothing
        about idleness (the path broke); it only counts towards
        ``max_failures``."""
        self._failures += 1
        self._streak = 0
        if self._failures >= self.max_failures:
            self._failures = 0
            self.phase = LearnerPhase.GROWING
            self.held = 0.0
            self.too_long = math.inf
            return self._move(self.minimum, "reset", report=True)
        if idle < self.held * (1 - self.tolerance - IDLE_SLACK):
            return None
        self.too_long = min(self.too_long, idle)
        if self.held >= self.too_long:
            # What held before fails now: the path changed; one step below.
            self.held = self.too_long / (1 + self.step)
        reason = "shorter" if self.settled else "settled"
        below = min(self.held, self.too_long / (1 + self.step))
        return self._settle(below * (1 - self.margin), reason)

    def state(self) -> dict[str, float | str]:
        """What a store keeps: enough to start the next connection here."""
        return {
            "interval": self.interval,
            "phase": self.phase.value,
            "held": self.held,
            "too_long": self.too_long if math.isfinite(self.too_long) else 0.0,
        }

    def restore(self, state: Mapping[str, Any]) -> IntervalChange | None:
        """Continue from a :meth:`state` a store kept; a state that does not
        fit (another range, a damaged file) is ignored."""
        try:
            interval = float(state["interval"])
            phase = LearnerPhase(state["phase"])
            held = float(state.get("held", 0.0))
            too_long = float(state.get("too_long", 0.0)) or math.inf
        except (KeyError, TypeError, ValueError):
            return None
        if not (self.minimum <= interval <= self.maximum) or not held >= 0:
            return None
        self.phase = phase
        self.held = held
        self.too_long = too_long
        self._settled_periods = 0
        return self._move(interval, "restored")


class IntervalStore(Protocol):
    """Where learned intervals are kept between connections, per network key
    (which network the device is on: a Wi-Fi name, a carrier, a local
    address). Async, so that a store may live in a file, a database or a
    phone's preferences without blocking the event loop."""

    async def load(self, key: str) -> Mapping[str, Any] | None:
        """The state saved for ``key``, or ``None``."""
        ...

    async def save(self, key: str, state: Mapping[str, Any]) -> None:
        """Keep ``state`` for ``key``."""
        ...


@attrs.define
class MemoryIntervalStore:
    """An :class:`IntervalStore` in a dict: what was learned lasts as long as
    the process."""

    states: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    async def load(self, key: str) -> Mapping[str, Any] | None:
        return self.states.get(key)

    async def save(self, key: str, state: Mapping[str, Any]) -> None:
        self.states[key] = dict(state)


@attrs.define
class JsonIntervalStore:
    """An :class:`IntervalStore` in a JSON file (``connect
    --interval-cache``): ``{"key": {"interval": ...}, ...}``.

    Reads and writes run in a worker thread; every save rewrites the file
    atomically (a temporary file, then ``os.replace``). A missing or damaged
    file reads as empty.
    """

    path: Path = attrs.field(converter=Path)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load_sync(self, key: str) -> Mapping[str, Any] | None:
        """:meth:`load`, blocking."""
        state = self._read().get(key)
        return state if isinstance(state, dict) else None

    def save_sync(self, key: str, state: Mapping[str, Any]) -> None:
        """:meth:`save`, blocking."""
        data = self._read()
        data[key] = dict(state)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", dir=self.path.parent
        )
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    async def load(self, key: str) -> Mapping[str, Any] | None:
        return await trio.to_thread.run_sync(self.load_sync, key)

    async def save(self, key: str, state: Mapping[str, Any]) -> None:
        await trio.to_thread.run_sync(self.save_sync, key, state)
