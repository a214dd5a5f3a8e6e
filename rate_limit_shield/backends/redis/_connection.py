"""The connection that script calls go out on, and the clients that fail fast.

A plain `redis.Redis` lends its script calls a connection held out of its pool: one request and
its reply, without the command machinery (pool checks, retries, hooks) that costs more than the
script does on the server.
"""

from __future__ import annotations

import functools
import inspect
import os
import select
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["from_url", "held_connection"]


_LEND_ARGS: tuple[str, ...] = (
    ("EVALSHA",)
    if getattr(
        inspect.signature(redis.ConnectionPool.get_connection).parameters.get("command_name"),
        "default",
        None,
    )
    is inspect.Parameter.empty
    else ()
)
"""What `get_connection` takes: redis-py < 5.3 wants a command name, later ones warn at one."""


def _exchange(connection: Any, request: bytes) -> Any:
    connection.send_packed_command((request,))  # an iterable of chunks: bytes would give ints
    return connection.read_response()


def _readable(sock: socket.socket) -> Callable[[], object]:
    """A check, without waiting, that `sock` has something to read (truthy if so)."""
    if hasattr(select, "poll"):  # select() cannot watch a descriptor above 1023
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return functools.partial(poller.poll, 0)
    return lambda: select.select((sock,), (), (), 0)[0]


class _HeldConnection:
    """One connection of a client's pool held for script calls: a request, its reply, nothing else.

    Lending a connection and the client's command machinery (retries, hooks, metrics) cost more
    than the script does on the server. As the pool does when it lends one, the connection is
    checked before each call: readable means closed by the server (a restart, an idle timeout)
    or out of step, and it goes back to the pool for one the pool checks; so does one found
    disconnected (the pool was reset), and one that failed (redis-py has disconnected it).
    A call that finds it busy (another thread's) borrows one from the pool for its time.
    """

    __slots__ = ("_connection", "_lock", "_pool", "_readable", "_socket")

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._connection: Any = None
        self._socket: object = None
        self._readable: Callable[[], object] = bool

    def send(self, request: bytes) -> Any:
        """The reply to `request` (one RESP command); an error reply raises `ResponseError`."""
        pool = self._pool
        if not self._lock.acquire(blocking=False):
            borrowed = pool.get_connection(*_LEND_ARGS)
            try:
                return _exchange(borrowed, request)
            finally:
                pool.release(borrowed)
        try:
            connection: Any = self._connection
            sock = getattr(connection, "_sock", None)
            if sock is None or sock is not self._socket or self._readable():
                self._connection = None
                if connection is not None:
                    pool.release(connection)
                connection = pool.get_connection(*_LEND_ARGS)
                self._socket = sock = connection._sock
                self._readable = _readable(sock)
                self._connection = connection
            try:
                return _exchange(connection, request)
            except redis.ResponseError:  # an error reply, read whole: the connection is in step
                raise
            except BaseException:
                self._connection = None
                pool.release(connection)
                raise
        finally:
            self._lock.release()

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
