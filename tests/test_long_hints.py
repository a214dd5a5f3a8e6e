"""A server hint longer than `max_retry_after` (Retry-After 300 or 3600) is not slept out in
part: the call gives up at once, and the key stays paused for everyone for the whole hint."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from rate_limit_shield import RateLimited, Registry
from rate_limit_shield.testing import FakeClock

REQUEST = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")


def rate_limit_error(retry_after: str) -> openai.RateLimitError:
    response = httpx2.Response(429, headers={"retry-after": retry_after}, request=REQUEST)
    body = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}
    return openai.RateLimitError("Rate limit reached", response=response, body=body)


def key_of(policy: dict[str, Any]) -> tuple[Any, FakeClock]:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"default": policy}, clock=clock)
    return registry.key("gpt-4o"), clock


class Provider:
    """Answers each request with a 429 asking for `retry_after` seconds; counts them."""

    def __init__(self, retry_after: str) -> None:
        self.retry_after = retry_after
        self.requests = 0

    def __call__(self) -> str:
        self.requests += 1
        raise rate_limit_error(self.retry_after)


@pytest.mark.parametrize("retry_after", ["300", "3600"])
def test_a_hint_past_max_retry_after_is_not_slept_out_in_part(retry_after):
    key, clock = key_of({"rpm": 600, "retry": {"attempts": 3}})
    provider = Provider(retry_after)
    with pytest.raises((openai.RateLimitError, RateLimited)):
        key.shield.call(provider)
    assert provider.requests == 1
    assert clock.slept == 0.0  # it slept 60 s (max_retry_after) before giving up
    assert key.limiter.paused_for == pytest.approx(float(retry_after))  # for every caller


def test_a_hint_within_max_retry_after_is_still_waited_out():
    key, clock = key_of({"rpm": 600, "retry": {"attempts": 3, "max_retry_after": 120}})
    provider = Provider("100")
    with pytest.raises(openai.RateLimitError):
        key.shield.call(provider)
    assert provider.requests == 3
    assert clock.slept == pytest.approx(200.0)


def test_a_hint_past_max_retry_after_raises_rate_limited_with_the_hint():
    key, _ = key_of({"rpm": 600, "retry": {"attempts": 3}})
    with pytest.raises(RateLimited) as refused:
        key.shield.call(Provider("300"))
    assert refused.value.retry_after == 300.0
    assert isinstance(refused.value.__cause__, openai.RateLimitError)
    assert "the server asked for 300.000s, more than max_retry_after (60s)" in str(refused.value)
