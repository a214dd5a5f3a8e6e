"""The pipeline under the faults real callers cause: cancellation after the request went out,
a frozen clock, a deadline spent in our own queues, a result whose usage cannot be read, and a
refusal on a retry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import freezegun
import pytest

from rate_limit_shield.breaker import CircuitBreaker, State
from rate_limit_shield.bulkhead import Bulkhead
from rate_limit_shield.errors import BulkheadFull, RateLimited
from rate_limit_shield.events import GAVE_UP, REJECTED, Event
from rate_limit_shield.limiter import Limit, Limiter
from rate_limit_shield.retry import RetryPolicy
from rate_limit_shield.shield import Shield
from rate_limit_shield.testing import FakeClock


class Boom(Exception):
    pass


# -- a permit is given back only when the function never started -----------------------------


def test_callers_cancelled_after_their_request_went_out_keep_their_permits() -> None:
    """200 callers give up on a slow service at once: the provider sees the 60 that rpm=60
    allows, not 200, and the limiter shows those 60 spent."""
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    shield = Shield(limiter, clock=clock, max_wait=0.0)
    sent = 0

    async def slow_service() -> str:
        nonlocal sent
        sent += 1
        await asyncio.Event().wait()  # answers after the caller gave up
        return "late"

    async def impatient_caller() -> None:
        task = asyncio.ensure_future(shield.acall(slow_service))
        await asyncio.sleep(0)  # the request goes out (or the call is refused)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, RateLimited)):
            await task

    async def scenario() -> None:
        for _ in range(200):
            await impatient_caller()

    asyncio.run(scenario())
    assert sent == 60
    assert limiter.levels()["60/60s requests"] == pytest.approx(0.0)


def test_a_call_interrupted_in_flight_keeps_its_token_estimate_and_frees_the_rest() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60), Limit(1000, 60, "tokens")], clock=clock)
    breaker = CircuitBreaker(1, 10, half_open_max_calls=1, clock=clock)
    breaker.record_failure()
    clock.advance(10)
    bulkhead = Bulkhead(1)
    shield = Shield(
        limiter,
        breaker,
        bulkhead=bulkhead,
        clock=clock,
        cost=lambda: {"requests": 1, "tokens": 100},
        usage=lambda result: {"tokens": 1},
    )

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        shield.call(interrupted)
    assert limiter.levels() == {
        "60/60s requests": pytest.approx(59),
        "1000/60s tokens": pytest.approx(900),
    }
    assert bulkhead.in_flight == 0
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow()  # the probe was no verdict on the provider: its slot came back


# -- a clock that does not move ----------------------------------------------------------------


class Throttled(Exception):
    status_code = 429

    def __init__(self) -> None:
        super().__init__("slow down")
        self.response = type("Response", (), {"headers": {"retry-after": "2"}})()


def frozen_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """`time.sleep` and `asyncio.sleep` that return at once without moving the frozen clock,
    and refuse to be called forever."""
    slept: list[float] = []
    real_asyncio_sleep = asyncio.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 20:
            raise AssertionError(f"still sleeping after {slept}")

    async def asleep(seconds: float, result: Any = None) -> Any:
        sleep(seconds)
        return await real_asyncio_sleep(0, result)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(asyncio, "sleep", asleep)
    return slept


def throttled_once() -> Callable[[], str]:
    """A service that answers 429 (retry after 2 s) once, then "ok"."""
    answers: Iterator[Exception | str] = iter([Throttled(), "ok"])

    def service() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return service


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_throttled_call_goes_on_under_a_frozen_clock(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rate_limit_shield.llm import LLMClassifier

    with freezegun.freeze_time("2026-01-01", tick=False, real_asyncio=True):
        slept = frozen_sleeps(monkeypatch)
        service = throttled_once()

        async def aservice() -> str:
            return service()

        shield = Shield(
            Limiter([]), retry=RetryPolicy(3, 0.1, 10.0, 2.0), classifier=LLMClassifier()
        )
        if driver == "sync":
            assert shield.call(service) == "ok"
        else:
            assert asyncio.run(shield.acall(aservice)) == "ok"
    assert 2.0 <= sum(slept) <= 4.0 + 1e-9


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_shielded_function_throttled_with_a_429_goes_on_under_a_frozen_clock(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rate_limit_shield as rls

    with freezegun.freeze_time("2026-01-01", tick=False, real_asyncio=True):
        slept = frozen_sleeps(monkeypatch)
        registry = rls.Registry()
        registry.configure({"default": {"rpm": 60, "retry": {"attempts": 3}}})
        answer = throttled_once()

        @rls.shielded(model="gpt-4o", registry=registry)
        def complete() -> str:
            return answer()

        @rls.shielded(model="gpt-4o", registry=registry)
        async def acomplete() -> str:
            return answer()

        assert (complete() if driver == "sync" else asyncio.run(acomplete())) == "ok"
    assert 2.0 <= sum(slept) <= 4.0 + 1e-9


def test_a_rate_wait_goes_on_under_a_frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    with freezegun.freeze_time("2026-01-01", tick=False):
        slept = frozen_sleeps(monkeypatch)
        limiter = Limiter([Limit(1, 1)])
        shield = Shield(limiter)
        limiter.pause(3.0)
        assert shield.call(lambda: "ok") == "ok"
    assert slept == [pytest.approx(3.0)]


# -- a deadline spent in our own queues is no evidence against the provider ------------------


def test_calls_cut_off_by_their_own_deadline_do_not_open_the_breaker() -> None:
    """Bulkhead(2), timeout=1, 12 calls to a service answering in 0.3 s: the last ones get a
    slot at 0.9 s and are cut off by the deadline; the service is healthy throughout."""
    breaker = CircuitBreaker(2, 30)
    shield = Shield(breaker=breaker, bulkhead=Bulkhead(2, max_wait=5.0), timeout=0.25)
    events: list[Event] = []
    shield.on_event = events.append

    async def service() -> str:
        await asyncio.sleep(0.075)
        return "ok"

    async def scenario() -> list[object]:
        calls = [shield.acall(service) for _ in range(12)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    # asyncio's own TimeoutError (the built-in one from Python 3.11 on), as wait_for raises it
    cut = [result for result in results if isinstance(result, asyncio.TimeoutError)]
    assert results.count("ok") >= 4
    assert len(cut) >= 2
    assert all(isinstance(r, (asyncio.TimeoutError, BulkheadFull)) or r == "ok" for r in results)
    assert breaker.state is State.CLOSED
    assert "deadline" in " ".join(getattr(cut[0], "__notes__", []))
    assert any(event.kind == GAVE_UP and event.error is cut[0] for event in events)


def test_a_timeout_the_service_raises_itself_still_counts_against_it() -> None:
    breaker = CircuitBreaker(2, 30)
    shield = Shield(breaker=breaker, timeout=30.0)

    async def service() -> str:
        raise TimeoutError("the provider timed out")

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await shield.acall(service)

    asyncio.run(scenario())
    assert breaker.state is State.OPEN


# -- reading usage or headers never turns a success into an error ----------------------------


class Unreadable:
    @property
    def usage(self) -> Any:
        raise RuntimeError("usage is not there")

    @property
    def headers(self) -> Any:
        raise RuntimeError("headers are not there")


class HeadersReader:
    """A guide that reads the result's headers, as the LLM guide does."""

    def __init__(self) -> None:
        self.skip: set[type] = set()

    def __call__(self, outcome: object, subject: Any) -> None:
        subject.headers  # noqa: B018 - reading is the point


def test_a_result_whose_usage_raises_is_returned_and_keeps_the_estimate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(1000, 60, "tokens")], clock=clock)
    shield = Shield(
        limiter,
        clock=clock,
        cost=lambda: {"tokens": 100},
        usage=lambda result: result.usage,
        guide=HeadersReader(),  # type: ignore[arg-type]
        name="gpt-x",
    )
    result = Unreadable()
    with caplog.at_level(logging.WARNING, logger="rate_limit_shield"):
        assert shield.call(lambda: result) is result
        assert shield.call(lambda: result) is result
    assert limiter.levels()["1000/60s tokens"] == pytest.approx(800)
    warnings = [record for record in caplog.records if "gpt-x" in record.getMessage()]
    # Once each for the usage, the headers and the estimate left unsettled: not once per call.
    assert len(warnings) == 3
    assert any("could not read the usage" in record.getMessage() for record in warnings)
    assert any("never settled" in record.getMessage() for record in warnings)


def test_a_stream_whose_usage_raises_is_delivered_whole() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(1000, 60, "tokens")], clock=clock)

    def usage(item: object) -> Any:
        raise RuntimeError("no usage here")

    shield = Shield(limiter, clock=clock, cost=lambda: {"tokens": 100}, usage=usage)
    assert list(shield.call(lambda: iter([1, 2, 3]))) == [1, 2, 3]
    assert limiter.levels()["1000/60s tokens"] == pytest.approx(900)


# -- every refusal emits its event and chains the last error ---------------------------------


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_full_bulkhead_on_a_retry_is_told_and_chains_the_earlier_error(driver: str) -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_wait=0.0)
    events: list[Event] = []
    original = clock.sleep

    def sleep_while_another_takes_the_slot(seconds: float) -> None:
        original(seconds)
        assert bulkhead.try_acquire()

    clock.sleep = sleep_while_another_takes_the_slot  # type: ignore[method-assign]
    shield = Shield(
        retry=RetryPolicy(3, 1.0, 1.0, 1.0, jitter=False),
        bulkhead=bulkhead,
        clock=clock,
        on_event=events.append,
        timeout=60.0,
    )
    first = Boom("provider down")

    def service() -> str:
        raise first

    async def aservice() -> str:
        raise first

    with pytest.raises(BulkheadFull) as refused:
        if driver == "sync":
            shield.call(service)
        else:
            asyncio.run(shield.acall(aservice))
    assert refused.value.__cause__ is first
    assert refused.value.cause is first
    assert [event.kind for event in events][-1] == REJECTED
    assert events[-1].error is refused.value
