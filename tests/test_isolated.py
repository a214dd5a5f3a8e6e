"""`testing.isolated()` keeps a test off the real backend: with the default registry configured on
a real redis-server, as in production, a test inside the block drains, pauses and opens only
in-memory state on its FakeClock, and the production keys on Redis are as they were after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import rate_limit_shield as rls
from rate_limit_shield.breaker import State
from rate_limit_shield.errors import RateLimited
from rate_limit_shield.limiter import Limiter
from rate_limit_shield.testing import FakeClock, isolated

TWO_RPM = {"rpm": 2, "max_wait": 0, "retry": None}
SHARED = {
    "breaker": {"shared": True, "failure_threshold": 1},
    "retry": {"budget": {"shared": True, "ratio": 0.0, "min_per_second": 0.1}},
}
"""A breaker and a retry budget shared by the fleet on the backend: one retry per 10 s."""


@rls.shielded(model="production-model")
def production_call() -> str:
    return "sent"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture
def restored() -> Iterator[None]:
    """The default registry's policies from before the test, back in memory after it."""
    previous = rls.default_registry().policies
    yield
    rls.configure(previous, backend="memory")


@pytest.fixture
def production(redis_url: str, restored: None) -> None:
    """The default registry configured as production is: on Redis, outside any isolated()."""
    rls.configure({"production-model": TWO_RPM, "shared-model": SHARED}, backend=redis_url)


def test_a_test_inside_isolated_leaves_the_backends_keys_alone(
    production: None, redis_client: Any
) -> None:
    with isolated():
        assert [production_call(), production_call()] == ["sent", "sent"]
        with pytest.raises(RateLimited):
            production_call()
        assert redis_client.keys("*") == []  # nothing reached Redis
    assert [production_call(), production_call()] == ["sent", "sent"]  # the real tokens
    with pytest.raises(RateLimited):
        production_call()


def test_keys_inside_isolated_are_in_memory_on_its_clock(production: None) -> None:
    with isolated() as clock:
        key = rls.default_registry().key("production-model")
        assert type(key.limiter) is Limiter
        assert key.clock is clock


def test_shared_breakers_and_budgets_are_local_inside_isolated(
    production: None, redis_client: Any
) -> None:
    with isolated():
        key = rls.default_registry().key("shared-model")
        assert type(key.breaker) is rls.CircuitBreaker
        assert type(key.budget) is rls.RetryBudget
        key.breaker.record_failure()
        assert key.breaker.state is State.OPEN
        assert key.budget.try_spend()
        assert not key.budget.try_spend()
        assert redis_client.keys("*") == []
    production_key = rls.default_registry().key("shared-model")
    assert production_key.breaker is not None and production_key.budget is not None
    assert production_key.breaker.state is State.CLOSED
    assert production_key.budget.try_spend()  # the fleet's retry was not spent by the test


def test_a_backend_configured_inside_isolated_is_not_used_nor_kept(
    redis_url: str, redis_client: Any, restored: None
) -> None:
    rls.configure({"m": TWO_RPM}, backend="memory")
    with isolated():
        rls.configure({"m": TWO_RPM}, backend=redis_url)
        assert type(rls.default_registry().key("m").limiter) is Limiter
        assert redis_client.keys("*") == []
    rls.configure({"m": TWO_RPM})  # no backend given: the one from before the block
    assert type(rls.default_registry().key("m").limiter) is Limiter


def test_max_keys_set_inside_isolated_is_undone_at_its_end() -> None:
    before = rls.default_registry().max_keys
    with isolated(FakeClock()):
        rls.default_registry().max_keys = 3
    assert rls.default_registry().max_keys == before
