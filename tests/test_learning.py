"""What a model key learns as it goes: how long its answers really are, the provider's count from
a stream's headers, and a provider's debt from a reset that outlasts its window."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from rate_limit_shield import Limit, Limiter, Registry, Shield
from rate_limit_shield.llm import LearnedEstimate, estimate_cost
from rate_limit_shield.llm.pacing import Guide
from rate_limit_shield.llm.tokens import DEFAULT_OUTPUT_TOKENS
from rate_limit_shield.testing import FakeClock

MESSAGES = [{"role": "user", "content": "x" * 400}]


# -- answer lengths --------------------------------------------------------------------------


def test_a_call_that_sets_no_output_limit_reserves_no_answer_as_the_provider_admits_it() -> None:
    estimate = LearnedEstimate()
    assert estimate(messages=MESSAGES) == {**estimate_cost(messages=MESSAGES), "output_tokens": 0}


def test_after_a_success_that_reported_no_usage_answers_are_reserved_again() -> None:
    """Nothing would charge such an answer: the calls reserve the key's answers again, until
    `window` answers have settled since."""
    estimate = LearnedEstimate(window=3)
    for _ in range(3):
        estimate.learn({"output_tokens": 40})
    estimate.unsettled()
    assert estimate(messages=MESSAGES)["output_tokens"] == 40
    for reserved in (40, 40, 0):
        estimate.learn({"output_tokens": 40})
        assert estimate.output == reserved


def test_an_unsettled_success_before_any_answer_reserves_the_default() -> None:
    estimate = LearnedEstimate()
    estimate.unsettled()
    assert estimate.output == DEFAULT_OUTPUT_TOKENS


def test_answers_are_weighted_by_their_length_as_calls_in_flight_are() -> None:
    """Half the answers 100 tokens, half 300: a plain mean says 200; a call in flight is 300
    long three times as often as 100, so the provider's count of calls in flight averages 250."""
    estimate = LearnedEstimate(window=1000)
    for _ in range(50):
        estimate.learn({"output_tokens": 100})
        estimate.learn({"output_tokens": 300})
    estimate.unsettled()
    assert estimate.output == 250


def test_recent_answers_weigh_most() -> None:
    estimate = LearnedEstimate(window=10)
    for _ in range(100):
        estimate.learn({"output_tokens": 1000})
    for _ in range(200):
        estimate.learn({"output_tokens": 10})
    estimate.unsettled()
    assert estimate.output < 20  # a shift to shorter answers is followed (more slowly than
    # a plain mean would: past long answers weigh by their length, which errs on the safe side)


def test_a_call_that_sets_its_output_limit_reserves_that_limit() -> None:
    estimate = LearnedEstimate()
    estimate.learn({"output_tokens": 5})
    assert estimate(messages=MESSAGES, max_tokens=700)["output_tokens"] == 700
    assert estimate(messages=MESSAGES, max_tokens=700, n=2)["output_tokens"] == 1400


@pytest.mark.parametrize(
    "actual",
    [
        None,
        5,
        {"requests": 1},
        {"output_tokens": -1},
        {"output_tokens": math.inf},
        {"output_tokens": "9"},
    ],
)
def test_what_is_no_answer_length_teaches_nothing(actual: object) -> None:
    estimate = LearnedEstimate()
    estimate.learn(actual)
    estimate.unsettled()
    assert estimate.output == DEFAULT_OUTPUT_TOKENS


def test_a_token_limited_key_learns_from_the_usage_it_settles() -> None:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"default": {"tpm": 100_000}}, clock=clock)
    key = registry.key("gpt-4o")
    assert isinstance(key.cost, LearnedEstimate)
    assert registry.key("gpt-4o-mini").cost is not key.cost  # each key learns its own answers

    def create(**kwargs: Any) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 104, "completion_tokens": 60}}

    for _ in range(3):
        key.shield.call(create, messages=MESSAGES)
    assert key.cost(messages=MESSAGES)["output_tokens"] == 0  # each answer is charged as it ends
    key.shield.call(lambda **kwargs: "no usage", messages=MESSAGES)
    assert key.cost(messages=MESSAGES)["output_tokens"] == 60


def test_a_refused_request_teaches_no_answer_length() -> None:
    """A 429 settles at one request and no tokens: not an answer of length 0."""
    seen: list[object] = []

    class Recording(LearnedEstimate):
        def learn(self, actual: object) -> None:
            seen.append(actual)
            super().learn(actual)

    clock = FakeClock()
    limiter = Limiter([Limit(10_000, 60, "tokens")], clock=clock)
    estimate = Recording()
    shield = Shield(limiter, clock=clock, cost=estimate, usage=lambda result: result)
    shield.call(lambda **kwargs: {"output_tokens": 30}, messages=MESSAGES)
    assert seen == [{"output_tokens": 30}]
    estimate.unsettled()
    assert estimate.output == 30


# -- a stream's headers ------------------------------------------------------------------------


class Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class SDKStream:
    """A stream as the SDKs return it: items, and the HTTP response it came on."""

    def __init__(self, headers: dict[str, str], items: list[object]) -> None:
        self.response = Response(headers)
        self._items = iter(items)

    def __iter__(self) -> Iterator[object]:
        return self

    def __next__(self) -> object:
        return next(self._items)


def test_a_stream_teaches_its_key_the_providers_count_when_it_starts() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(3000, 60, "tokens")], clock=clock)
    shield = Shield(limiter, clock=clock, guide=Guide(limiter, clock=clock))
    headers = {"x-ratelimit-limit-tokens": "3000", "x-ratelimit-remaining-tokens": "1200"}
    stream = shield.call(lambda: SDKStream(headers, ["a", "b"]))
    # Before the stream is read; the provider's count includes this request already.
    assert limiter.levels()["3000/60s tokens"] == pytest.approx(1200)
    assert list(stream) == ["a", "b"]


# -- a provider in debt ------------------------------------------------------------------------


def test_a_reset_beyond_the_window_tells_of_a_debt_to_wait_out() -> None:
    """3,000 tokens a second; none left, and full again only in 1.5 s: the provider owes 1,500
    tokens, so the next token waits 0.5 s for the debt to be repaid, plus its own refill."""
    clock = FakeClock()
    limiter = Limiter([Limit(3000, 1, "tokens")], clock=clock)
    limiter.clamp("tokens", 0, 3000, 1.5)
    assert limiter.wait_time({"tokens": 1}) == pytest.approx(0.5 + 1 / 3000)


def test_a_reset_within_the_window_waits_for_the_next_unit_only() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(3000, 1, "tokens")], clock=clock)
    limiter.clamp("tokens", 0, 3000, 1.0)
    assert limiter.wait_time({"tokens": 1}) == pytest.approx(1 / 3000)
