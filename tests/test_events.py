"""Every decision is an event with the model key, the attempt and the timing: each success and
its duration, each wait for a permit and the limit that bound it, retries and give-ups and why,
each refusal, each throttle and where its hint came from, each breaker transition and why, a
shared backend's outage and recovery; and nobody listening costs no Event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

import rate_limit_shield.shield as shield_module
from rate_limit_shield import (
    Bulkhead,
    CircuitBreaker,
    DefaultClassifier,
    Limit,
    Limiter,
    LLMClassifier,
    Outcome,
    Registry,
    RetryBudget,
    RetryPolicy,
    Shield,
)
from rate_limit_shield.errors import BulkheadFull, CircuitOpen, CostTooLarge, RateLimited
from rate_limit_shield.events import (
    BACKEND_DOWN,
    BACKEND_UP,
    BREAKER,
    GAVE_UP,
    REJECTED,
    RETRY,
    SUCCEEDED,
    THROTTLED,
    WAITED,
    Event,
    Listeners,
)
from rate_limit_shield.testing import FakeClock

Run = Callable[[Shield, Callable[[], Any]], Any]


def call_sync(shield: Shield, fn: Callable[[], Any]) -> Any:
    return shield.call(fn)


def call_async(shield: Shield, fn: Callable[[], Any]) -> Any:
    async def afn() -> Any:
        return fn()

    return asyncio.run(shield.acall(afn))


@pytest.fixture(params=[call_sync, call_async], ids=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a call through the sync or the async driver."""
    runner: Run = request.param
    return runner


class Provider:
    """Takes `seconds` of the clock per call; raises the scripted errors in turn, then answers."""

    def __init__(self, clock: FakeClock, seconds: float = 0.0, *errors: Exception) -> None:
        self.clock = clock
        self.seconds = seconds
        self.errors = list(errors)

    def __call__(self) -> str:
        self.clock.advance(self.seconds)
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


def of(events: list[Event], kind: str) -> list[Event]:
    return [event for event in events if event.kind == kind]


def retry(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts, 1.0, 30.0, 2.0, jitter=False)


# -- successes ------------------------------------------------------------------------------


def test_every_success_is_an_event_with_its_attempt_and_duration(run: Run) -> None:
    clock = FakeClock()
    events: list[Event] = []
    shield = Shield(clock=clock, name="gpt-4o", on_event=events.append)
    assert run(shield, Provider(clock, 0.25)) == "answer"
    assert events == [Event(SUCCEEDED, "gpt-4o", 1, outcome=Outcome.SUCCESS, duration=0.25)]


def test_a_success_after_retries_lasts_from_the_first_attempt(run: Run) -> None:
    clock = FakeClock()
    events: list[Event] = []
    shield = Shield(retry=retry(3), clock=clock, name="gpt-4o", on_event=events.append)
    provider = Provider(clock, 0.5, ConnectionError("reset"), ConnectionError("reset"))
    assert run(shield, provider) == "answer"
    [succeeded] = of(events, SUCCEEDED)
    assert succeeded.attempt == 3
    assert succeeded.duration == pytest.approx(3 * 0.5 + 1.0 + 2.0)  # attempts and delays


def test_a_registry_listener_hears_each_success_of_each_key() -> None:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"default": {"rpm": 60}}, clock=clock)
    heard: list[Event] = []
    registry.add_listener(heard.append)
    for model in ("gpt-4o", "claude-3", "gpt-4o"):
        registry.key(model).shield.call(Provider(clock, 0.1))
    assert [(event.kind, event.key, event.attempt) for event in heard] == [
        (SUCCEEDED, "gpt-4o", 1), (SUCCEEDED, "claude-3", 1), (SUCCEEDED, "gpt-4o", 1),
    ]  # fmt: skip
    assert all(event.duration == pytest.approx(0.1) for event in heard)


# -- waits for a permit ---------------------------------------------------------------------


def test_a_wait_for_a_permit_says_how_long_and_which_limit_bound_it(run: Run) -> None:
    clock = FakeClock()
    events: list[Event] = []
    limiter = Limiter([Limit(10, 1.0), Limit(1, 5.0)], clock=clock, name="gpt-4o")
    shield = Shield(limiter, clock=clock, name="gpt-4o", on_event=events.append)
    run(shield, Provider(clock))
    run(shield, Provider(clock))
    [waited] = of(events, WAITED)
    assert (waited.key, waited.attempt, waited.limit) == ("gpt-4o", 1, "1/5s requests")
    assert waited.delay == pytest.approx(5.0)


def test_a_wait_held_by_a_pause_names_no_limit(run: Run) -> None:
    clock = FakeClock()
    events: list[Event] = []
    limiter = Limiter([Limit(10, 1.0)], clock=clock)
    limiter.pause(3.0)
    shield = Shield(limiter, clock=clock, name="gpt-4o", on_event=events.append)
    run(shield, Provider(clock))
    [waited] = of(events, WAITED)
    assert (waited.delay, waited.limit) == (pytest.approx(3.0), None)


def test_thirty_calls_that_wait_tell_each_wait() -> None:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"gpt-4o": {"rpm": 30, "max_wait": 120}}, clock=clock)
    heard: list[Event] = []
    registry.add_listener(heard.append)
    shield = registry.key("gpt-4o").shield
    for _ in range(60):
        shield.call(Provider(clock))
    waits = of(heard, WAITED)
    assert len(waits) == 30 and all(wait.limit == "30/60s requests" for wait in waits)
    assert sum(wait.delay or 0.0 for wait in waits) == pytest.approx(60.0)


# -- retries, give-ups, refusals ------------------------------------------------------------


def test_a_retry_tells_its_delay_and_reason(run: Run) -> None:
    clock = FakeClock()
    events: list[Event] = []
    shield = Shield(retry=retry(3), clock=clock, name="gpt-4o", on_event=events.append)
    run(shield, Provider(clock, 0.0, ConnectionError("reset")))
    [retried] = of(events, RETRY)
    assert (retried.key, retried.attempt, retried.delay) == ("gpt-4o", 1, 1.0)
    assert (retried.outcome, retried.reason) == (Outcome.FAILURE, "ConnectionError")
    assert isinstance(retried.error, ConnectionError)


def test_giving_up_tells_why_and_how_long(run: Run) -> None:
    clock = FakeClock()
    events: list[Event] = []
    shield = Shield(retry=retry(2), clock=clock, name="gpt-4o", on_event=events.append)
    with pytest.raises(ConnectionError):
        run(shield, Provider(clock, 0.5, ConnectionError("a"), ConnectionError("b")))
    [gave_up] = of(events, GAVE_UP)
    assert (gave_up.attempt, gave_up.outcome, gave_up.reason) == (
        2, Outcome.FAILURE, "attempts used up",
    )  # fmt: skip
    assert gave_up.duration == pytest.approx(0.5 + 1.0 + 0.5)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"budget": "empty"}, "retry budget exhausted"),
        ({"classifier": DefaultClassifier(retry_on=ConnectionError)}, "not retryable"),
        ({"timeout": 1.5}, "deadline reached"),
    ],
)
def test_each_way_of_giving_up_says_which(options: dict[str, Any], reason: str) -> None:
    clock = FakeClock()
    events: list[Event] = []
    if options.get("budget") == "empty":
        options = {"budget": RetryBudget(0.0, 0.0, clock=clock)}
    shield = Shield(retry=retry(3), clock=clock, on_event=events.append, **options)
    error = ValueError("bad request") if "classifier" in options else ConnectionError("reset")
    with pytest.raises(type(error)):
        shield.call(Provider(clock, 1.0, error, error, error))
    assert [event.reason for event in of(events, GAVE_UP)] == [reason]


def refusals(clock: FakeClock) -> dict[str, tuple[Shield, type[Exception]]]:
    """A shield per refusal kind, each about to refuse its next call."""
    drained = Limiter([Limit(1, 60)], clock=clock)
    assert drained.try_acquire()
    forced = CircuitBreaker(clock=clock)
    forced.force_open()
    full = Bulkhead(1, max_wait=0.0)
    assert full.try_acquire()
    small = Limiter([Limit(10, 60, "tokens")], clock=clock)
    return {
        "rate": (Shield(drained, clock=clock, max_wait=0.0), RateLimited),
        "circuit": (Shield(breaker=forced, clock=clock), CircuitOpen),
        "bulkhead": (Shield(bulkhead=full, clock=clock, timeout=5.0), BulkheadFull),
        "cost": (Shield(small, clock=clock, cost=lambda: {"tokens": 50}), CostTooLarge),
    }


@pytest.mark.parametrize("kind", ["rate", "circuit", "bulkhead", "cost"])
def test_every_refusal_is_rejected_with_its_kind(kind: str) -> None:
    clock = FakeClock()
    shield, refusal = refusals(clock)[kind]
    events: list[Event] = []
    shield.on_event = events.append
    shield.name = "gpt-4o"
    with pytest.raises(refusal):
        shield.call(Provider(clock))
    [rejected] = events
    assert (rejected.kind, rejected.key, rejected.attempt) == (REJECTED, "gpt-4o", 1)
    assert isinstance(rejected.error, refusal)


# -- throttles ------------------------------------------------------------------------------

REQUEST = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")


def throttle(message: str = "Rate limit reached", **headers: str) -> openai.RateLimitError:
    response = httpx2.Response(
        429, headers={name.replace("_", "-"): value for name, value in headers.items()},
        request=REQUEST,
    )  # fmt: skip
    body = {"message": message, "type": "requests", "code": "rate_limit_exceeded"}
    return openai.RateLimitError(message, response=response, body=body)


@pytest.mark.parametrize(
    ("error", "pause", "source"),
    [
        (throttle(retry_after="2"), 2.0, "retry-after"),
        (
            throttle(x_ratelimit_remaining_requests="0", x_ratelimit_reset_requests="6s"),
            6.0,
            "reset header",
        ),
        (throttle("Rate limit reached. Please try again in 20s."), 20.0, "server message"),
        (throttle(), None, "backoff"),
    ],
    ids=["retry-after", "reset-header", "message", "none"],
)
def test_a_throttle_tells_the_pause_and_where_its_hint_came_from(
    run: Run, error: Exception, pause: float | None, source: str
) -> None:
    clock = FakeClock()
    events: list[Event] = []
    limiter = Limiter([Limit(100, 60)], clock=clock)
    shield = Shield(
        limiter, retry=retry(2), classifier=LLMClassifier(clock=clock), clock=clock,
        name="gpt-4o", on_event=events.append,
    )  # fmt: skip
    run(shield, Provider(clock, 0.0, error))
    [throttled] = of(events, THROTTLED)
    assert (throttled.key, throttled.attempt, throttled.outcome) == (
        "gpt-4o", 1, Outcome.THROTTLED,
    )  # fmt: skip
    assert (throttled.delay, throttled.reason) == (pause, source)


# -- breaker transitions --------------------------------------------------------------------


def test_breaker_transitions_reach_the_registrys_listeners_with_why() -> None:
    clock = FakeClock()
    registry = Registry()
    policy = {"breaker": {"failure_threshold": 2, "recovery_timeout": 10}, "retry": None}
    registry.configure({"gpt-4o": policy}, clock=clock)
    heard: list[Event] = []
    registry.add_listener(heard.append)
    shield = registry.key("gpt-4o").shield
    for _ in range(2):
        with pytest.raises(ConnectionError):
            shield.call(Provider(clock, 0.0, ConnectionError("reset")))
    clock.advance(10)
    shield.call(Provider(clock))  # the probe succeeds
    for _ in range(2):
        with pytest.raises(ConnectionError):
            shield.call(Provider(clock, 0.0, ConnectionError("reset")))
    clock.advance(10)
    with pytest.raises(ConnectionError):
        shield.call(Provider(clock, 0.0, ConnectionError("reset")))  # the probe fails
    transitions = [(e.key, e.transition, e.reason, e.delay) for e in of(heard, BREAKER)]
    assert transitions == [
        ("gpt-4o", ("closed", "open"), "2 consecutive failures (threshold 2)", 10.0),
        ("gpt-4o", ("open", "half_open"), "the open time of 10s is over", None),
        ("gpt-4o", ("half_open", "closed"), "1 probe(s) succeeded", None),
        ("gpt-4o", ("closed", "open"), "2 consecutive failures (threshold 2)", 10.0),
        ("gpt-4o", ("open", "half_open"), "the open time of 10s is over", None),
        ("gpt-4o", ("half_open", "open"), "a probe failed", 10.0),
    ]
    assert all(event.attempt == 0 for event in of(heard, BREAKER))


def breaker_events(breaker: CircuitBreaker) -> list[Event]:
    events: list[Event] = []
    breaker.on_event = events.append
    return events


def test_a_failure_rate_opening_says_the_rate_and_the_window() -> None:
    breaker = CircuitBreaker(None, failure_rate=0.5, window=4, min_calls=4, clock=FakeClock())
    events = breaker_events(breaker)
    for outcome in (Outcome.SUCCESS, Outcome.FAILURE, Outcome.SUCCESS, Outcome.FAILURE):
        breaker.record(breaker.acquire(), outcome)
    assert [event.reason for event in events] == [
        "failure rate 50% over the last 4 calls (threshold 50%)"
    ]


def test_a_slow_call_opening_and_a_slow_probe_say_so() -> None:
    breaker = CircuitBreaker(
        None, 5.0, slow_call_duration=2.0, window_seconds=60, min_calls=2, clock=FakeClock()
    )
    events = breaker_events(breaker)
    for _ in range(2):
        breaker.record(breaker.acquire(), Outcome.SUCCESS, 3.0)
    breaker._clock.advance(5.0)  # type: ignore[attr-defined]
    breaker.record(breaker.acquire(), Outcome.SUCCESS, 3.0)
    assert [event.reason for event in events] == [
        "slow-call rate 100% over 2 calls of the last 60s (threshold 100%)",
        "the open time of 5s is over",
        "a probe was slow",
    ]


def test_manual_changes_say_so() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), name="gpt-4o")
    events = breaker_events(breaker)
    breaker.force_open()
    breaker.reset()
    breaker.force_open()
    breaker.disable()
    assert [(event.transition, event.reason, event.delay) for event in events] == [
        (("closed", "open"), "forced open", None),
        (("open", "closed"), "reset", None),
        (("closed", "open"), "forced open", None),
        (("open", "closed"), "disabled", None),
    ]


def test_a_key_made_anew_by_configure_still_reports_to_the_listeners() -> None:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"gpt-4o": {"breaker": {}}}, clock=clock)
    heard: list[Event] = []
    registry.add_listener(heard.append)
    registry.configure({"gpt-4o": {"breaker": {"failure_threshold": 3}}})
    breaker = registry.key("gpt-4o").breaker
    assert breaker is not None
    breaker.force_open()
    assert [(event.kind, event.key) for event in heard] == [(BREAKER, "gpt-4o")]


# -- a shared backend's outage --------------------------------------------------------------


def test_a_redis_outage_and_its_end_are_events_of_the_key(own_redis_server: Any) -> None:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"gpt-4o": {"rpm": 600}}, clock=clock, backend=own_redis_server.url)
    heard: list[Event] = []
    registry.add_listener(heard.append)
    shield = registry.key("gpt-4o").shield
    shield.call(Provider(clock))
    own_redis_server.kill()
    shield.call(Provider(clock))
    shield.call(Provider(clock))  # the same outage: told once
    [down] = of(heard, BACKEND_DOWN)
    assert (down.key, down.attempt) == ("gpt-4o", 0)
    assert down.reason == "limiting in memory at this process's share"
    assert type(down.error).__name__ == "ConnectionError"
    own_redis_server.start()
    clock.advance(2.0)  # the limiter tries Redis again
    shield.call(Provider(clock))
    [up] = of(heard, BACKEND_UP)
    assert (up.key, up.reason) == ("gpt-4o", "the rate limits of 'gpt-4o'")
    assert up.delay == pytest.approx(2.0)


# -- nobody listening -----------------------------------------------------------------------


class CountingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return super().monotonic()


def no_event(*args: object, **kwargs: object) -> Event:
    raise AssertionError("an Event was built with nobody listening")


def test_with_nobody_listening_a_success_builds_no_event_and_reads_no_clock(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="rate_limit_shield")
    clock = CountingClock()
    shield = Shield(retry=retry(3), clock=clock, on_event=Listeners())
    with monkeypatch.context() as patched:
        patched.setattr(shield_module, "Event", no_event)
        assert shield.call(lambda: "answer") == "answer"
    assert clock.reads == 0
    heard: list[Event] = []
    assert isinstance(shield.on_event, Listeners)
    shield.on_event.add(heard.append)  # someone listens: the call is timed, its success told
    shield.call(lambda: "answer")
    assert clock.reads == 2 and [event.kind for event in heard] == [SUCCEEDED]
    shield.on_event.remove(heard.append)
    with monkeypatch.context() as patched:
        patched.setattr(shield_module, "Event", no_event)
        shield.call(lambda: "answer")


def test_a_key_of_a_registry_with_no_listener_builds_no_event_on_success(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="rate_limit_shield")
    registry = Registry()
    registry.configure({"gpt-4o": {"rpm": 600, "breaker": {}}}, clock=FakeClock())
    monkeypatch.setattr(shield_module, "Event", no_event)
    assert registry.key("gpt-4o").shield.call(lambda: "answer") == "answer"
