"""Limits learned from a provider's headers: a cost beyond one is a clear error, and they lapse."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from rate_limit_shield import CostTooLarge, Limit, Limiter, Outcome, Registry, Shield, ShieldError
from rate_limit_shield.llm import Guide, RateLimitInfo
from rate_limit_shield.testing import FakeClock

TPM = Limit(2_000_000, 60, "tokens")
BIG = {"tokens": 32_000}


class Response:
    """An HTTP response as far as the guide reads it."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.status_code = 200
        self.headers = headers


def taught(headers: dict[str, str], limits: list[Limit] | None = None) -> tuple[Limiter, FakeClock]:
    """A limiter of `limits` (tpm 2,000,000) that read `headers` in a response."""
    clock = FakeClock()
    limiter = Limiter(limits or [TPM], clock=clock, name="gpt-4o")
    Guide(limiter, clock=clock)(Outcome.SUCCESS, Response(headers))
    return limiter, clock


LOWER_TOKENS = {"x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "30000"}


def test_a_cost_beyond_a_learned_limit_is_a_clear_error_on_every_path() -> None:
    limiter, clock = taught(LOWER_TOKENS)
    clock.advance(12.0)
    decisions = [
        lambda: limiter.try_acquire(BIG),
        lambda: limiter.reserve(BIG),
        lambda: limiter.wait_time(BIG),
        lambda: limiter.acquire(BIG),
        lambda: asyncio.run(limiter.aacquire(BIG)),
    ]
    for decide in decisions:
        with pytest.raises(CostTooLarge) as refused:
            decide()
        error = refused.value
        assert isinstance(error, ShieldError) and isinstance(error, ValueError)
        assert error.learned and error.limit == "30000/60s tokens"
        assert error.retry_after == pytest.approx(48.0)  # one window after it was reported
        assert error.key == "gpt-4o"
        assert str(error) == (
            "[gpt-4o] cost {'tokens': 32000} exceeds the capacity of limit 30000/60s tokens, "
            "learned from the provider 12.0s ago (configured: 2000000/60s tokens); no wait "
            "helps until it lapses (retry after 48.000s)"
        )
    assert limiter.try_acquire({"tokens": 30_000})  # what fits goes on


def test_a_learned_limit_lapses_and_the_configured_shape_comes_back() -> None:
    limiter, clock = taught(LOWER_TOKENS)
    assert limiter.available == pytest.approx(30_000)
    clock.advance(59.0)
    with pytest.raises(CostTooLarge):
        limiter.reserve(BIG)
    clock.advance(1.0)
    assert limiter.reserve(BIG).delay == 0.0
    assert limiter.available == pytest.approx(2_000_000 - 32_000, rel=1e-3)


def test_each_report_keeps_a_learned_limit_a_window_longer_and_a_late_reset_longer_still() -> None:
    limiter, clock = taught(LOWER_TOKENS)
    clock.advance(50.0)
    Guide(limiter, clock=clock).clamp(RateLimitInfo.from_headers(LOWER_TOKENS))
    clock.advance(50.0)
    with pytest.raises(CostTooLarge) as refused:
        limiter.try_acquire(BIG)
    assert refused.value.retry_after == pytest.approx(10.0)
    later = {**LOWER_TOKENS, "x-ratelimit-reset-tokens": "2m0s"}  # full again in 120 s
    Guide(limiter, clock=clock).clamp(RateLimitInfo.from_headers(later))
    with pytest.raises(CostTooLarge) as refused:
        limiter.try_acquire(BIG)
    assert refused.value.retry_after == pytest.approx(120.0)


def test_a_provider_limit_at_or_above_the_configured_one_ends_a_learned_limit_at_once() -> None:
    limiter, clock = taught(LOWER_TOKENS)
    higher = {"x-ratelimit-limit-tokens": "5000000", "x-ratelimit-remaining-tokens": "4000000"}
    Guide(limiter, clock=clock).clamp(RateLimitInfo.from_headers(higher))
    assert limiter.try_acquire(BIG)


def test_a_configured_limit_too_small_for_a_cost_never_lapses() -> None:
    limiter = Limiter([Limit(10, 60)], clock=FakeClock(), name="m")
    with pytest.raises(CostTooLarge) as refused:
        limiter.reserve(11)
    assert refused.value.retry_after is None and not refused.value.learned
    assert refused.value.limit == "10/60s requests"
    assert str(refused.value) == (
        "[m] cost 11 exceeds the capacity of limit 10/60s requests and could never be granted"
    )


def test_a_provider_limit_below_one_unit_is_ignored_as_malformed() -> None:
    limiter, clock = taught(
        {"x-ratelimit-limit-requests": "0.5", "x-ratelimit-remaining-requests": "50"},
        [Limit(60, 60)],
    )
    assert limiter.available == pytest.approx(50)  # the remaining count still holds
    assert limiter.try_acquire()
    clock.advance(1.0)
    assert limiter.try_acquire()  # refilled at the configured rate, not at 0.5 per minute


def test_a_learned_limit_below_a_configured_burst_keeps_a_whole_request() -> None:
    limiter, clock = taught(
        {"x-ratelimit-limit-requests": "30", "x-ratelimit-remaining-requests": "30"},
        [Limit(60, 60, burst=1)],
    )
    assert limiter.try_acquire()  # a capacity of 1 (the burst), not 0.5 (half of it)
    clock.advance(1.0)
    assert not limiter.try_acquire()  # at the provider's rate: one every 2 s
    clock.advance(1.0)
    assert limiter.try_acquire()


def test_cost_too_large_survives_pickling() -> None:
    limiter, _ = taught(LOWER_TOKENS)
    with pytest.raises(CostTooLarge) as refused:
        limiter.reserve(BIG)
    copy = pickle.loads(pickle.dumps(refused.value))
    assert (copy.limit, copy.learned, copy.retry_after, copy.key, str(copy)) == (
        refused.value.limit,
        True,
        refused.value.retry_after,
        "gpt-4o",
        str(refused.value),
    )


# -- through a shield: nothing is silently lost ------------------------------------------------


def test_map_over_a_shielded_call_raises_instead_of_stopping_short() -> None:
    limiter, clock = taught(LOWER_TOKENS)
    shield = Shield(limiter, None, clock=clock, cost=lambda tokens: {"tokens": tokens})
    answers: list[int] = []

    def ask(tokens: int) -> int:
        return shield.call(answers.append, tokens) or tokens

    with pytest.raises(CostTooLarge):
        list(map(ask, [1_000, 32_000, *[1_000] * 8]))
    assert answers == [1_000]


def test_an_async_call_gets_the_error_not_a_runtime_error() -> None:
    limiter, clock = taught(LOWER_TOKENS)
    shield = Shield(limiter, None, clock=clock, cost=lambda tokens: {"tokens": tokens})

    async def answer(tokens: int) -> int:
        return tokens

    with pytest.raises(CostTooLarge):
        asyncio.run(shield.acall(answer, 32_000))


def test_a_model_key_learns_a_lower_limit_refuses_what_exceeds_it_and_recovers() -> None:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"default": {"tpm": 2_000_000, "retry": None}}, clock=clock)
    key = registry.key("gpt-4o")
    sent: list[dict[str, Any]] = []

    def create(**request: Any) -> Response:
        sent.append(request)
        return Response(LOWER_TOKENS)

    key.shield.call(create, messages=[{"role": "user", "content": "hi"}], max_tokens=100)
    with pytest.raises(CostTooLarge) as refused:
        key.shield.call(create, messages=[], max_tokens=32_000)
    assert refused.value.retry_after == pytest.approx(60.0)
    assert len(sent) == 1
    clock.advance(60.0)
    key.shield.call(create, messages=[], max_tokens=32_000)  # the key sends again, and learns
    assert len(sent) == 2


def test_a_clamp_of_a_known_window_on_redis_matches_the_in_memory_one(redis_url: str) -> None:
    """Slow limits: the real time between the two limiters' decisions moves no level."""
    backend = pytest.importorskip("rate_limit_shield.backends.redis")
    client, aclient = backend.from_url(redis_url)
    limits = [Limit(1000, 3600), Limit(14_400, 86_400)]
    shared = backend.RedisLimiter(limits, client=client, aclient=aclient, name="groq")
    alone = Limiter(limits, clock=FakeClock())
    for limiter in (shared, alone):
        limiter.clamp("requests", 900, limit=1000, reset=86.4, per_seconds=86_400)  # held, adopted
        limiter.clamp("requests", 800, limit=900, per_seconds=604_800)  # a week's: caps the day's
    assert alone.levels() == {
        "1000/3600s requests": 1000,
        "14400/86400s requests": pytest.approx(800),
    }
    assert shared.levels() == pytest.approx(alone.levels(), abs=0.01)
    assert shared.wait_time(801) == pytest.approx(alone.wait_time(801), abs=0.5)
