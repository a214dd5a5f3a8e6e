"""Tests of `app.py` as a user writes them for code that goes through the shield: the real
OpenAI SDK against a local fake provider, and the shield's waits on a `FakeClock`, so that
backoff, a 429's Retry-After and a breaker's open time take no time at all.

Run them with:  python -m pytest examples/test_suite

The `shield_clock` fixture comes with the package (its pytest plugin): each test that asks for
it runs in `testing.isolated()`, with fresh limiters, breakers and retry budgets under the
policies `app` configured, on the `FakeClock` it gives the test.
"""

from collections.abc import Iterator

import app
import openai
import pytest

import rate_limit_shield as rls
from rate_limit_shield.testing import FakeClock, FakeProvider, isolated

ANSWER = " ".join(["ok"] * 16)  # what the fake provider says, whatever it is asked


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """A local stand-in for OpenAI's API, which each test scripts."""
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def client(provider: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=provider.url + "/v1", api_key="test", max_retries=0) as sdk:
        yield sdk


def test_summarizes(shield_clock: FakeClock, client: openai.OpenAI) -> None:
    assert app.summarize(client, "A long text about token buckets.") == ANSWER
    assert shield_clock.sleeps == []


def test_retries_a_503_after_a_backoff_that_takes_no_time(
    shield_clock: FakeClock, provider: FakeProvider, client: openai.OpenAI
) -> None:
    provider.fail(503, times=2)
    assert app.summarize(client, "text") == ANSWER
    assert provider.statuses == {503: 2, 200: 1}
    assert len(shield_clock.sleeps) == 2  # full jitter: up to 1 s, then up to 2 s
    assert 0 < shield_clock.slept <= 3


def test_waits_as_long_as_a_429_asks(
    shield_clock: FakeClock, provider: FakeProvider, client: openai.OpenAI
) -> None:
    provider.throttle(20.0)
    assert app.summarize(client, "text") == ANSWER
    assert provider.statuses == {429: 1, 200: 1}
    assert shield_clock.slept == pytest.approx(20.0)


def test_the_small_model_answers_while_the_big_one_is_down_until_it_recovers(
    shield_clock: FakeClock, provider: FakeProvider, client: openai.OpenAI
) -> None:
    provider.fail(503, times=3, model=app.PRIMARY)
    assert app.summarize(client, "first") == ANSWER  # 3 failures open gpt-4o's breaker
    assert app.summarize(client, "second") == ANSWER  # gpt-4o is not even asked
    assert provider.received_by_model() == {app.PRIMARY: 3, app.FALLBACK: 2}

    shield_clock.advance(30)  # the breaker's open time, over at once
    assert app.summarize(client, "third") == ANSWER
    assert provider.received_by_model() == {app.PRIMARY: 4, app.FALLBACK: 2}


def test_a_burst_past_the_rate_limit_waits_for_its_permits(
    shield_clock: FakeClock, client: openai.OpenAI
) -> None:
    for n in range(61):
        app.summarize(client, f"text {n}")
    assert shield_clock.slept == pytest.approx(1.0)  # the 61st waited: 60 a minute


def test_each_isolated_block_starts_afresh(provider: FakeProvider, client: openai.OpenAI) -> None:
    """`isolated()` is what the fixture uses, for a test (or set-up code) that wants fresh state
    for a block of its own: what a block does to the shield stays in it."""
    with isolated() as clock:
        breaker = rls.default_registry().key(app.PRIMARY).breaker
        assert breaker is not None
        breaker.force_open()  # gpt-4o is down, as far as this block knows
        assert app.summarize(client, "text") == ANSWER
        assert clock.sleeps == []
    with isolated():
        assert app.summarize(client, "text") == ANSWER
    assert provider.received_by_model() == {app.FALLBACK: 1, app.PRIMARY: 1}
