"""The connections that script calls go out on, and the clients that fail fast.

A plain `redis.Redis` lends its script calls a connection held out of its pool: one request and
its reply, without the command machinery (pool checks, retries, hooks) that costs more than the
script does on the server. A pool with no connection left to lend is back-pressure: the call
waits for one (`POOL_WAITS`), as it would for a busy server, rather than take Redis for down.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError
from redis.retry import Retry

__all__ = ["POOL_WAITS", "exhausted", "from_url", "held_connection"]

POOL_WAITS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032) + (0.05,) * 99
"""Seconds to sleep before each new try while a client's pool has no connection to lend: about
5 s in all, counted in sleeps rather than read from a clock (a frozen one still ends it). A pool
still empty after that is stuck (its connections leak), not busy: the error goes on as a failure.
"""


def exhausted(error: BaseException) -> bool:
    """Whether `error` is a pool with every connection lent out: `MaxConnectionsError` (a plain
    `ConnectionError` with the same words before redis-py 7)."""
    return isinstance(error, MaxConnectionsError) or (
        isinstance(error, redis.ConnectionError) and error.args == ("Too many connections",)
    )


def _exchange(connection: Any, request: bytes) -> Any:
    connection.send_packed_command((request,))  # an iterable of chunks: bytes would give ints
    return connection.read_response()


class _HeldConnection:
    """One connection of a client's pool held for script calls: a request, its reply, nothing else.

    A call that finds it busy (another thread's) borrows one from the pool for its time. A failed
    call gives it back to the pool (redis-py has disconnected it), unless the failure is an error
    reply, read whole, after which the connection is still in step. One that the server closed
    since the last call (an idle timeout, a restart, CLIENT KILL) fails with a `ConnectionError`
    before the request reaches any session: the call is then tried once more on a connection
    from the pool, which checks those it lends, so that a closed connection is not an outage.
    """

    __slots__ = ("_connection", "_lock", "_pool")

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._connection: Any = None

    def send(self, request: bytes) -> Any:
        """The reply to `request` (one RESP command); an error reply raises `ResponseError`."""
        pool = self._pool
        if not self._lock.acquire(blocking=False):
            borrowed = pool.get_connection()
            try:
                return _exchange(borrowed, request)
            finally:
                pool.release(borrowed)
        try:
            if self._connection is not None:
                try:
                    return self._exchange(request)
                except redis.ConnectionError:
                    pass  # closed since its last call: once more on a fresh one
            self._connection = pool.get_connection()
            return self._exchange(request)
        finally:
            self._lock.release()

    def _exchange(self, request: bytes) -> Any:
        """`request` on the held connection; one that fails goes back to the pool."""
        connection = self._connection
        try:
            return _exchange(connection, request)
        except redis.ResponseError:  # an error reply, read whole: the connection is in step
            raise
        except BaseException:
            self._connection = None
            self._pool.release(connection)
            raise

    def close(self) -> None:
        """Give the connection back to the pool (its client is gone)."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)

    def forget(self) -> None:
        """In a forked child: the connection is the parent's socket, and the lock may be held."""
        self._connection = None
        self._lock = threading.Lock()


_HELD: weakref.WeakKeyDictionary[redis.Redis, _HeldConnection] = weakref.WeakKeyDictionary()
_PLAIN_EXECUTE = redis.Redis.execute_command


def held_connection(client: object) -> _HeldConnection | None:
    """The connection held for `client`'s script calls; None for a client whose calls must go
    through its methods: not a `redis.Redis` on a pool (a cluster, a single-connection client),
    or one whose `execute_command` is overridden or wrapped (instrumentation sees each call)."""
    if not isinstance(client, redis.Redis) or client.connection is not None:
        return None
    execute = type(client).execute_command
    if execute is not _PLAIN_EXECUTE or hasattr(execute, "__wrapped__"):
        return None
    held = _HELD.get(client)
    if held is None:
        fresh = _HeldConnection(client.connection_pool)
        held = _HELD.setdefault(client, fresh)
        if held is fresh:
            weakref.finalize(client, held.close)
    return held


def _forget_held_connections() -> None:
    for held in list(_HELD.values()):
        held.forget()


os.register_at_fork(after_in_child=_forget_held_connections)


def from_url(url: str) -> tuple[redis.Redis, redis.asyncio.Redis]:
    """A sync and an async client for `url` that fail fast: 0.25 s timeouts, no retries.

    A limiter falls back at once rather than hold the call; options in the URL's query
    string (`?socket_timeout=1`) take precedence over these.
    """
    fast: dict[str, Any] = {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}
    return (
        redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **fast),
        redis.asyncio.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **fast),
    )
