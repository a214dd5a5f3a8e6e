"""The Shield pipeline, sync and async, on a FakeClock."""

from __future__ import annotations

import asyncio
import math
import warnings

import freezegun
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rate_limit_shield.breaker import CircuitBreaker, State
from rate_limit_shield.bulkhead import Bulkhead
from rate_limit_shield.errors import BulkheadFull, CircuitOpen, QuotaExhausted, RateLimited
from rate_limit_shield.events import (
    GAVE_UP,
    REJECTED,
    RETRY,
    SUCCEEDED,
    THROTTLED,
    UNSETTLED,
    Event,
)
from rate_limit_shield.limiter import Limit, Limiter, TokenBucket
from rate_limit_shield.outcome import DefaultClassifier, Outcome, Verdict
from rate_limit_shield.retry import RetryBudget, RetryPolicy
from rate_limit_shield.shield import Shield
from rate_limit_shield.testing import FakeClock


class Boom(Exception):
    pass


class Flaky:
    """Fails `failures` times with `error`, then returns `result`; counts calls."""

    def __init__(self, failures: int, error: BaseException | None = None, result: object = "ok"):
        self.failures = failures
        self.error = error if error is not None else Boom("provider down")
        self.result = result
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.result

    async def acall(self, *args: object, **kwargs: object) -> object:
        return self(*args, **kwargs)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **kwargs: object) -> Shield:
    kwargs.setdefault("retry", RetryPolicy(4, 1.0, 30.0, 2.0, jitter=False))
    return Shield(clock=clock, **kwargs)  # type: ignore[arg-type]


def both(shield: Shield, flaky: Flaky, *args: object) -> list[object]:
    """Run the same scenario through the sync and the async driver: the same outcome."""
    return [shield.call(flaky, *args), run(shield.acall(flaky.acall, *args))]


# -- the seed's API --------------------------------------------------------------------------


def test_seed_constructor_and_call(clock):
    shield = Shield(
        TokenBucket(10, 1, clock=clock),
        CircuitBreaker(3, 30, clock=clock),
        RetryPolicy(3, 0.1, 1.0, 2.0, False),
        clock=clock,
    )
    assert shield.call(lambda a, b=0: a + b, 2, b=3) == 5
    assert shield.bucket is shield.limiter
    assert shield.bucket.available == pytest.approx(9)


# -- retries ---------------------------------------------------------------------------------


def test_retries_with_backoff_then_succeeds(clock):
    flaky = Flaky(2)
    assert make(clock).call(flaky) == "ok"
    assert flaky.calls == 3
    assert clock.sleeps == [1.0, 2.0]


def test_async_retries_with_backoff_then_succeeds(clock):
    flaky = Flaky(2)
    assert run(make(clock).acall(flaky.acall)) == "ok"
    assert flaky.calls == 3
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_gives_up_with_the_functions_own_last_exception_and_a_note(clock, driver):
    flaky = Flaky(10)
    shield = make(clock)
    with pytest.raises(Boom) as info:
        if driver == "sync":
            shield.call(flaky)
        else:
            run(shield.acall(flaky.acall))
    assert info.value is flaky.error
    assert flaky.calls == 4
    assert any("4 attempt(s)" in note for note in info.value.__notes__)
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_zero_delay_never_calls_sleep(clock):
    flaky = Flaky(3)
    shield = make(clock, retry=RetryPolicy(4, 0.0, 0.0, jitter=False))
    assert both(shield, flaky) == ["ok", "ok"]
    assert clock.sleeps == []


def test_no_retry_policy_means_one_attempt(clock):
    flaky = Flaky(1)
    with pytest.raises(Boom):
        Shield(clock=clock).call(flaky)
    assert flaky.calls == 1


def test_ignored_errors_are_raised_at_once_and_not_counted(clock):
    breaker = CircuitBreaker(2, 30, clock=clock)
    shield = make(clock, breaker=breaker, classifier=DefaultClassifier(ignore=KeyError))
    flaky = Flaky(10, KeyError("bad request"))
    for _ in range(5):
        with pytest.raises(KeyError):
            shield.call(flaky)
    assert flaky.calls == 5
    assert breaker.state is State.CLOSED
    assert clock.sleeps == []


def test_retry_on_narrows_what_is_retried(clock):
    shield = make(clock, classifier=DefaultClassifier(retry_on=ConnectionError))
    flaky = Flaky(10, ValueError("a bug"))
    with pytest.raises(ValueError):
        shield.call(flaky)
    assert flaky.calls == 1


def test_bad_results_are_retried_and_the_last_one_returned(clock):
    shield = make(clock, classifier=DefaultClassifier(retry_if_result=lambda r: r == ""))
    empty = Flaky(0, result="")
    assert shield.call(empty) == ""
    assert empty.calls == 4
    assert run(shield.acall(empty.acall)) == ""
    assert empty.calls == 8


def test_classifier_replacement_error_is_raised_at_once(clock):
    class QuotaClassifier(DefaultClassifier):
        def classify_error(self, error: BaseException) -> Verdict:
            return Verdict(Outcome.FATAL, None, QuotaExhausted("insufficient_quota"))

    flaky = Flaky(10)
    with pytest.raises(QuotaExhausted) as info:
        make(clock, classifier=QuotaClassifier()).call(flaky)
    assert flaky.calls == 1
    assert info.value.__cause__ is flaky.error


def test_retry_budget_stops_a_retry_storm(clock):
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10, clock=clock)  # one retry
    shield = make(clock, budget=budget)
    first = Flaky(1)
    assert shield.call(first) == "ok"
    second = Flaky(10)
    with pytest.raises(Boom) as info:
        shield.call(second)
    assert second.calls == 1
    assert any("retry budget" in note for note in info.value.__notes__)


# -- deadline --------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_never_sleeps_past_the_deadline(clock, driver):
    shield = make(clock, retry=RetryPolicy(10, 1.0, 30.0, jitter=False), timeout=5.0)
    flaky = Flaky(100)
    with pytest.raises(Boom) as info:
        if driver == "sync":
            shield.call(flaky)
        else:
            run(shield.acall(flaky.acall))
    assert clock.sleeps == [1.0, 2.0]  # a third delay of 4 s would end past the 5 s deadline
    assert any("deadline" in note for note in info.value.__notes__)


def test_a_hint_longer_than_the_time_left_gives_up_at_once_with_rate_limited(clock):
    throttled = Flaky(10, RateLimited("slow down", retry_after=50.0))
    with pytest.raises(RateLimited) as info:
        make(clock, timeout=10.0).call(throttled)
    assert info.value.retry_after == 50.0
    assert info.value.cause is throttled.error
    assert throttled.calls == 1
    assert clock.sleeps == []


def test_async_deadline_cuts_off_a_slow_attempt():
    async def slow() -> str:
        await asyncio.sleep(30)
        return "late"

    shield = Shield(retry=RetryPolicy(3, 0.0, jitter=False), timeout=0.05)
    with pytest.raises(asyncio.TimeoutError):
        run(shield.acall(slow))


# -- throttling ------------------------------------------------------------------------------


def test_throttled_pauses_the_key_and_is_not_a_breaker_failure(clock):
    limiter = Limiter([Limit(100, 60)], clock=clock)
    breaker = CircuitBreaker(1, 30, clock=clock)
    throttled = Flaky(1, RateLimited("429", retry_after=7.0))
    shield = make(clock, bucket=limiter, breaker=breaker)
    assert shield.call(throttled) == "ok"
    assert breaker.state is State.CLOSED
    # The second attempt waited for the pause (one sleep for the retry delay, itself >= 7 s).
    assert clock.slept >= 7.0
    # The pause holds the key for every caller, not just this one.
    limiter.pause(3.0)
    assert not limiter.try_acquire()


# -- breaker ---------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_open_breaker_rejects_without_calling(clock, driver):
    breaker = CircuitBreaker(1, 30, clock=clock)
    breaker.force_open()
    flaky = Flaky(0)
    shield = make(clock, breaker=breaker)
    with pytest.raises(CircuitOpen):
        if driver == "sync":
            shield.call(flaky)
        else:
            run(shield.acall(flaky.acall))
    assert flaky.calls == 0


def test_breaker_opening_mid_retries_stops_them_with_the_cause(clock):
    breaker = CircuitBreaker(2, 30, clock=clock)
    flaky = Flaky(10)
    with pytest.raises(CircuitOpen) as info:
        make(clock, breaker=breaker).call(flaky)
    assert flaky.calls == 2
    assert info.value.cause is flaky.error
    # It gave up as soon as the breaker opened, instead of sleeping 2 s to be refused.
    assert clock.sleeps == [1.0]
    assert info.value.retry_after == pytest.approx(30.0)


def test_rate_refusal_gives_back_the_half_open_probe(clock):
    breaker = CircuitBreaker(1, 10, half_open_max_calls=1, clock=clock)
    breaker.record_failure()
    clock.advance(10)
    assert breaker.state is State.HALF_OPEN
    limiter = TokenBucket(1, 0.01, clock=clock)
    assert limiter.try_acquire()
    shield = make(clock, bucket=limiter, breaker=breaker, max_wait=1.0)
    with pytest.raises(RateLimited):
        shield.call(Flaky(0))
    # The probe slot came back: a direct probe is still allowed.
    assert breaker.allow()


# -- limiter ---------------------------------------------------------------------------------


def test_waits_for_a_rate_permit(clock):
    limiter = TokenBucket(2, 1.0, clock=clock)
    shield = make(clock, bucket=limiter)
    results = [shield.call(lambda i=i: i) for i in range(4)]
    assert results == [0, 1, 2, 3]
    assert clock.sleeps == [1.0, 1.0]


def test_rate_wait_longer_than_max_wait_is_rate_limited(clock):
    limiter = TokenBucket(1, 0.1, clock=clock)
    shield = make(clock, bucket=limiter, max_wait=2.0)
    flaky = Flaky(0)
    shield.call(flaky)
    with pytest.raises(RateLimited) as info:
        shield.call(flaky)
    assert info.value.retry_after == pytest.approx(10.0)
    assert flaky.calls == 1


def test_rate_wait_is_bounded_by_the_deadline(clock):
    limiter = TokenBucket(1, 0.1, clock=clock)
    shield = make(clock, bucket=limiter, timeout=5.0, max_wait=60.0)
    shield.call(Flaky(0))
    with pytest.raises(RateLimited):
        shield.call(Flaky(0))
    assert clock.sleeps == []


def test_usage_settles_the_reservation(clock):
    limiter = Limiter([Limit(1000, 60, "tokens")], clock=clock)
    shield = make(
        clock,
        bucket=limiter,
        cost=lambda prompt, max_tokens: {"tokens": len(prompt) + max_tokens},
        usage=lambda result: {"tokens": result["used"]},
    )
    shield.call(lambda prompt, max_tokens: {"used": 50}, "x" * 100, max_tokens=400)
    assert limiter.available == pytest.approx(950)


# -- bulkhead --------------------------------------------------------------------------------


def test_bulkhead_slot_is_held_only_in_flight(clock):
    bulkhead = Bulkhead(1)
    shield = make(clock, bulkhead=bulkhead)
    seen = []

    def inside() -> str:
        seen.append(bulkhead.in_flight)
        with pytest.raises(BulkheadFull):
            shield.call(lambda: "nested")
        if len(seen) < 2:
            raise Boom("retry me")
        return "ok"

    assert shield.call(inside) == "ok"
    assert seen == [1, 1]
    assert bulkhead.in_flight == 0


# -- cancellation gives back only what was never used -----------------------------------------


def test_a_task_cancelled_in_flight_keeps_its_rate_permit_and_frees_the_rest():
    clock = FakeClock()
    limiter = TokenBucket(5, 1.0, clock=clock)
    breaker = CircuitBreaker(1, 10, half_open_max_calls=1, clock=clock)
    breaker.record_failure()
    clock.advance(10)
    bulkhead = Bulkhead(2)
    shield = make(clock, bucket=limiter, breaker=breaker, bulkhead=bulkhead)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    async def scenario() -> None:
        task = asyncio.ensure_future(shield.acall(hang))
        await started.wait()
        assert bulkhead.in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert limiter.available == pytest.approx(4)  # the request went out: its permit counts
    assert bulkhead.in_flight == 0
    assert breaker.allow()


def test_cancelled_while_waiting_for_a_rate_permit_gives_it_back():
    clock = FakeClock()
    limiter = TokenBucket(1, 1.0, clock=clock)
    shield = make(clock, bucket=limiter)

    async def scenario() -> None:
        await shield.acall(Flaky(0).acall)  # takes the only token
        original = clock.asleep

        async def never(seconds: float) -> None:
            await asyncio.sleep(3600)

        clock.asleep = never  # type: ignore[method-assign]
        task = asyncio.ensure_future(shield.acall(Flaky(0).acall))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        clock.asleep = original  # type: ignore[method-assign]

    run(scenario())
    # The waiting reservation was returned: one second of refill gives one whole token.
    clock.advance(1.0)
    assert limiter.available == pytest.approx(1.0)


# -- events ----------------------------------------------------------------------------------


def test_events_tell_what_happened(clock):
    events: list[Event] = []
    shield = make(clock, on_event=events.append, name="gpt-4o")
    shield.call(Flaky(2))
    assert [(e.kind, e.attempt, e.delay) for e in events] == [
        (RETRY, 1, 1.0),
        (RETRY, 2, 2.0),
        (SUCCEEDED, 3, None),
    ]
    assert all(e.key == "gpt-4o" for e in events)
    events.clear()
    with pytest.raises(Boom):
        shield.call(Flaky(10))
    assert events[-1].kind == GAVE_UP
    events.clear()
    limiter = TokenBucket(1, 1, clock=clock)
    limiter.try_acquire()
    with pytest.raises(RateLimited):
        make(clock, bucket=limiter, max_wait=0, on_event=events.append).call(Flaky(0))
    assert [e.kind for e in events] == [REJECTED]
    events.clear()
    make(clock, on_event=events.append).call(Flaky(1, RateLimited("429", retry_after=2.0)))
    assert [e.kind for e in events] == [THROTTLED, RETRY, SUCCEEDED]


def test_throttled_event_when_the_key_pauses(clock):
    events: list[Event] = []
    limiter = TokenBucket(10, 1, clock=clock)
    shield = make(clock, bucket=limiter, on_event=events.append)
    shield.call(Flaky(1, RateLimited("429", retry_after=2.0)))
    assert (THROTTLED, 2.0) in [(e.kind, e.delay) for e in events]


def test_a_raising_listener_never_breaks_a_call(clock, caplog):
    def bad(event: Event) -> None:
        raise RuntimeError("listener bug")

    assert make(clock, on_event=bad).call(Flaky(1)) == "ok"
    assert "listener" in caplog.text


# -- bad input and freezegun -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"max_wait": -1}, "max_wait"),
        ({"max_wait": math.nan}, "max_wait"),
    ],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Shield(**kwargs)  # type: ignore[arg-type]


def test_works_under_freezegun():
    with freezegun.freeze_time("2026-01-01", tick=False) as frozen:
        shield = Shield(TokenBucket(1, 1.0), CircuitBreaker(3, 30), max_wait=0.0)
        assert shield.call(lambda: 1) == 1
        with pytest.raises(RateLimited):
            shield.call(lambda: 2)
        frozen.tick(1.0)
        assert shield.call(lambda: 3) == 3


# -- real concurrency through the whole pipeline ---------------------------------------------


def test_threads_through_one_shield_respect_rate_and_concurrency():
    import threading
    import time

    limiter = TokenBucket(5, 100.0)
    bulkhead = Bulkhead(3, max_wait=5.0)
    shield = Shield(limiter, CircuitBreaker(5, 30), RetryPolicy(2, 0.0), bulkhead=bulkhead)
    lock = threading.Lock()
    in_flight = peak = admitted = 0

    def work() -> None:
        nonlocal in_flight, peak, admitted
        with lock:
            in_flight += 1
            admitted += 1
            peak = max(peak, in_flight)
        time.sleep(0.002)
        with lock:
            in_flight -= 1

    start = time.monotonic()
    stop = start + 0.5

    def worker() -> None:
        while time.monotonic() < stop:
            shield.call(work)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - start
    assert peak <= 3
    assert admitted <= 5 + 100.0 * elapsed + 1
    assert admitted >= 10  # it did make progress
    assert bulkhead.in_flight == 0


def test_tasks_through_one_shield_respect_rate_and_concurrency():
    import time

    limiter = TokenBucket(5, 100.0)
    bulkhead = Bulkhead(3, max_wait=5.0)
    shield = Shield(limiter, CircuitBreaker(5, 30), RetryPolicy(2, 0.0), bulkhead=bulkhead)
    in_flight = peak = admitted = 0

    async def work() -> None:
        nonlocal in_flight, peak, admitted
        in_flight += 1
        admitted += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1

    async def scenario() -> float:
        start = time.monotonic()
        stop = start + 0.5

        async def worker() -> None:
            while time.monotonic() < stop:
                await shield.acall(work)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(16))), 30)
        return time.monotonic() - start

    elapsed = run(scenario())
    assert peak <= 3
    assert admitted <= 5 + 100.0 * elapsed + 1
    assert admitted >= 10
    assert bulkhead.in_flight == 0


# -- property: whatever the provider does, the shield keeps its promises ---------------------


@given(
    script=st.lists(
        st.sampled_from(["ok", "fail", "ignored"]) | st.floats(min_value=0.0, max_value=50.0),
        min_size=1,
        max_size=12,
    ),
    timeout=st.none() | st.floats(min_value=0.5, max_value=60.0),
    attempts=st.integers(min_value=1, max_value=8),
    backoff=st.sampled_from(["full", "equal", "decorrelated", "constant", "none"]),
)
@settings(max_examples=200, deadline=None)
def test_every_call_returns_or_raises_within_its_deadline(script, timeout, attempts, backoff):
    clock = FakeClock()
    limiter = TokenBucket(100, 10.0, clock=clock)
    shield = Shield(
        limiter,
        CircuitBreaker(3, 5.0, clock=clock),
        RetryPolicy(attempts, 0.5, 8.0, backoff=backoff),
        timeout=timeout,
        clock=clock,
        classifier=DefaultClassifier(ignore=KeyError),
    )
    calls = 0

    def provider() -> str:
        nonlocal calls
        step = script[min(calls, len(script) - 1)]
        calls += 1
        if step == "fail":
            raise Boom("503")
        if step == "ignored":
            raise KeyError("400")
        if isinstance(step, float):
            raise RateLimited("429", retry_after=step)
        return "ok"

    try:
        outcome: object = shield.call(provider)
    except (Boom, KeyError, RateLimited, CircuitOpen) as error:
        outcome = error
    assert calls <= attempts
    if timeout is not None:
        assert clock.monotonic() < timeout  # never slept past the deadline
    if outcome == "ok":
        assert script[min(calls, len(script)) - 1] == "ok"
    elif isinstance(outcome, KeyError):
        assert script[min(calls, len(script)) - 1] == "ignored" and calls >= 1
    # Nothing was charged beyond the requests sent, and nothing stays held or in debt.
    assert 100.0 - calls <= limiter.available <= 100.0
    clock.advance(10.0)
    assert limiter.available == 100.0


def test_snapshot_shows_what_each_part_holds(clock):
    shield = make(
        clock,
        bucket=TokenBucket(10, 1, clock=clock, name="gpt-4o"),
        breaker=CircuitBreaker(3, 30, clock=clock),
        bulkhead=Bulkhead(4),
        budget=RetryBudget(clock=clock),
        name="gpt-4o",
    )
    shield.call(Flaky(1))
    shield.limiter.pause(2.0)
    snap = shield.snapshot()
    assert snap["name"] == "gpt-4o"
    assert snap["limiter"] == {
        "name": "gpt-4o",
        "levels": {"1/1s requests burst 10": pytest.approx(8 + clock.slept)},
        "paused_for": 2.0,
    }
    assert snap["breaker"]["state"] is State.CLOSED
    assert snap["breaker"]["consecutive_failures"] == 0
    assert snap["bulkhead"] == {"max_concurrent": 4, "in_flight": 0, "waiting": 0}
    assert snap["budget"]["calls"] == 1 and snap["budget"]["retries"] == 1
    assert Shield().snapshot() == {
        "name": "",
        "limiter": None,
        "breaker": None,
        "bulkhead": None,
        "budget": None,
    }


# -- streams -----------------------------------------------------------------------------------


def tokens(*items: object, fail: BaseException | None = None):
    yield from items
    if fail is not None:
        raise fail


async def atokens(*items: object, fail: BaseException | None = None):
    for item in items:
        yield item
    if fail is not None:
        raise fail


def drain(shield: Shield, asynchronous: bool, *items: object, fail: BaseException | None = None):
    """Run a stream of `items` through the shield to its end; returns what it delivered."""
    if not asynchronous:
        return list(shield.call(tokens, *items, fail=fail))

    async def consume() -> list[object]:
        async def start(*items: object, fail: BaseException | None) -> object:
            return atokens(*items, fail=fail)

        return [item async for item in await shield.acall(start, *items, fail=fail)]

    return run(consume())


def token_shield(clock: FakeClock, **kwargs: object) -> tuple[Shield, Limiter]:
    limiter = Limiter([Limit(100, 60, unit="tokens")], clock=clock)
    shield = make(
        clock,
        bucket=limiter,
        cost=lambda *args, **kwargs: {"tokens": 50},
        usage=lambda last: {"tokens": last},
        **kwargs,
    )
    return shield, limiter


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_stream_settles_its_usage_from_its_last_item_when_it_ends(clock, asynchronous):
    shield, limiter = token_shield(clock)
    assert drain(shield, asynchronous, 1, 2, 7) == [1, 2, 7]
    assert limiter.levels() == {"100/60s tokens": 93.0}  # charged 7, not the estimate of 50


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_stream_failing_after_its_first_item_keeps_the_estimate_and_is_not_retried(
    clock, asynchronous
):
    shield, limiter = token_shield(clock)
    with pytest.raises(Boom) as info:
        drain(shield, asynchronous, 1, 2, fail=Boom("connection reset"))
    assert limiter.levels() == {"100/60s tokens": 50.0}
    assert clock.sleeps == []
    assert "the stream failed after delivering items" in info.value.__notes__[0]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_stream_throttled_mid_way_pauses_the_key_for_every_caller(clock, asynchronous):
    shield, limiter = token_shield(clock)
    with pytest.raises(RateLimited):
        drain(shield, asynchronous, 1, fail=RateLimited("429", retry_after=12.0))
    assert limiter.paused_for == pytest.approx(12.0)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_stream_error_the_classifier_replaces_is_raised_from_the_original(clock, asynchronous):
    class Quota:
        def classify_result(self, result: object) -> Verdict:
            return Verdict(Outcome.SUCCESS)

        def classify_error(self, error: BaseException) -> Verdict:
            return Verdict(Outcome.IGNORED, None, QuotaExhausted("quota gone", cause=error))

    shield = make(clock, classifier=Quota())
    with pytest.raises(QuotaExhausted) as info:
        drain(shield, asynchronous, 1, fail=Boom("insufficient_quota"))
    assert isinstance(info.value.__cause__, Boom)


class EqualButNotTheSame:
    """A classifier building its own verdicts: a success is `Verdict(Outcome.SUCCESS)`, and so
    is an error it forgives."""

    def classify_result(self, result: object) -> Verdict:
        return Verdict(Outcome.SUCCESS)

    def classify_error(self, error: BaseException) -> Verdict:
        return Verdict(Outcome.SUCCESS)


def test_a_success_verdict_of_a_custom_classifier_is_not_retried(clock):
    flaky = Flaky(0)
    assert make(clock, classifier=EqualButNotTheSame()).call(flaky) == "ok"
    assert flaky.calls == 1


def test_an_error_a_custom_classifier_calls_a_success_is_raised_at_once(clock):
    flaky = Flaky(5)
    breaker = CircuitBreaker(1, clock=clock)
    with pytest.raises(Boom):
        make(clock, breaker=breaker, classifier=EqualButNotTheSame()).call(flaky)
    assert flaky.calls == 1
    assert breaker.state is State.CLOSED


def test_a_cost_no_limit_could_grant_gives_back_the_half_open_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    limiter = Limiter([Limit(100, 60, "tokens")], clock=clock)
    shield = Shield(limiter, breaker, clock=clock, cost=lambda n: {"tokens": n})
    breaker.record_failure()  # open, then half-open after the cool-down
    clock.advance(1.0)
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(ValueError, match="exceeds the capacity"):
        shield.call(lambda n: n, 1_000)
    assert shield.call(lambda n: n, 10) == 10  # the probe was given back: this one may go
    assert breaker.state is State.CLOSED


def pausing_clock(limiter_pause: list[Limiter], seconds: float) -> FakeClock:
    """A clock whose first sleep ends with the key paused for `seconds`, as a 429 seen by
    another caller meanwhile would."""
    clock = FakeClock()
    sleep = clock.sleep

    def sleep_then_pause(delay: float) -> None:
        sleep(delay)
        if len(clock.sleeps) == 1:
            limiter_pause[0].pause(seconds)

    clock.sleep = sleep_then_pause  # type: ignore[method-assign]
    return clock


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_pause_that_begins_while_a_call_waits_holds_it_too(driver: str) -> None:
    holder: list[Limiter] = []
    clock = pausing_clock(holder, 5.0)
    holder.append(Limiter([Limit(1, 1)], clock=clock))
    shield = Shield(holder[0], clock=clock)
    shield.call(lambda: None)  # takes the one permit: the next call waits 1 s

    async def answer() -> str:
        return "late"

    if driver == "sync":
        assert shield.call(lambda: "late") == "late"
    else:
        assert asyncio.run(shield.acall(answer)) == "late"
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(5.0)]


def test_a_pause_past_the_deadline_gives_up_at_once_and_frees_the_reservation() -> None:
    holder: list[Limiter] = []
    clock = pausing_clock(holder, 30.0)
    holder.append(Limiter([Limit(1, 1)], clock=clock))
    shield = Shield(holder[0], clock=clock, timeout=10)
    shield.call(lambda: None)
    with pytest.raises(RateLimited, match=r"paused for 30\.000s") as refused:
        shield.call(lambda: "never")
    assert refused.value.retry_after == pytest.approx(30.0)
    assert clock.sleeps == [pytest.approx(1.0)]
    assert holder[0].levels()["1/1s requests"] == pytest.approx(1.0)  # nothing kept


@pytest.mark.parametrize(
    ("outcome", "tokens_left"),
    [(Outcome.THROTTLED, 1000), (Outcome.IGNORED, 1000), (Outcome.FAILURE, 900)],
)
def test_a_refused_attempt_gives_back_its_token_estimate_a_failed_one_keeps_it(
    outcome: Outcome, tokens_left: float
) -> None:
    class Fixed:
        def classify_result(self, result: object) -> Verdict:
            return Verdict(Outcome.SUCCESS)

        def classify_error(self, error: BaseException) -> Verdict:
            return Verdict(outcome)

    clock = FakeClock()
    limiter = Limiter([Limit(60, 60), Limit(1000, 60, "tokens")], clock=clock)
    shield = Shield(
        limiter,
        classifier=Fixed(),
        clock=clock,
        cost=lambda: {"requests": 1, "tokens": 100},
        usage=lambda result: None,
    )
    with pytest.raises(ConnectionError):
        shield.call(lambda: (_ for _ in ()).throw(ConnectionError()))
    assert limiter.levels() == {
        "60/60s requests": pytest.approx(59),
        "1000/60s tokens": pytest.approx(tokens_left),
    }


# -- the seed's bucket and tokens ----------------------------------------------------------------


def test_bucket_of_a_limiter_is_a_view_of_its_shortest_requests_limit(clock):
    limiter = Limiter(
        [Limit(1000, 86400), Limit(4000, 60, "tokens"), Limit(10, 60)], clock=clock
    )
    shield = Shield(limiter, clock=clock)
    bucket = shield.bucket
    assert bucket is shield.bucket
    assert (bucket.capacity, bucket.refill_rate, bucket.available) == (10, pytest.approx(1 / 6), 10)
    shield.call(lambda: None, tokens={"requests": 1, "tokens": 3000})
    assert bucket.available == pytest.approx(9)
    assert not bucket.try_acquire(10)
    assert bucket.wait_time(10) == pytest.approx(6.0)
    assert bucket.try_acquire(9)
    assert limiter.levels()["1000/86400s requests"] == pytest.approx(990)


def test_bucket_without_a_requests_limit_holds_every_request(clock):
    bucket = Shield(Limiter([Limit(100, 60, "tokens")], clock=clock)).bucket
    assert (bucket.capacity, bucket.available) == (math.inf, math.inf)
    assert bucket.try_acquire(1_000_000)
    assert Shield().bucket is None


def test_tokens_replaces_the_cost_function_and_is_not_passed_on(clock):
    limiter = Limiter([Limit(1000, 60, "tokens")], clock=clock)
    shield = make(clock, bucket=limiter, cost=lambda **kwargs: {"tokens": 10})
    assert shield.call(lambda **kwargs: kwargs, prompt="p", tokens={"tokens": 300}) == {
        "prompt": "p"
    }
    assert limiter.available == pytest.approx(700)
    shield.call(lambda **kwargs: kwargs, prompt="p")
    assert limiter.available == pytest.approx(690)


# -- token estimates that no result settles --------------------------------------------------------

PROMPT = [{"role": "user", "content": "Summarize this."}]


def unsettled_shield(clock, name, limits, events, **kwargs):
    """A key of token limits estimating each call's tokens, as a registry's key does."""
    from rate_limit_shield.llm import estimate_cost, usage_of

    limiter = Limiter(limits, clock=clock, name=name)
    return Shield(
        limiter, clock=clock, name=name, cost=estimate_cost, usage=usage_of,
        on_event=events.append, **kwargs,
    )  # fmt: skip


def warnings_of(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("rate_limit_shield") and record.levelname == "WARNING"
    ]


def unsettled_in(events: list[Event]) -> list[Event]:
    return [event for event in events if event.kind == UNSETTLED]


@pytest.mark.parametrize(
    ("rpm", "said"),
    [
        (50, "otpm 8000 at 512 output tokens a call allows 15.6 calls/min, below rpm 50"),
        (10, "otpm 8000 at 512 output tokens a call allows 15.6 calls/min, not below rpm 10"),
    ],
)
def test_estimates_no_result_settles_are_told_once_per_key(clock, caplog, rpm, said):
    events: list[Event] = []
    name = f"claude-unsettled-{rpm}"
    limits = [Limit(rpm, 60), Limit(8000, 60, "output_tokens")]
    shield = unsettled_shield(clock, name, limits, events)
    for _ in range(3):
        assert shield.call(lambda **kwargs: "a summary", messages=PROMPT) == "a summary"
    assert unsettled_in(events) == [Event(UNSETTLED, name, 1, None, Outcome.SUCCESS, reason=said)]
    [message] = warnings_of(caplog)
    assert name in message and said in message
    for fix in ("usage", "max_tokens=", "cost="):
        assert fix in message
    # Told once per key: another pipeline of the same key says nothing more.
    unsettled_shield(clock, name, limits, events).call(lambda **kwargs: "", messages=PROMPT)
    assert len(unsettled_in(events)) == 1 and len(warnings_of(caplog)) == 1


def test_a_key_of_a_registry_tells_of_the_quickstarts_claude_policy(caplog):
    from rate_limit_shield.registry import Registry

    events: list[Event] = []
    registry = Registry()
    registry.configure(
        {"claude-*": {"rpm": 50, "otpm": 8000}}, clock=FakeClock(), on_event=events.append
    )
    shield = registry.key("claude-unsettled-registry").shield
    for _ in range(2):  # the first reserves no answer, as the provider admits it; not the next
        shield.call(lambda **kwargs: "text", messages=PROMPT, model="claude-unsettled-registry")
    assert len(unsettled_in(events)) == 1
    [message] = warnings_of(caplog)
    assert "[claude-unsettled-registry]" in message
    assert "otpm 8000 at 512 output tokens a call allows 15.6 calls/min, below rpm 50" in message


def test_a_stream_with_no_usage_is_told_of_too(clock, caplog):
    events: list[Event] = []
    name = "claude-unsettled-stream"
    shield = unsettled_shield(clock, name, [Limit(8000, 60, "output_tokens")], events)

    def stream(**kwargs: object):
        yield from ("a", "summary")

    assert list(shield.call(stream, messages=PROMPT)) == ["a", "summary"]
    assert len(unsettled_in(events)) == 1
    [message] = warnings_of(caplog)
    assert "otpm 8000 at 512 output tokens a call allows 15.6 calls/min." in message


def test_results_with_usage_or_calls_of_no_tokens_are_not_told_of(clock, caplog):
    events: list[Event] = []
    name = "claude-settled"
    limits = [Limit(50, 60), Limit(8000, 60, "output_tokens")]
    shield = unsettled_shield(clock, name, limits, events)
    answer = {"usage": {"input_tokens": 10, "output_tokens": 20}}
    assert shield.call(lambda **kwargs: answer, messages=PROMPT) is answer
    assert shield.call(lambda text: text, "no prompt argument: no tokens estimated") != ""
    assert unsettled_in(events) == [] and warnings_of(caplog) == []
    # Neither spent the key's one warning.
    shield.call(lambda **kwargs: "text", messages=PROMPT)
    assert len(unsettled_in(events)) == 1


def test_keys_without_token_limits_are_never_told_of(caplog):
    from rate_limit_shield.registry import Registry

    events: list[Event] = []
    registry = Registry()
    registry.configure({"gpt-*": {"rpm": 50}}, clock=FakeClock(), on_event=events.append)
    registry.key("gpt-unsettled").shield.call(lambda **kwargs: "text", messages=PROMPT)
    assert unsettled_in(events) == [] and warnings_of(caplog) == []


# -- a sync call that would block a running event loop ---------------------------------------------


def blocked_in_a_loop(call) -> list[warnings.WarningMessage]:
    """Run `call()` inside a running event loop; returns the warnings it gave."""

    async def main() -> None:
        call()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main())
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


def summarize_in_a_loop() -> str:
    return "summary"


def test_a_sync_call_waiting_for_a_permit_in_a_running_loop_warns_once(clock):
    shield = Shield(TokenBucket(1, 1, clock=clock), clock=clock)
    assert blocked_in_a_loop(lambda: shield.call(summarize_in_a_loop)) == []  # no wait
    [warning] = blocked_in_a_loop(lambda: shield.call(summarize_in_a_loop))
    message = str(warning.message)
    assert "summarize_in_a_loop" in message and "a rate permit" in message
    assert "async def" in message and "acall" in message
    assert warning.filename == __file__  # the line that made the call
    assert blocked_in_a_loop(lambda: shield.call(summarize_in_a_loop)) == []  # once
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(1.0)]


def test_a_sync_retry_delay_in_a_running_loop_warns(clock):
    flaky = Flaky(1)
    [warning] = blocked_in_a_loop(lambda: make(clock).call(flaky))
    assert "Flaky" in str(warning.message) and "retry" in str(warning.message)
    assert clock.sleeps == [1.0]


def test_a_decorated_sync_function_warns_at_its_callers_line(clock):
    import rate_limit_shield as rls
    from rate_limit_shield.registry import Registry

    registry = Registry()
    registry.configure({"loop-model": {"rpm": 1, "retry": None}}, clock=clock)

    @rls.shielded(model="loop-model", registry=registry)
    def decorated() -> str:
        return "ok"

    decorated()
    [warning] = blocked_in_a_loop(lambda: decorated())
    assert warning.filename == __file__
    assert "decorated" in str(warning.message)


def test_sync_waits_outside_an_event_loop_do_not_warn(clock):
    shield = make(clock, bucket=TokenBucket(1, 1, clock=clock))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shield.call(Flaky(1))
        shield.call(Flaky(0))
    assert clock.sleeps == [1.0, pytest.approx(1.0)]
