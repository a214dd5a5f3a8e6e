"""The seed's API (v0.1.0), exactly as its users wrote it, imported from `rate_limit_shield` alone:
TokenBucket, CircuitBreaker and State, RetryPolicy, Shield, LLMShield and parse_retry_after."""

from __future__ import annotations

import asyncio

import pytest

from rate_limit_shield import (
    CircuitBreaker,
    CircuitOpen,
    Limit,
    LLMShield,
    RetryPolicy,
    Shield,
    State,
    TokenBucket,
    parse_retry_after,
)
from rate_limit_shield.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Flaky:
    """Raises `ConnectionError` `failures` times, then returns its arguments; counts calls."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> tuple[object, ...]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("provider down")
        return args, kwargs

    async def acall(self, *args: object, **kwargs: object) -> tuple[object, ...]:
        return self(*args, **kwargs)


# -- TokenBucket --------------------------------------------------------------------------------


def test_token_bucket_takes_what_it_holds_and_refills_at_its_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 2, clock=clock)
    assert (bucket.capacity, bucket.refill_rate, bucket.available) == (10, 2, 10)
    assert all(bucket.try_acquire() for _ in range(10))
    assert not bucket.try_acquire()
    assert bucket.wait_time() == pytest.approx(0.5)
    assert bucket.wait_time(4) == pytest.approx(2.0)
    clock.advance(1.0)
    assert bucket.available == pytest.approx(2.0)
    assert bucket.try_acquire(2.0)
    assert bucket.available == pytest.approx(0.0)


def test_token_bucket_never_holds_more_than_its_capacity(clock: FakeClock) -> None:
    bucket = TokenBucket(3, 1, clock=clock)
    clock.advance(100.0)
    assert bucket.available == 3
    assert bucket.try_acquire(3) and not bucket.try_acquire(0.5)


# -- CircuitBreaker and State -------------------------------------------------------------------


def test_state_values_are_the_seeds_strings() -> None:
    assert [State.CLOSED, State.OPEN, State.HALF_OPEN] == ["closed", "open", "half_open"]


def test_breaker_opens_after_the_threshold_and_probes_after_the_recovery_timeout(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(3, 30, 1, clock=clock)
    assert breaker.state == "closed"
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.advance(30.0)
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time (half_open_max_calls=1)
    breaker.record_success()
    assert breaker.state == "closed"


def test_breaker_success_resets_the_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(2, 10, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"


# -- RetryPolicy --------------------------------------------------------------------------------


def test_retry_policy_takes_the_seeds_positional_arguments() -> None:
    policy = RetryPolicy(5, 0.5, 3.0, 3.0, False)
    assert (policy.max_attempts, policy.base_delay, policy.max_delay) == (5, 0.5, 3.0)
    assert (policy.multiplier, policy.jitter) == (3.0, False)


def test_retry_policy_defaults_to_the_seeds_base_delay() -> None:
    assert RetryPolicy().base_delay == 1.0


def test_delay_for_counts_attempts_from_one() -> None:
    policy = RetryPolicy(jitter=False, base_delay=1)
    assert policy.delay_for(0) == 0.0
    assert policy.delay_for(1) == 1.0
    assert policy.delay_for(3) == 4.0
    assert [RetryPolicy(5, 0.5, 3.0, 3.0, False).delay_for(n) for n in range(5)] == [
        0.0, 0.5, 1.5, 3.0, 3.0,
    ]  # fmt: skip


def test_delay_for_with_jitter_stays_within_the_seeds_delay() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=60.0)
    assert policy.delay_for(0) == 0.0
    assert all(0.0 <= policy.delay_for(1) <= 2.0 for _ in range(200))
    assert all(0.0 <= policy.delay_for(3) <= 8.0 for _ in range(200))


# -- Shield -------------------------------------------------------------------------------------


def seed_shield(clock: FakeClock, *, capacity: float = 10, failures: int = 5) -> Shield:
    return Shield(
        TokenBucket(capacity, 1, clock=clock),
        CircuitBreaker(failures, 30, clock=clock),
        RetryPolicy(3, 1.0, 10.0, 2.0, False),
        clock=clock,
    )


def test_shield_call_passes_arguments_and_takes_one_token(clock: FakeClock) -> None:
    shield = seed_shield(clock)
    assert shield.call(Flaky(), 1, b=2) == ((1,), {"b": 2})
    assert shield.bucket.available == pytest.approx(9.0)


def test_shield_call_retries_on_the_seeds_schedule(clock: FakeClock) -> None:
    flaky = Flaky(failures=2)
    assert seed_shield(clock).call(flaky, "x") == (("x",), {})
    assert flaky.calls == 3
    policy = RetryPolicy(3, 1.0, 10.0, 2.0, False)
    assert clock.sleeps == [policy.delay_for(1), policy.delay_for(2)] == [1.0, 2.0]


def test_shield_call_tokens_is_the_permits_cost_not_an_argument(clock: FakeClock) -> None:
    shield = seed_shield(clock)
    assert shield.call(Flaky(), "x", tokens=2.0) == (("x",), {})
    assert shield.bucket.available == pytest.approx(8.0)
    assert shield.call(Flaky(), tokens=8, model="m") == ((), {"model": "m"})
    assert shield.bucket.available == pytest.approx(0.0)
    assert clock.sleeps == []


def test_shield_call_waits_for_the_tokens_it_asks_for(clock: FakeClock) -> None:
    shield = seed_shield(clock, capacity=4)
    shield.call(Flaky(), tokens=4)
    shield.call(Flaky(), tokens=3)
    assert clock.sleeps == [pytest.approx(3.0)]  # refilled at 1 token a second


def test_shield_acall_tokens_is_the_permits_cost(clock: FakeClock) -> None:
    shield = seed_shield(clock)
    result = asyncio.run(shield.acall(Flaky().acall, "x", tokens=3.0, y=1))
    assert result == (("x",), {"y": 1})
    assert shield.bucket.available == pytest.approx(7.0)


def test_shield_exposes_the_seeds_parts(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 1, clock=clock)
    breaker = CircuitBreaker(clock=clock)
    retry = RetryPolicy()
    shield = Shield(bucket, breaker, retry)
    assert (shield.bucket, shield.breaker, shield.retry) == (bucket, breaker, retry)


def test_shield_refuses_once_the_breaker_opens(clock: FakeClock) -> None:
    shield = seed_shield(clock, failures=3)
    with pytest.raises((ConnectionError, CircuitOpen)):
        shield.call(Flaky(failures=10))
    assert shield.breaker is not None and shield.breaker.state == "open"
    with pytest.raises(CircuitOpen):
        shield.call(Flaky())


# -- LLMShield ----------------------------------------------------------------------------------


def test_llm_shield_bucket_is_the_models_requests_per_minute(clock: FakeClock) -> None:
    shield = LLMShield(rpm_limits={"gpt-4": 10}, clock=clock).shield_for("gpt-4")
    bucket = shield.bucket
    assert (bucket.capacity, bucket.available) == (10, 10)
    assert bucket.refill_rate == pytest.approx(10 / 60)
    shield.call(Flaky())
    assert shield.bucket.available == pytest.approx(9.0)
    assert bucket.try_acquire()
    assert shield.bucket.available == pytest.approx(8.0)
    assert bucket.wait_time(9) == pytest.approx(6.0)


def test_llm_shield_bucket_without_a_clock() -> None:
    bucket = LLMShield(rpm_limits={"gpt-4": 10}).shield_for("gpt-4").bucket
    assert bucket.capacity == 10
    assert bucket.available == pytest.approx(10.0)


def test_llm_shield_bucket_is_the_rpm_one_beside_a_tpm_limit(clock: FakeClock) -> None:
    shields = LLMShield(rpm_limits={"gpt-4": 10}, tpm_limits={"gpt-4": 1000}, clock=clock)
    shield = shields.shield_for("gpt-4")
    assert shield.limiter is not None
    assert shield.limiter.limits == (Limit(10, 60), Limit(1000, 60, unit="tokens"))
    assert shield.bucket.capacity == 10
    shield.call(Flaky(), tokens={"requests": 1, "tokens": 600})
    assert shield.bucket.available == pytest.approx(9.0)
    assert shield.limiter.levels()["1000/60s tokens"] == pytest.approx(400.0)


def test_llm_shield_parts_are_public(clock: FakeClock) -> None:
    shield = LLMShield(rpm_limits={"gpt-4": 10}, clock=clock).shield_for("gpt-4")
    assert isinstance(shield.breaker, CircuitBreaker)
    assert isinstance(shield.retry, RetryPolicy)
    assert shield.breaker.state == "closed"


def test_llm_shield_gives_the_same_shield_for_a_model_every_time(clock: FakeClock) -> None:
    shields = LLMShield(rpm_limits={"gpt-4": 10, "gpt-3.5": 100}, clock=clock)
    assert shields.shield_for("gpt-4") is shields.shield_for("gpt-4")
    assert shields.shield_for("gpt-3.5") is not shields.shield_for("gpt-4")
    assert shields.shield_for("gpt-3.5").bucket.capacity == 100


def test_llm_shield_waits_within_a_minute_for_the_next_request(clock: FakeClock) -> None:
    shield = LLMShield(rpm_limits={"gpt-4": 2}, clock=clock).shield_for("gpt-4")
    assert [shield.call(lambda n: n, n) for n in range(2)] == [0, 1]
    assert clock.sleeps == []
    assert shield.call(lambda: "third") == "third"
    assert clock.sleeps == [pytest.approx(30.0)]


def test_llm_shield_state_snapshot_has_the_seeds_keys(clock: FakeClock) -> None:
    shields = LLMShield(rpm_limits={"m1": 10, "m2": 5}, clock=clock)
    assert shields.state_snapshot() == {}
    shields.shield_for("m1").call(Flaky())
    shields.shield_for("m2")
    snapshot = shields.state_snapshot()
    assert set(snapshot) == {"m1", "m2"}
    assert snapshot["m1"]["available_tokens"] == pytest.approx(9.0)
    assert snapshot["m1"]["breaker_state"] == "closed"
    assert snapshot["m2"]["available_tokens"] == pytest.approx(5.0)
    assert snapshot["m1"]["limiter"]["levels"] == {"10/60s requests": pytest.approx(9.0)}


def test_llm_shield_state_snapshot_tells_an_open_breaker(clock: FakeClock) -> None:
    shields = LLMShield(rpm_limits={"m1": 100}, clock=clock)
    breaker = shields.shield_for("m1").breaker
    assert breaker is not None
    breaker.force_open()
    assert shields.state_snapshot()["m1"]["breaker_state"] == "open"


# -- parse_retry_after --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, 0.0),
        ({"Retry-After": "soon"}, 0.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": ""}, 0.0),
        (None, 0.0),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "1500"}, 1.5),
    ],
)
def test_parse_retry_after_gives_zero_when_absent_or_unusable(
    headers: object, seconds: float
) -> None:
    assert parse_retry_after(headers) == seconds
