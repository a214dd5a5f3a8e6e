"""The Redis backend's connections against a real redis-server: running out of them is
back-pressure, not an outage; a connection the server closed is replaced, not taken for one.

Real time and real threads here: the point is real concurrency on real sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import pytest

from rate_limit_shield import Limit

try:
    import redis
except ImportError:  # the server fixtures fail in CI; elsewhere say why nothing runs
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("redis-py is not installed (pip install redis)", allow_module_level=True)

from rate_limit_shield.backends.redis import RedisLimiter, from_url

POOL = 4
"""Connections each client may open: far fewer than the callers below."""

RATE = 40.0
"""Permits per second, and the burst: the bound over a run of `SECONDS` is RATE x (1 + SECONDS)."""

SECONDS = 1.0


def small_pool_limiter(url: str) -> RedisLimiter:
    client, aclient = from_url(f"{url}?max_connections={POOL}")
    return RedisLimiter([Limit(RATE, 1)], client=client, aclient=aclient, name="crowded")


def assert_back_pressure_only(
    limiter: RedisLimiter, admitted: int, seconds: float, caplog: pytest.LogCaptureFixture
) -> None:
    """At most what the limit allows was admitted, Redis was never taken for unavailable."""
    assert admitted <= RATE * (1 + seconds) + 1
    assert admitted >= RATE  # the burst at least: the callers were served, not refused
    # No failure: the breaker around Redis warns when it opens, and would still be open.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert limiter.snapshot()["redis_available"] is True


def test_many_threads_on_a_small_pool_wait_for_a_connection(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = small_pool_limiter(redis_url)
    counts: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8 * POOL)

    def caller() -> None:
        start.wait()
        admitted = 0
        try:
            while time.monotonic() < deadline:
                admitted += limiter.try_acquire()
        except BaseException as error:  # reported below
            errors.append(error)
        counts.append(admitted)

    threads = [threading.Thread(target=caller) for _ in range(8 * POOL)]
    with caplog.at_level(logging.INFO, logger="rate_limit_shield"):
        began = time.monotonic()
        deadline = began + SECONDS
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        elapsed = time.monotonic() - began
    assert not errors
    assert_back_pressure_only(limiter, sum(counts), elapsed, caplog)


def test_many_tasks_on_a_small_pool_wait_for_a_connection(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = small_pool_limiter(redis_url)

    async def caller(deadline: float) -> int:
        admitted = 0
        while time.monotonic() < deadline:
            admitted += await limiter.atry_acquire()
        return admitted

    async def crowd() -> int:
        deadline = time.monotonic() + SECONDS
        counts = await asyncio.gather(*(caller(deadline) for _ in range(16 * POOL)))
        assert limiter._script.aclient is not None
        await limiter._script.aclient.aclose()
        return sum(counts)

    with caplog.at_level(logging.INFO, logger="rate_limit_shield"):
        began = time.monotonic()
        admitted = asyncio.run(crowd())
        elapsed = time.monotonic() - began
    assert_back_pressure_only(limiter, admitted, elapsed, caplog)


def test_a_connection_the_server_closed_is_replaced_not_taken_for_an_outage(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = from_url(redis_url)
    limiter = RedisLimiter([Limit(10, 3600)], client=client, name="closed")
    assert limiter.try_acquire()  # its connection is held now
    with redis.Redis.from_url(redis_url) as admin, caplog.at_level(logging.INFO):
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1  # as an idle timeout
        assert limiter.try_acquire()
    assert not caplog.records, caplog.text
    assert limiter.levels()["10/3600s requests"] == pytest.approx(8, abs=0.01)
