"""Clock, FakeClock, errors and the default classifier."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest

from rate_limit_shield import SYSTEM_CLOCK, Clock
from rate_limit_shield.errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    QuotaExhausted,
    RateLimited,
    ShieldError,
)
from rate_limit_shield.outcome import SUCCESS, DefaultClassifier, Outcome
from rate_limit_shield.testing import FakeClock


def test_system_clock_looks_time_up_at_each_call(monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 123.0)
    monkeypatch.setattr(time, "time", lambda: 456.0)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    assert SYSTEM_CLOCK.monotonic() == 123.0
    assert SYSTEM_CLOCK.time() == 456.0
    SYSTEM_CLOCK.sleep(2.5)
    assert slept == [2.5]
    assert isinstance(SYSTEM_CLOCK, Clock)


def test_fake_clock_sleeps_advance_time_and_are_recorded():
    clock = FakeClock(start=10.0, wall=1000.0)
    assert isinstance(clock, Clock)
    clock.sleep(1.5)
    clock.sleep(0.0)
    clock.advance(2.0)
    assert clock.monotonic() == 13.5
    assert clock.time() == 1003.5
    assert clock.sleeps == [1.5, 0.0]
    assert clock.slept == 1.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_fake_clock_async_sleep_yields_to_the_loop_once():
    clock = FakeClock()
    order: list[str] = []

    async def sleeper() -> None:
        await clock.asleep(60)
        order.append("sleeper")

    async def other() -> None:
        order.append("other")

    async def main() -> None:
        await asyncio.gather(sleeper(), other())

    asyncio.run(main())
    assert order == ["other", "sleeper"]
    assert clock.monotonic() == 60


@pytest.mark.parametrize("cls", [RateLimited, CircuitOpen, BulkheadFull, QuotaExhausted])
def test_errors_carry_retry_after_key_and_cause_and_read_well(cls):
    cause = OSError("503")
    error = cls("the provider is overloaded", retry_after=2.5, key="gpt-4o", cause=cause)
    assert isinstance(error, ShieldError)
    assert error.retry_after == 2.5
    assert error.__cause__ is cause
    assert str(error) == "[gpt-4o] the provider is overloaded (retry after 2.500s)"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and copy.retry_after == 2.5 and copy.key == "gpt-4o"


def test_config_error_is_a_value_error():
    error = ConfigError("policies['gpt-4o'].rpm: -1 is not > 0")
    assert isinstance(error, ValueError) and isinstance(error, ShieldError)
    assert error.retry_after is None
    assert "rpm: -1" in str(error)


def test_outcome_fatal_is_ignored():
    assert Outcome.FATAL is Outcome.IGNORED


def test_default_classifier():
    classifier = DefaultClassifier()
    assert classifier.classify_result(None) is SUCCESS
    assert classifier.classify_error(OSError()).outcome is Outcome.FAILURE
    throttled = classifier.classify_error(RateLimited("429", retry_after=3.0))
    assert throttled == (Outcome.THROTTLED, 3.0, None)
    assert classifier.classify_error(QuotaExhausted("gone")).outcome is Outcome.IGNORED


def test_default_classifier_narrowed():
    classifier = DefaultClassifier(
        retry_on=(ConnectionError, TimeoutError),
        ignore=ConnectionRefusedError,
        retry_if_result=lambda result: not result,
    )
    assert classifier.classify_error(ConnectionResetError()).outcome is Outcome.FAILURE
    assert classifier.classify_error(ConnectionRefusedError()).outcome is Outcome.IGNORED
    assert classifier.classify_error(KeyError()).outcome is Outcome.IGNORED
    assert classifier.classify_result("").outcome is Outcome.FAILURE
    assert classifier.classify_result("text") is SUCCESS
