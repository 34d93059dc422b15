"""The interval learner, sans-IO: plain functions, no Trio, no clock (Trio only
to drive the async stores)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_heartbeat import (
    IntervalChange,
    IntervalLearner,
    JsonIntervalStore,
    LearnerPhase,
    MemoryIntervalStore,
)


def run_path(learner: IntervalLearner, limit: float, periods: int) -> list[float]:
    """Feed ``periods`` idle periods through a path that forgets a flow idle
    for ``limit`` seconds or more; the intervals used, in order."""
    used = []
    for _ in range(periods):
        interval = learner.interval
        used.append(interval)
        if interval < limit:
            learner.succeeded(interval)
        else:
            learner.failed(interval)
    return used


def test_grows_by_steps_while_intervals_hold() -> None:
    changes: list[IntervalChange] = []
    learner = IntervalLearner(
        1.0, 100.0, step=0.5, confirmations=2, on_change=changes.append
    )
    assert learner.interval == 1.0
    assert learner.succeeded(1.0) is None
    assert learner.succeeded(1.0) == IntervalChange(1.0, 1.5, "longer")
    assert learner.succeeded(1.5) is None
    assert learner.succeeded(1.5) == IntervalChange(1.5, 2.25, "longer")
    assert changes == [
        IntervalChange(1.0, 1.5, "longer"),
        IntervalChange(1.5, 2.25, "longer"),
    ]
    assert learner.phase is LearnerPhase.GROWING


def test_a_failure_settles_a_margin_below_the_longest_interval_that_held() -> None:
    learner = IntervalLearner(1.0, 100.0, step=0.5, confirmations=2, margin=0.1)
    used = run_path(learner, limit=3.0, periods=40)
    # 1, 1.5, 2.25 held twice each; 3.375 failed; settled at 2.25 x 0.9.
    assert used[:7] == [1.0, 1.0, 1.5, 1.5, 2.25, 2.25, 3.375]
    assert learner.interval == pytest.approx(2.025)
    assert used[7:] == [pytest.approx(2.025)] * 33
    assert learner.settled
    assert learner.held == 2.25
    assert learner.too_long == 3.375


@given(
    limit=st.floats(1.01, 5000.0),
    step=st.floats(0.05, 2.0),
    margin=st.floats(0.0, 0.5),
    confirmations=st.integers(1, 5),
)
def test_converges_below_the_limit_and_within_one_step_of_it(
    limit: float, step: float, margin: float, confirmations: int
) -> None:
    learner = IntervalLearner(
        1.0,
        10_000.0,
        step=step,
        margin=margin,
        confirmations=confirmations,
        reprobe_periods=0,
    )
    used = run_path(learner, limit, periods=2000)
    learned = learner.interval
    assert learner.settled
    assert learned < limit
    assert limit <= learned * (1 + step) / (1 - margin) * (1 + 1e-9)
    # Exactly one failure on the way: the first interval past the limit.
    assert sum(interval >= limit for interval in used) == 1


def test_never_above_the_maximum_nor_below_the_minimum() -> None:
    learner = IntervalLearner(2.0, 5.0, step=1.0, confirmations=1)
    used = run_path(learner, limit=math.inf, periods=10)
    assert used == [2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert learner.settled
    stuck = IntervalLearner(2.0, 5.0, confirmations=1, max_failures=10)
    run_path(stuck, limit=1.0, periods=20)
    assert stuck.interval == 2.0


def test_bound_caps_one_connection_at_the_server_limit() -> None:
    learner = IntervalLearner(1.0, 100.0, step=1.0, confirmations=1)
    run_path(learner, limit=math.inf, periods=4)
    assert learner.interval == 16.0
    assert learner.bound(1.0, 10.0) == IntervalChange(16.0, 10.0, "bounds")
    assert learner.bound(1.0, 10.0) is None
    # Growth stops at the connection's ceiling, which counts as settled.
    assert not learner.settled
    # Settled where it was: reported, although the interval stays.
    assert learner.succeeded(10.0) == IntervalChange(10.0, 10.0, "settled")
    assert learner.settled
    assert learner.maximum == 100.0
    # The next connection, to a server that allows more, starts from 10 s.
    assert learner.bound(0.5, 50.0) is None
    assert learner.interval == 10.0


def test_no_maximum_but_the_servers() -> None:
    learner = IntervalLearner(1.0, step=1.0, confirmations=1)
    assert learner.maximum == math.inf
    learner.bound(0.1, 6.0)
    assert run_path(learner, limit=math.inf, periods=5) == [1.0, 2.0, 4.0, 6.0, 6.0]
    assert learner.settled


def test_a_settled_interval_that_fails_steps_down_and_failures_in_a_row_reset() -> None:
    changes: list[IntervalChange] = []
    learner = IntervalLearner(
        1.0,
        100.0,
        step=1.0,
        confirmations=1,
        margin=0.0,
        max_failures=3,
        on_change=changes.append,
    )
    run_path(learner, limit=5.0, periods=10)
    assert learner.interval == 4.0 and learner.settled
    # The path changes: it now forgets a flow after 3 s.
    assert learner.failed(4.0) == IntervalChange(4.0, 2.0, "shorter")
    assert learner.succeeded(2.0) is None
    assert learner.interval == 2.0
    # A path that breaks every time: down to the minimum, then back to the
    # start (already there, but learning starts afresh).
    assert learner.failed(2.0) == IntervalChange(2.0, 1.0, "shorter")
    assert learner.failed(1.0) is None
    assert learner.settled
    assert learner.failed(1.0) == IntervalChange(1.0, 1.0, "reset")
    assert learner.phase is LearnerPhase.GROWING
    assert (learner.held, learner.too_long) == (0.0, math.inf)
    assert [c.reason for c in changes] == [
        "longer",
        "longer",
        "longer",
        "settled",
        "shorter",
        "shorter",
        "reset",
    ]


def test_failures_in_a_row_reset_to_the_minimum() -> None:
    learner = IntervalLearner(
        1.0, 100.0, step=1.0, confirmations=1, margin=0.0, max_failures=2
    )
    run_path(learner, limit=math.inf, periods=4)
    assert learner.interval == 16.0
    learner.failed(16.0)
    assert learner.interval == 8.0 and learner.settled
    assert learner.failed(8.0) == IntervalChange(8.0, 1.0, "reset")
    assert learner.phase is LearnerPhase.GROWING
    assert (learner.held, learner.too_long) == (0.0, math.inf)


def test_short_periods_test_nothing() -> None:
    learner = IntervalLearner(4.0, 100.0, confirmations=1)
    # The application talked: the link was never idle for the interval.
    assert learner.succeeded(1.0) is None
    assert learner.interval == 4.0


def test_a_link_that_dies_within_proven_idle_time_says_nothing_about_idleness() -> None:
    learner = IntervalLearner(1.0, 100.0, step=1.0, confirmations=1, margin=0.1)
    run_path(learner, limit=math.inf, periods=2)  # 1 and 2 s held
    assert (learner.interval, learner.held) == (4.0, 2.0)
    assert learner.failed(1.0) is None  # the path broke: not the idle time
    assert learner.interval == 4.0 and not learner.settled


def test_a_link_closed_while_idle_marks_that_idle_time_too_long() -> None:
    """A proxy that closes flows idle for 3 s (nginx's proxy_read_timeout)
    ends the link before the 4 s PING is due: 3 s is too long."""
    learner = IntervalLearner(1.0, 100.0, step=1.0, confirmations=1, margin=0.1)
    run_path(learner, limit=math.inf, periods=2)
    assert learner.failed(3.0) == IntervalChange(4.0, pytest.approx(1.35), "settled")
    assert learner.too_long == 3.0


def test_tolerance_counts_jittered_periods() -> None:
    learner = IntervalLearner(10.0, 100.0, confirmations=1, tolerance=0.2)
    assert learner.succeeded(8.5) == IntervalChange(10.0, 15.0, "longer")
    assert learner.succeeded(11.0) is None  # shorter than 15 x 0.8


def test_reprobes_after_settled_periods() -> None:
    learner = IntervalLearner(
        1.0, 100.0, step=1.0, confirmations=1, margin=0.0, reprobe_periods=5
    )
    run_path(learner, limit=5.0, periods=4)  # 1, 2, 4 held; 8 failed
    assert learner.interval == 4.0 and learner.settled
    for _ in range(4):
        assert learner.succeeded(4.0) is None
    assert learner.succeeded(4.0) == IntervalChange(4.0, 8.0, "reprobe")
    # The path got better meanwhile: 8 holds now, so it keeps growing.
    assert learner.succeeded(8.0) == IntervalChange(8.0, 16.0, "longer")


def test_state_round_trips_through_the_stores(tmp_path: Path) -> None:
    learner = IntervalLearner(1.0, 100.0, step=1.0, confirmations=1, margin=0.0)
    run_path(learner, limit=5.0, periods=6)
    memory = MemoryIntervalStore()
    files = JsonIntervalStore(tmp_path / "c.json")
    stores = [
        (lambda k, s: trio.run(memory.save, k, s), lambda k: trio.run(memory.load, k)),
        (files.save_sync, files.load_sync),
        (lambda k, s: trio.run(files.save, k, s), lambda k: trio.run(files.load, k)),
    ]
    for save, load in stores:
        save("wifi:home", learner.state())
        fresh = IntervalLearner(1.0, 100.0, step=1.0, confirmations=1)
        state = load("wifi:home")
        assert state is not None
        assert fresh.restore(state) == IntervalChange(1.0, 4.0, "restored")
        assert (fresh.interval, fresh.phase, fresh.held, fresh.too_long) == (
            4.0,
            LearnerPhase.SETTLED,
            4.0,
            8.0,
        )
        assert load("lte:carrier") is None
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["wifi:home"]["interval"] == 4.0


def test_a_state_that_does_not_fit_is_ignored(tmp_path: Path) -> None:
    learner = IntervalLearner(1.0, 10.0)
    assert learner.restore({"interval": 50.0, "phase": "settled"}) is None
    assert learner.restore({"interval": "x"}) is None
    assert learner.restore({}) is None
    assert learner.interval == 1.0
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    store = JsonIntervalStore(damaged)
    assert store.load_sync("any") is None
    store.save_sync("any", {"interval": 2.0, "phase": "growing"})
    assert store.load_sync("any") == {"interval": 2.0, "phase": "growing"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minimum": 0.0, "maximum": 1.0}, "minimum must be a positive number"),
        ({"minimum": 2.0, "maximum": 1.0}, r"maximum \(1 s\) is below minimum \(2 s\)"),
        (
            {"minimum": 1.0, "maximum": 2.0, "margin": 1.0},
            r"margin must be in \[0, 1\)",
        ),
        ({"minimum": 1.0, "maximum": 2.0, "confirmations": 0}, "confirmations must"),
        ({"minimum": 1.0, "maximum": math.nan}, "maximum must be a positive number"),
        ({"minimum": math.inf, "maximum": math.inf}, "minimum must be a positive"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IntervalLearner(**kwargs)  # type: ignore[arg-type]
