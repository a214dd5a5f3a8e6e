"""The circuit breaker: rules that open it, open time, half-open probing, manual control."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from rate_limit_shield.breaker import CircuitBreaker, Permit, State
from rate_limit_shield.errors import CircuitOpen
from rate_limit_shield.outcome import Outcome
from rate_limit_shield.testing import FakeClock

SUCCESS, FAILURE = Outcome.SUCCESS, Outcome.FAILURE
THROTTLED, IGNORED = Outcome.THROTTLED, Outcome.IGNORED


def opened(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    """A breaker tripped by one failure at `clock`'s current time."""
    kwargs.setdefault("failure_threshold", 1)
    breaker = CircuitBreaker(clock=clock, **kwargs)  # type: ignore[arg-type]
    breaker.record(breaker.acquire(), FAILURE)
    assert breaker.state is State.OPEN
    return breaker


def half_opened(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    breaker = opened(clock, **kwargs)
    clock.advance(breaker.recovery_timeout)
    assert breaker.state is State.HALF_OPEN
    return breaker


def call(breaker: CircuitBreaker, outcome: Outcome, duration: float = 0.0) -> None:
    breaker.record(breaker.acquire(), outcome, duration)


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"recovery_timeout": 0}, "recovery_timeout"),
        ({"recovery_timeout": float("nan")}, "recovery_timeout"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"failure_rate": 0.0}, "failure_rate"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"failure_rate": 0.5, "window": 0}, "window"),
        ({"failure_rate": 0.5, "window_seconds": -1.0}, "window_seconds"),
        ({"failure_rate": 0.5, "window": 10, "window_seconds": 10.0}, "window_seconds"),
        ({"min_calls": 0}, "min_calls"),
        ({"recovery_timeout": 30, "max_recovery_timeout": 10}, "max_recovery_timeout"),
        ({"slow_call_rate": 0.5}, "slow_call_duration"),
        ({"slow_call_duration": 0.0}, "slow_call_duration"),
        ({"slow_call_duration": 1.0, "slow_call_rate": 2.0}, "slow_call_rate"),
        ({"failure_threshold": None}, "never open"),
    ],
)
def test_bad_configuration_raises_value_error_naming_it(
    kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named) as caught:
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    bad = kwargs.get(named)
    if bad is not None:
        assert repr(bad) in str(caught.value)


def test_state_values_are_the_seed_strings() -> None:
    assert [s.value for s in State] == ["closed", "open", "half_open"]
    assert State.HALF_OPEN == "half_open"


# --- the seed's API ---------------------------------------------------------------------------


def test_seed_api_allow_record_and_state() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, 1, clock=clock)
    assert breaker.allow() and breaker.state is State.CLOSED
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.OPEN
    assert not breaker.allow()
    clock.advance(10.0)
    assert breaker.allow()  # takes the one probe slot
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state is State.CLOSED and breaker.allow()


# --- rules that open it -----------------------------------------------------------------------


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=30.0, clock=clock, name="m")
    for _ in range(2):
        call(breaker, FAILURE)
    call(breaker, SUCCESS)
    call(breaker, FAILURE)
    call(breaker, FAILURE)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 2
    call(breaker, FAILURE)
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpen) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(30.0)
    assert caught.value.key == "m"


def test_failure_rate_over_count_window_waits_for_min_calls() -> None:
    breaker = CircuitBreaker(
        failure_threshold=None, failure_rate=0.5, window=10, min_calls=4, clock=FakeClock()
    )
    for _ in range(3):
        call(breaker, FAILURE)
    assert breaker.state is State.CLOSED  # 3/3 failed, but fewer than min_calls calls
    call(breaker, SUCCESS)  # 3/4 >= 0.5 with min_calls reached
    assert breaker.state is State.OPEN


def test_failure_rate_counts_only_the_last_window_calls() -> None:
    breaker = CircuitBreaker(
        failure_threshold=None, failure_rate=0.5, window=4, min_calls=4, clock=FakeClock()
    )
    for outcome in (FAILURE, SUCCESS, SUCCESS, SUCCESS, SUCCESS):  # the failure slides out
        call(breaker, outcome)
    assert breaker.snapshot()["window_failures"] == 0
    call(breaker, FAILURE)
    assert breaker.state is State.CLOSED  # 1/4
    call(breaker, FAILURE)
    assert breaker.state is State.OPEN  # 2/4


def test_min_calls_is_capped_at_the_count_window() -> None:
    breaker = CircuitBreaker(failure_threshold=None, failure_rate=1.0, window=3, clock=FakeClock())
    for _ in range(3):
        call(breaker, FAILURE)
    assert breaker.state is State.OPEN  # min_calls=10 could never be reached in 3 calls


def test_time_window_lets_old_failures_fall_out() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=None,
        failure_rate=0.5,
        window_seconds=10.0,
        min_calls=4,
        clock=clock,
    )
    for _ in range(3):
        call(breaker, FAILURE)
    clock.advance(8.9)  # one-second buckets: still inside the window
    assert breaker.snapshot()["window_failures"] == 3
    clock.advance(1.2)  # t=10.1: the calls of t=0 have aged out
    assert breaker.snapshot()["window_calls"] == 0
    call(breaker, FAILURE)
    for _ in range(3):
        call(breaker, SUCCESS)
    assert breaker.state is State.CLOSED  # 1/4: with the three old failures it would be 4/7
    call(breaker, FAILURE)
    assert breaker.state is State.CLOSED  # 2/5
    call(breaker, FAILURE)
    assert breaker.state is State.OPEN  # 3/6


def test_slow_calls_open_it_even_when_they_succeed() -> None:
    breaker = CircuitBreaker(
        failure_threshold=None,
        slow_call_duration=2.0,
        slow_call_rate=0.5,
        window=4,
        min_calls=4,
        clock=FakeClock(),
    )
    call(breaker, SUCCESS, 0.5)
    call(breaker, SUCCESS, 2.5)
    call(breaker, SUCCESS, 1.9)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["window_slow_calls"] == 1
    call(breaker, SUCCESS, 2.0)  # exactly the threshold is slow: 2/4
    assert breaker.state is State.OPEN


def test_slow_call_duration_alone_opens_when_every_call_is_slow() -> None:
    breaker = CircuitBreaker(
        failure_threshold=None, slow_call_duration=1.0, window=3, min_calls=3, clock=FakeClock()
    )
    call(breaker, SUCCESS, 5.0)
    call(breaker, FAILURE, 5.0)
    call(breaker, SUCCESS, 0.1)
    call(breaker, SUCCESS, 5.0)
    assert breaker.state is State.CLOSED  # 2 slow out of the last 3
    call(breaker, SUCCESS, 5.0)
    call(breaker, SUCCESS, 5.0)
    assert breaker.state is State.OPEN


# --- open time --------------------------------------------------------------------------------


def test_fixed_open_time_then_half_open_lazily() -> None:
    clock = FakeClock()
    breaker = opened(clock, recovery_timeout=30.0)
    clock.advance(29.9)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.retry_after == 0.0
    assert breaker.state is State.HALF_OPEN


def test_open_time_grows_on_each_reopen_capped_and_resets_after_closing() -> None:
    clock = FakeClock()
    breaker = opened(clock, recovery_timeout=10.0, max_recovery_timeout=35.0)
    open_times = []
    for _ in range(4):
        open_times.append(breaker.retry_after)
        clock.advance(breaker.retry_after or 0.0)
        call(breaker, FAILURE)  # the probe fails
    assert open_times == [10.0, 20.0, 35.0, 35.0]
    clock.advance(35.0)
    call(breaker, SUCCESS)
    assert breaker.state is State.CLOSED
    call(breaker, FAILURE)
    assert breaker.retry_after == 10.0


def test_fixed_open_time_does_not_grow() -> None:
    clock = FakeClock()
    breaker = opened(clock, recovery_timeout=10.0)
    clock.advance(10.0)
    call(breaker, FAILURE)
    assert breaker.retry_after == 10.0


# --- half-open probing ------------------------------------------------------------------------


def test_half_open_lets_exactly_n_probes_through_and_rejects_the_rest() -> None:
    clock = FakeClock()
    breaker = half_opened(clock, half_open_max_calls=3, recovery_timeout=10.0)
    probes = [breaker.acquire() for _ in range(3)]
    with pytest.raises(CircuitOpen) as caught:
        breaker.acquire()
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 10.0
    assert breaker.retry_after == caught.value.retry_after
    assert not breaker.allow()
    assert breaker.snapshot()["probes_in_flight"] == 3
    breaker.record(probes[0], SUCCESS)
    breaker.record(probes[1], SUCCESS)
    assert breaker.state is State.HALF_OPEN  # 2 of the 3 probes have succeeded
    breaker.record(probes[2], SUCCESS)
    assert breaker.state is State.CLOSED


def test_a_failed_probe_reopens_at_once() -> None:
    clock = FakeClock()
    breaker = half_opened(clock, half_open_max_calls=2, recovery_timeout=10.0)
    first, second = breaker.acquire(), breaker.acquire()
    breaker.record(first, SUCCESS)
    breaker.record(second, FAILURE)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 10.0


def test_a_slow_probe_counts_as_a_failed_probe() -> None:
    clock = FakeClock()
    breaker = half_opened(clock, slow_call_duration=5.0, recovery_timeout=10.0)
    breaker.record(breaker.acquire(), SUCCESS, 6.0)
    assert breaker.state is State.OPEN


@pytest.mark.parametrize("outcome", [THROTTLED, IGNORED])
def test_throttled_and_ignored_count_neither_way_when_closed(outcome: Outcome) -> None:
    breaker = CircuitBreaker(failure_threshold=2, failure_rate=0.5, window=4, min_calls=4)
    call(breaker, FAILURE)
    before = breaker.snapshot()
    for _ in range(5):
        call(breaker, outcome)
    assert breaker.snapshot() == before  # neither the streak nor the window moved
    assert before["consecutive_failures"] == 1 and before["window_calls"] == 1


@pytest.mark.parametrize("outcome", [THROTTLED, IGNORED])
def test_throttled_or_ignored_probe_frees_its_slot_and_changes_nothing(outcome: Outcome) -> None:
    clock = FakeClock()
    breaker = half_opened(clock, half_open_max_calls=1)
    breaker.record(breaker.acquire(), outcome)
    assert breaker.state is State.HALF_OPEN
    assert breaker.snapshot()["probe_successes"] == 0
    breaker.record(breaker.acquire(), SUCCESS)  # the slot was free again
    assert breaker.state is State.CLOSED


def test_release_gives_a_cancelled_probe_slot_back_and_counts_nothing() -> None:
    clock = FakeClock()
    breaker = half_opened(clock, half_open_max_calls=1)
    breaker.release(breaker.acquire())
    assert breaker.state is State.HALF_OPEN
    assert breaker.snapshot()["probes_in_flight"] == 0
    permit = breaker.acquire()
    with pytest.raises(CircuitOpen):
        breaker.acquire()
    breaker.record(permit, SUCCESS)
    assert breaker.state is State.CLOSED


def test_release_while_closed_counts_nothing() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    breaker.release(breaker.acquire())
    assert breaker.snapshot()["consecutive_failures"] == 0
    assert breaker.state is State.CLOSED


def test_a_late_result_from_before_the_last_change_is_dropped() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=10.0, clock=clock)
    slow_success = breaker.acquire()
    slow_failure = breaker.acquire()
    call(breaker, FAILURE)
    call(breaker, FAILURE)
    clock.advance(10.0)
    probe = breaker.acquire()
    breaker.record(slow_success, SUCCESS)  # begun while closed: must not close it
    breaker.record(slow_failure, FAILURE)  # nor re-open it
    assert breaker.state is State.HALF_OPEN
    assert breaker.snapshot()["probes_in_flight"] == 1
    breaker.record(probe, SUCCESS)
    assert breaker.state is State.CLOSED
    breaker.record(slow_failure, FAILURE)  # nor count in the new closed period
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_a_probe_result_after_reset_is_dropped() -> None:
    clock = FakeClock()
    breaker = half_opened(clock)
    probe = breaker.acquire()
    breaker.reset()
    breaker.record(probe, FAILURE)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 0


# --- probes across rounds ---------------------------------------------------------------------


def reopened_with_probes_in_flight(
    clock: FakeClock, max_calls: int, **kwargs: object
) -> tuple[CircuitBreaker, list[Permit]]:
    """A breaker whose first round of `max_calls` probes saw one fail; the others still run."""
    breaker = half_opened(clock, half_open_max_calls=max_calls, recovery_timeout=10.0, **kwargs)
    failing, *running = [breaker.acquire() for _ in range(max_calls)]
    breaker.record(failing, FAILURE)
    assert breaker.state is State.OPEN
    return breaker, running


def admitted(breaker: CircuitBreaker, tries: int) -> list[Permit]:
    permits = []
    for _ in range(tries):
        with contextlib.suppress(CircuitOpen):
            permits.append(breaker.acquire())
    return permits


def test_probes_of_an_earlier_round_still_in_flight_hold_their_slots() -> None:
    clock = FakeClock()
    breaker, running = reopened_with_probes_in_flight(clock, 3)
    clock.advance(10.0)
    new = admitted(breaker, 3)
    assert len(running) + len(new) == 3  # not 2 + 3 probes at the recovering service
    assert breaker.snapshot()["probes_in_flight"] == 3
    breaker.record(running[0], SUCCESS)  # a slot comes free as an earlier probe ends
    assert len(admitted(breaker, 3)) == 1
    assert clock.sleeps == []  # the breaker decides; it never waits


def test_a_late_success_from_an_earlier_round_frees_its_slot_but_does_not_count() -> None:
    clock = FakeClock()
    breaker, (late,) = reopened_with_probes_in_flight(clock, 2)
    clock.advance(10.0)
    (fresh,) = admitted(breaker, 2)
    breaker.record(late, SUCCESS)
    breaker.record(fresh, SUCCESS)
    snap = breaker.snapshot()
    assert snap["state"] is State.HALF_OPEN  # one fresh success of the two needed
    assert snap["probe_successes"] == 1 and snap["probes_in_flight"] == 0
    call(breaker, SUCCESS)
    assert breaker.state is State.CLOSED


def test_a_late_failure_from_an_earlier_round_reopens_a_later_round() -> None:
    clock = FakeClock()
    breaker, (late,) = reopened_with_probes_in_flight(clock, 2, max_recovery_timeout=80.0)
    assert breaker.retry_after == 20.0
    clock.advance(20.0)
    (fresh,) = admitted(breaker, 2)
    breaker.record(late, FAILURE)
    assert breaker.state is State.OPEN
    assert breaker.retry_after == 40.0  # the third opening in a row
    breaker.record(fresh, SUCCESS)  # its round is over: stale
    clock.advance(40.0)
    assert breaker.snapshot()["probes_in_flight"] == 0
    assert len(admitted(breaker, 3)) == 2


def test_a_late_slow_success_from_an_earlier_round_reopens_like_a_failure() -> None:
    clock = FakeClock()
    breaker, (late,) = reopened_with_probes_in_flight(clock, 2, slow_call_duration=5.0)
    clock.advance(10.0)
    breaker.record(late, SUCCESS, 10.5)
    assert breaker.state is State.OPEN


def test_a_late_probe_ending_while_still_open_only_frees_its_slot() -> None:
    clock = FakeClock()
    breaker, (late, other) = reopened_with_probes_in_flight(clock, 3)
    breaker.record(late, FAILURE)
    breaker.release(other)
    assert breaker.retry_after == 10.0  # the same opening, not a longer one
    assert breaker.snapshot()["probes_in_flight"] == 0
    clock.advance(10.0)
    assert len(admitted(breaker, 4)) == 3


@pytest.mark.parametrize("outcome", [THROTTLED, IGNORED])
def test_a_late_throttled_or_ignored_probe_only_frees_its_slot(outcome: Outcome) -> None:
    clock = FakeClock()
    breaker, (late,) = reopened_with_probes_in_flight(clock, 2)
    clock.advance(10.0)
    breaker.record(late, outcome)
    snap = breaker.snapshot()
    assert snap["state"] is State.HALF_OPEN and snap["probes_in_flight"] == 0
    assert len(admitted(breaker, 3)) == 2


def test_each_late_probe_frees_exactly_one_slot() -> None:
    clock = FakeClock()
    breaker, running = reopened_with_probes_in_flight(clock, 3)
    clock.advance(10.0)
    (fresh,) = admitted(breaker, 1)
    breaker.release(running[0])
    breaker.record(running[1], THROTTLED)
    snap = breaker.snapshot()
    assert snap["probes_in_flight"] == 1  # only the fresh probe, counted once
    assert len(admitted(breaker, 3)) == 2
    breaker.release(fresh)
    assert breaker.snapshot()["probes_in_flight"] == 2


@pytest.mark.parametrize("manual", ["reset", "disable"])
def test_reset_or_disable_forgets_the_probes_in_flight(manual: str) -> None:
    clock = FakeClock()
    breaker, running = reopened_with_probes_in_flight(clock, 3)
    clock.advance(10.0)
    fresh = admitted(breaker, 1)
    getattr(breaker, manual)()
    assert breaker.state is State.CLOSED
    for permit in running + fresh:
        breaker.record(permit, FAILURE)  # from before the change: counted nowhere
    snap = breaker.snapshot()
    assert snap["probes_in_flight"] == 0 and snap["consecutive_failures"] == 0
    breaker.reset()
    call(breaker, FAILURE)
    clock.advance(10.0)
    assert len(admitted(breaker, 4)) == 3  # a new episode: every slot is free


def test_force_open_keeps_probes_in_flight_counted_until_reset() -> None:
    clock = FakeClock()
    breaker, running = reopened_with_probes_in_flight(clock, 3)
    clock.advance(10.0)
    (fresh,) = admitted(breaker, 1)
    breaker.force_open()
    breaker.record(running[0], SUCCESS)
    breaker.record(fresh, FAILURE)
    snap = breaker.snapshot()
    assert snap["forced_open"] is True and snap["state"] is State.OPEN
    assert snap["probes_in_flight"] == 1 and snap["retry_after"] is None
    breaker.reset()
    assert breaker.snapshot()["probes_in_flight"] == 0
    breaker.record(running[1], FAILURE)
    assert breaker.state is State.CLOSED


class RecoveringService:
    """Holds the probes sent to it until `let_go` and records the most it held at once; the first
    probe of each round to be answered fails, so the breaker re-opens with the others running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.let_go = threading.Event()

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def probe_round(
    breaker: CircuitBreaker, service: RecoveringService, callers: int
) -> tuple[list[threading.Thread], threading.Event, list[Permit]]:
    """`callers` threads ask for a probe at once; the round's first probe fails, the rest hang."""
    start, everyone_asked = threading.Barrier(callers), threading.Barrier(callers)
    failed = threading.Event()
    lock, first_answer = threading.Lock(), threading.Lock()
    probes: list[Permit] = []

    def caller() -> None:
        start.wait(timeout=10)
        try:
            permit: Permit | None = breaker.acquire()
        except CircuitOpen:
            permit = None
        if permit is not None:
            service.enter()  # the request is out
            with lock:
                probes.append(permit)
        everyone_asked.wait(timeout=10)
        if permit is None:
            return
        first = first_answer.acquire(blocking=False)
        if not first:
            service.let_go.wait(timeout=10)
        service.leave()
        breaker.record(permit, FAILURE if first else SUCCESS)
        if first:
            failed.set()

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    return threads, failed, probes


def test_threads_never_put_more_than_n_probes_at_a_recovering_service() -> None:
    clock = FakeClock()
    breaker = half_opened(clock, half_open_max_calls=3, recovery_timeout=10.0)
    service = RecoveringService()
    threads: list[threading.Thread] = []
    admitted_per_round = []
    for _ in range(4):
        callers, failed, probes = probe_round(breaker, service, 32)
        threads += callers
        assert failed.wait(timeout=10)
        admitted_per_round.append(len(probes))
        clock.advance(10.0)
    service.let_go.set()
    for thread in threads:
        thread.join(timeout=10)
    assert service.peak <= 3
    assert admitted_per_round == [3, 1, 1, 1]  # two probes of the first round hang throughout
    snap = breaker.snapshot()
    assert snap["state"] is State.HALF_OPEN  # their late successes closed nothing
    assert snap["probes_in_flight"] == 0 and snap["probe_successes"] == 0


Step = tuple[str, int]
STEPS = st.one_of(
    st.tuples(st.just("acquire"), st.just(0)),
    st.tuples(st.sampled_from(["success", "failure", "throttled", "release"]), st.integers(0, 7)),
    st.tuples(st.just("advance"), st.sampled_from([1, 10, 20])),
    st.tuples(st.sampled_from(["reset", "force_open", "disable"]), st.just(0)),
)
ENDINGS = {"success": SUCCESS, "failure": FAILURE, "throttled": THROTTLED}


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEPS, max_size=60), max_calls=st.integers(1, 3))
def test_probes_in_flight_never_exceed_the_limit_nor_go_negative(
    steps: list[Step], max_calls: int
) -> None:
    """Model: a probe counts from its admission until it ends, unless the breaker closed since."""
    clock = FakeClock()
    breaker = half_opened(clock, half_open_max_calls=max_calls, recovery_timeout=10.0)
    closes = [0]
    breaker.add_listener(lambda old, new: closes.__setitem__(0, closes[0] + (new is State.CLOSED)))
    running: list[tuple[Permit, int | None]] = []  # permit, closes seen when admitted as a probe
    for what, arg in steps:
        if what == "acquire":
            probing = breaker.state is State.HALF_OPEN
            with contextlib.suppress(CircuitOpen):
                running.append((breaker.acquire(), closes[0] if probing else None))
        elif what == "advance":
            clock.advance(arg)
        elif what in ("reset", "force_open", "disable"):
            getattr(breaker, what)()
            if what == "reset":
                closes[0] += 1  # a reset closes even when no change is reported
        elif running:
            permit, _ = running.pop(arg % len(running))
            if what == "release":
                breaker.release(permit)
            else:
                breaker.record(permit, ENDINGS[what])
        counted = sum(episode == closes[0] for _, episode in running)
        assert counted <= max_calls
        assert breaker.snapshot()["probes_in_flight"] == counted


# --- manual control ---------------------------------------------------------------------------


def test_force_open_stays_open_until_reset() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(recovery_timeout=1.0, clock=clock)
    breaker.force_open()
    clock.advance(1_000.0)
    assert breaker.state is State.OPEN
    assert breaker.retry_after is None
    with pytest.raises(CircuitOpen) as caught:
        breaker.acquire()
    assert caught.value.retry_after is None
    assert breaker.snapshot()["forced_open"] is True
    breaker.reset()
    assert breaker.state is State.CLOSED and breaker.allow()


def test_disable_lets_everything_through_but_keeps_counting() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    breaker.disable()
    assert breaker.state is State.CLOSED
    for _ in range(5):
        call(breaker, FAILURE)
    assert breaker.state is State.CLOSED
    snap = breaker.snapshot()
    assert snap["disabled"] is True and snap["consecutive_failures"] == 5
    breaker.reset()
    assert breaker.snapshot()["consecutive_failures"] == 0
    call(breaker, FAILURE)
    assert breaker.state is State.OPEN  # enabled again


def test_reset_clears_counters_and_open_time() -> None:
    clock = FakeClock()
    breaker = opened(clock, recovery_timeout=1.0, max_recovery_timeout=8.0)
    clock.advance(1.0)
    call(breaker, FAILURE)
    assert breaker.snapshot()["open_timeout"] == 2.0
    breaker.reset()
    snap = breaker.snapshot()
    assert snap["state"] is State.CLOSED and snap["open_timeout"] == 1.0
    assert snap["consecutive_failures"] == 0 and snap["open_until"] is None


# --- listeners --------------------------------------------------------------------------------


def test_listeners_see_every_change_in_order() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=5.0, clock=clock)
    changes: list[tuple[State, State]] = []
    breaker.add_listener(lambda old, new: changes.append((old, new)))
    call(breaker, FAILURE)
    clock.advance(5.0)
    call(breaker, FAILURE)
    clock.advance(5.0)
    call(breaker, SUCCESS)
    breaker.force_open()
    breaker.disable()
    breaker.reset()  # already closed: no change to report
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.CLOSED),
    ]


def test_a_raising_listener_is_logged_and_harmless(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker(failure_threshold=1, name="gpt")
    seen: list[State] = []

    def broken(old: State, new: State) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    breaker.add_listener(lambda old, new: seen.append(new))
    with caplog.at_level(logging.ERROR, logger="rate_limit_shield"):
        call(breaker, FAILURE)
    assert breaker.state is State.OPEN and seen == [State.OPEN]
    assert "listener bug" in caplog.text and "'gpt'" in caplog.text
    breaker.reset()
    assert breaker.state is State.CLOSED


def test_listeners_run_outside_the_lock() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    seen: list[object] = []
    breaker.add_listener(lambda old, new: seen.append(breaker.snapshot()["state"]))
    call(breaker, FAILURE)  # a listener inside the lock would deadlock here
    assert seen == [State.OPEN]


# --- time and concurrency ---------------------------------------------------------------------


def test_works_with_freezegun_and_the_system_clock() -> None:
    with freeze_time("2024-01-01") as frozen:
        breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10.0)
        call(breaker, FAILURE)
        frozen.tick(9.5)
        assert breaker.state is State.OPEN
        assert breaker.retry_after == pytest.approx(0.5)
        frozen.tick(0.5)
        assert breaker.state is State.HALF_OPEN


def test_cool_down_follows_freezegun_move_to() -> None:
    with freeze_time("2024-01-01 12:00:00") as frozen:
        breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30.0)
        call(breaker, FAILURE)
        frozen.move_to("2024-01-01 12:00:29")
        assert breaker.state is State.OPEN
        assert breaker.retry_after == pytest.approx(1.0)
        frozen.move_to("2024-01-01 12:00:30")
        call(breaker, SUCCESS)  # the probe
        assert breaker.state is State.CLOSED


def test_a_clock_stepping_back_never_stretches_an_open_time() -> None:
    with freeze_time("2024-01-01 12:00:00") as frozen:
        breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30.0)
        call(breaker, FAILURE)
        frozen.tick(10.0)
        frozen.move_to("2023-01-01 12:00:00")  # a year back
        assert breaker.retry_after == pytest.approx(30.0)  # one open time from the step
        frozen.tick(29.0)
        assert breaker.state is State.OPEN
        frozen.tick(1.0)
        assert breaker.state is State.HALF_OPEN


def test_a_breaker_opened_under_freeze_time_recovers_after_the_block() -> None:
    with freeze_time("2024-01-01"):
        breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30.0)
        call(breaker, FAILURE)
    # The real monotonic clock is decades behind the frozen one: the open time must not be.
    retry_after = breaker.retry_after
    assert retry_after is not None and 0 < retry_after <= 30.0


def test_a_forced_opening_survives_a_clock_stepping_back() -> None:
    with freeze_time("2024-01-01 12:00:00") as frozen:
        breaker = CircuitBreaker(recovery_timeout=30.0)
        breaker.force_open()
        frozen.move_to("2023-01-01 12:00:00")
        assert breaker.retry_after is None and breaker.state is State.OPEN


def test_threads_hitting_half_open_let_exactly_n_through_at_once() -> None:
    breaker = half_opened(FakeClock(), half_open_max_calls=3)
    start, everyone_asked = threading.Barrier(16), threading.Barrier(16)
    lock = threading.Lock()
    admitted = rejected = 0

    def worker() -> None:
        nonlocal admitted, rejected
        start.wait()
        try:
            permit: Permit | None = breaker.acquire()
        except CircuitOpen:
            permit = None
        with lock:
            if permit is None:
                rejected += 1
            else:
                admitted += 1
        everyone_asked.wait(timeout=10)  # probes hold their slots until every thread has asked
        if permit is not None:
            breaker.record(permit, SUCCESS)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert (admitted, rejected) == (3, 13)
    assert breaker.state is State.CLOSED  # the three probes succeeded


def test_tasks_hitting_half_open_let_exactly_n_through_at_once() -> None:
    breaker = half_opened(FakeClock(), half_open_max_calls=3)
    in_flight = peak = 0

    async def task() -> bool:
        nonlocal in_flight, peak
        try:
            permit = breaker.acquire()
        except CircuitOpen:
            return False
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        breaker.record(permit, SUCCESS)
        return True

    async def main() -> list[bool]:
        return await asyncio.gather(*(task() for _ in range(16)))

    results = asyncio.run(main())
    assert peak == 3 and results.count(True) == 3
    assert breaker.state is State.CLOSED


def test_concurrent_failures_open_it_once() -> None:
    breaker = CircuitBreaker(failure_threshold=50, failure_rate=0.9, window=100, min_calls=100)
    changes: list[tuple[State, State]] = []
    breaker.add_listener(lambda old, new: changes.append((old, new)))
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(200):
            try:
                permit = breaker.acquire()
            except CircuitOpen:
                continue
            breaker.record(permit, FAILURE)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert changes == [(State.CLOSED, State.OPEN)]


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from([SUCCESS, FAILURE, THROTTLED, IGNORED]), max_size=60),
    threshold=st.one_of(st.none(), st.integers(1, 6)),
    rate=st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.7, 1.0]),
    window=st.integers(1, 12),
    min_calls=st.integers(1, 12),
)
def test_count_window_opens_exactly_when_a_naive_model_does(
    outcomes: list[Outcome], threshold: int | None, rate: float, window: int, min_calls: int
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=threshold,
        failure_rate=rate,
        window=window,
        min_calls=min_calls,
        clock=FakeClock(),
    )
    recent: list[bool] = []  # the model: a plain list of the last `window` counted calls
    streak = 0
    for outcome in outcomes:
        call(breaker, outcome)
        if outcome in (SUCCESS, FAILURE):
            failed = outcome is FAILURE
            streak = streak + 1 if failed else 0
            recent = [*recent, failed][-window:]
        model_opens = (threshold is not None and streak >= threshold) or (
            len(recent) >= min(min_calls, window) and sum(recent) / len(recent) >= rate
        )
        if model_opens:
            assert breaker.state is State.OPEN
            return
        assert breaker.state is State.CLOSED


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 24), st.booleans()), max_size=40))
def test_time_window_holds_the_calls_of_its_last_buckets(steps: list[tuple[int, bool]]) -> None:
    """With 10 one-second buckets, a call stays between 9 and 10 seconds."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=None, failure_rate=1.0, window_seconds=10.0, min_calls=1000, clock=clock
    )
    times: list[float] = []
    for quarter_seconds, records in steps:
        clock.advance(quarter_seconds / 4)
        now = clock.monotonic()
        if records:
            call(breaker, FAILURE)
            times.append(now)
        held = breaker.snapshot()["window_calls"]
        assert isinstance(held, int)
        assert sum(t >= now - 9.0 for t in times) <= held <= sum(t > now - 10.0 for t in times)


def test_permit_is_a_plain_int() -> None:
    permit: Permit = CircuitBreaker().acquire()
    assert isinstance(permit, int)
