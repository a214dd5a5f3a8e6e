"""Fixtures for the Redis backend's tests: a real `redis-server` (see `redis_server.py`).

Without one the tests that use these fixtures skip with the reason; in CI (CI=true) they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import freezegun
import pytest
from redis_server import RedisServer, require_redis

# freezegun looks through every loaded module's attributes when it starts; cohere's lazy
# `__getattr__` then imports its pydantic models under frozen time, which pydantic refuses.
freezegun.configure(extend_ignore_list=["cohere"])


def _running_server() -> RedisServer:
    require_redis()
    server = RedisServer()
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the session; `redis_url` empties it before each test."""
    server = _running_server()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A server for one test alone, for tests that kill, hang or restart it."""
    server = _running_server()
    yield server
    server.close()
