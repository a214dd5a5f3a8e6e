"""RetryPolicy arithmetic and RetryBudget accounting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rate_limit_shield.retry import BACKOFFS, RetryBudget, RetryPolicy
from rate_limit_shield.testing import FakeClock


def fixed(value: float):
    return lambda: value


def test_seed_signature_and_exponential_cap_without_jitter():
    policy = RetryPolicy(5, 1.0, 10.0, 2.0, False)
    assert [policy.delay_for(n) for n in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.jitter is False


def test_full_jitter_is_uniform_below_the_cap_and_applied_after_it():
    top = RetryPolicy(base_delay=1.0, max_delay=10.0, random=fixed(0.999999))
    bottom = RetryPolicy(base_delay=1.0, max_delay=10.0, random=fixed(0.0))
    assert top.backoff == "full"
    assert top.delay_for(3) == pytest.approx(4.0, rel=1e-5)
    # Past the cap the jitter still spreads over [0, cap], not collapsing onto the cap.
    assert top.delay_for(30) == pytest.approx(10.0, rel=1e-5)
    assert bottom.delay_for(30) == 0.0


def test_equal_decorrelated_constant_backoffs():
    equal = RetryPolicy(base_delay=1.0, max_delay=100.0, backoff="equal", random=fixed(0.5))
    assert equal.delay_for(4) == pytest.approx(8.0 / 2 + 0.5 * 4.0)
    deco = RetryPolicy(base_delay=1.0, max_delay=5.0, backoff="decorrelated", random=fixed(1.0))
    assert deco.delay_for(1) == pytest.approx(3.0)  # uniform(base, 3 x base) at its top
    assert deco.delay_for(2, previous=3.0) == 5.0  # min(cap, 9)
    constant = RetryPolicy(base_delay=0.7, backoff="constant")
    assert {constant.delay_for(n) for n in range(1, 6)} == {0.7}


def test_no_backoff_delays_attempt_zero():
    for backoff in BACKOFFS:
        assert RetryPolicy(base_delay=1.0, backoff=backoff, random=fixed(1.0)).delay_for(0) == 0.0


def test_next_delay_follows_delay_for_of_the_attempts_made():
    policy = RetryPolicy(4, 0.5, 30.0, 3.0, False)
    schedule = [policy.next_delay(made, None, None, math.inf) for made in (1, 2, 3)]
    assert schedule == [policy.delay_for(made) for made in (1, 2, 3)] == [0.5, 1.5, 4.5]


def test_huge_attempt_numbers_do_not_overflow():
    assert RetryPolicy(jitter=False, max_delay=7.0).delay_for(10_000) == 7.0


def test_next_delay_stops_at_max_attempts():
    policy = RetryPolicy(3, 1.0, jitter=False)
    assert policy.next_delay(1, None, None, math.inf) == 1.0
    assert policy.next_delay(2, 1.0, None, math.inf) == 2.0
    assert policy.next_delay(3, 2.0, None, math.inf) is None


def test_next_delay_never_plans_past_the_deadline():
    policy = RetryPolicy(5, 1.0, jitter=False)
    assert policy.next_delay(1, None, None, time_left=1.5) == 1.0
    assert policy.next_delay(2, 1.0, None, time_left=1.5) is None  # 2.0 > 1.5 left


def test_server_hint_is_a_floor_for_the_delay():
    policy = RetryPolicy(5, 1.0, jitter=False, max_retry_after=30.0)
    assert policy.next_delay(1, None, retry_after=7.0, time_left=math.inf) == 7.0
    assert policy.next_delay(1, None, retry_after=0.2, time_left=math.inf) == 1.0
    assert policy.next_delay(1, None, retry_after=30.0, time_left=math.inf) == 30.0


@pytest.mark.parametrize("hint", [30.001, 300.0, 3600.0])
def test_a_hint_longer_than_max_retry_after_stops_at_once(hint):
    # Waiting less than the server asked would only send a request it said it would refuse.
    policy = RetryPolicy(5, 1.0, jitter=False, max_retry_after=30.0)
    assert policy.next_delay(1, None, retry_after=hint, time_left=math.inf) is None
    assert policy.hint_too_long(hint, math.inf) == "more than max_retry_after (30s)"


def test_hint_too_long_names_the_time_left_first():
    policy = RetryPolicy(5, 1.0, max_retry_after=60.0)
    assert policy.hint_too_long(None, 1.0) is None
    assert policy.hint_too_long(60.0, math.inf) is None
    assert policy.hint_too_long(5.0, 5.0) is None  # exactly the time left: it may be waited out
    assert policy.hint_too_long(5.0, 4.25) == "more than the 4.250s left"
    assert policy.hint_too_long(300.0, 100.0) == "more than the 100.000s left"
    assert RetryPolicy(max_retry_after=0).hint_too_long(0.5, math.inf) == (
        "more than max_retry_after (0s)"
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"base_delay": -1}, "base_delay"),
        ({"max_delay": float("nan")}, "max_delay"),
        ({"base_delay": 5, "max_delay": 1}, "max_delay"),
        ({"multiplier": 0}, "multiplier"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"backoff": "exponential"}, "backoff"),
        ({"max_retry_after": -1}, "max_retry_after"),
    ],
)
def test_bad_arguments_are_named(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        RetryPolicy(**kwargs)


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.0, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
    mult=st.floats(min_value=1.0, max_value=10.0),
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_full_jitter_delays_lie_in_zero_to_cap(attempt, base, extra, mult, u):
    policy = RetryPolicy(base_delay=base, max_delay=base + extra, multiplier=mult, random=fixed(u))
    delay = policy.delay_for(attempt)
    assert 0.0 <= delay <= base + extra


@given(st.integers(min_value=20, max_value=60))
def test_full_jitter_stays_spread_at_the_cap(attempt):
    import random

    rng = random.Random(attempt)
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, random=rng.random)
    delays = [policy.delay_for(attempt) for _ in range(400)]
    assert min(delays) < 1.0 and max(delays) > 7.0  # not clustered at the cap
    assert 3.0 < sum(delays) / len(delays) < 5.0


@given(
    backoff=st.sampled_from(BACKOFFS),
    hints=st.lists(st.none() | st.floats(min_value=0, max_value=1000), min_size=1, max_size=12),
    timeout=st.floats(min_value=0.001, max_value=100.0),
)
def test_no_schedule_sleeps_past_the_deadline(backoff, hints, timeout):
    policy = RetryPolicy(len(hints) + 1, 0.5, 20.0, backoff=backoff, max_retry_after=1e6)
    elapsed, previous = 0.0, None
    for attempt, hint in enumerate(hints, start=1):
        delay = policy.next_delay(attempt, previous, hint, timeout - elapsed)
        if delay is None:
            break
        assert delay >= 0.0
        elapsed += delay
        previous = delay
        assert elapsed < timeout


def test_budget_allows_ratio_of_calls_plus_floor():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=0.5, window=10, clock=clock)
    for _ in range(100):
        budget.record_call()
    spent = 0
    while budget.try_spend():
        spent += 1
    assert spent == 20 + 5  # 20 % of 100 calls, plus 0.5/s over 10 s
    assert budget.snapshot()["retries_left"] == 0


def test_budget_forgets_calls_and_retries_outside_the_window():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10, clock=clock)
    for _ in range(10):
        budget.record_call()
    assert sum(budget.try_spend() for _ in range(10)) == 5
    clock.advance(11)
    assert budget.try_spend() is False  # no calls left in the window, no floor
    for _ in range(4):
        budget.record_call()
    assert sum(budget.try_spend() for _ in range(10)) == 2


@pytest.mark.parametrize(
    "kwargs", [{"ratio": -0.1}, {"min_per_second": -1}, {"window": 0}, {"window": 2.5}]
)
def test_budget_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryBudget(**kwargs)
