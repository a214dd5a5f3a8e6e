"""Fixtures for the Redis backend's tests: a real `redis-server` (see `redis_server.py`);
without one the tests that use these fixtures skip with the reason, and in CI (CI=true) they
fail. And for the SDK tests: the real SDKs, by flavour, pointed at a local fake provider (see
`sdk_helpers.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import freezegun
import pytest
from redis_server import RedisServer, require_redis
from sdk_helpers import FLAVOURS, Caller, Flavour, Session, connect, open_session

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


# -- the SDK tests ---------------------------------------------------------------------------------


@pytest.fixture(params=FLAVOURS, ids=str)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    chosen: Flavour = request.param
    return chosen


@pytest.fixture(scope="module")
def callers() -> Iterator[dict[Flavour, Caller]]:
    """One client per flavour for the module (each test points it at its own provider)."""
    with contextlib.ExitStack() as stack:
        yield {flavour: stack.enter_context(connect(flavour)) for flavour in FLAVOURS}


@pytest.fixture
def start(flavour: Flavour, callers: dict[Flavour, Caller]) -> Iterator[Callable[..., Session]]:
    """Starts the test's provider (with a requests bucket, if given) and points a caller at it."""
    with open_session(callers[flavour]) as start_session:
        yield start_session


@pytest.fixture
def session(start: Callable[..., Session]) -> Session:
    """A session whose provider has no limits of its own."""
    return start()
