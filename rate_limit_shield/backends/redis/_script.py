"""What every Redis script of the backend shares: how a call is encoded, where its keys live,
and `GuardedScript`, which runs it behind a breaker of its own so that an outage costs one
failed attempt per interval and is told once (BACKEND_DOWN), as is its end (BACKEND_UP).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from ...breaker import Change, CircuitBreaker, Permit
from ...clock import Clock
from ...errors import CircuitOpen, ConfigError
from ...events import BACKEND_DOWN, BACKEND_UP, Event, Reporter, report
from ...outcome import Outcome
from ._connection import POOL_WAITS, exhausted, held_connection

__all__ = [
    "GuardedScript", "ScriptCall", "bulk", "check_sync_interval", "fleet_key", "word",
]  # fmt: skip

ScriptCall = tuple[int, tuple[bytes, ...], bytes]
"""A script call: the number of keys, the keys then the arguments, and the EVALSHA request that
sends them, RESP-encoded."""


def bulk(word: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(word), word)


def word(value: bytes | float | str) -> bytes:
    """`value` as redis-py sends a command's argument."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()


def fleet_key(prefix: str, name: str, what: str) -> bytes:
    """The Redis key of `what` for key `name`: `{prefix:name}:what`, whose braces (a Cluster hash
    tag) keep every key of one model on one node."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(f"prefix must be a non-empty string, got {prefix!r}")
    return f"{{{prefix}:{name}}}:{what}".encode()


def check_sync_interval(value: float) -> float:
    """How often a shared breaker or budget may talk to Redis on its fast path."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(f"sync_interval must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class _Guard(CircuitBreaker):
    """A script's own breaker: its openings and probes are one outage, told by the script."""

    __slots__ = ()

    def _report(self, change: Change) -> None:
        """Nothing: the script tells BACKEND_DOWN and BACKEND_UP instead."""


class GuardedScript:
    """A Lua script run on Redis behind a breaker of its own: the reply, or None when Redis is
    unavailable (failed now, or lately: it is then left alone for `recovery_timeout` seconds, so
    a dead server costs one attempt per interval, not one per call).

    An outage is told once, as a BACKEND_DOWN event of the `owner` (the limiter, breaker or
    budget the script serves, whose `on_event` hears it) with the `fallback` meanwhile as its
    reason, logged as a warning; its end once, as BACKEND_UP with `what` comes back. A script
    flushed from the server is loaded again in the same call. Sync calls go out on the
    connection held for `client`'s script calls where it allows one (see `held_connection`),
    else through its methods; async ones on `aclient`, or as sync ones in a thread without it.
    A client whose pool has no connection left waits for one: that is back-pressure, not an
    outage. `error` is the last failure (None before any).
    """

    __slots__ = (
        "_breaker", "_clock", "_down_since", "_fallback", "_held", "_lock", "_outage", "_owner",
        "_script", "_sha", "_what", "aclient", "client", "error",
    )  # fmt: skip

    def __init__(
        self,
        client: redis.Redis,
        script: str,
        *,
        aclient: redis.asyncio.Redis | None = None,
        what: str,
        fallback: str,
        owner: Reporter,
        clock: Clock,
        recovery_timeout: float,
    ) -> None:
        if isinstance(client, redis.asyncio.Redis) or not callable(
            getattr(client, "evalsha", None)
        ):
            raise ConfigError(
                f"client must be a synchronous redis client (redis.Redis), got {client!r}"
            )
        self.client = client
        self.aclient = aclient
        self.error: BaseException | None = None
        self._held = held_connection(client)
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self._what = what
        self._fallback = fallback
        self._owner = owner
        self._clock = clock
        self._breaker = _Guard(
            failure_threshold=1, recovery_timeout=recovery_timeout, clock=clock, name=what
        )
        self._lock = threading.Lock()
        self._outage = False
        self._down_since = 0.0

    @property
    def available(self) -> bool:
        """False from a failed call until the next one that Redis answers."""
        return not self._outage

    @property
    def retry_after(self) -> float | None:
        """Seconds until Redis is tried again after a failure (0.0: at the next call)."""
        return self._breaker.retry_after

    def request(
        self, keys: int, words: tuple[bytes, ...], more: int = 0, *, cached: bool = True
    ) -> bytes:
        """The RESP request of EVALSHA (or EVAL if not `cached`) on `keys` keys and the arguments
        in `words`, but for `more` arguments that the caller appends, each as `bulk(argument)`."""
        script = (b"EVALSHA", self._sha.encode()) if cached else (b"EVAL", self._script.encode())
        items = (*script, b"%d" % keys, *words)
        return b"*%d\r\n" % (len(items) + more) + b"".join(map(bulk, items))

    def call(self, keys: tuple[bytes, ...], args: Iterable[bytes | float | str]) -> ScriptCall:
        """The script call on `keys` and `args`, encoded as redis-py encodes them."""
        words = (*keys, *map(word, args))
        return len(keys), words, self.request(len(keys), words)

    def run(self, call: ScriptCall) -> Any:
        """The script's reply to `call`, or None when Redis is unavailable."""
        permit = self._permit()
        if permit is None:
            return None
        try:
            reply = self._evaluate(call)
        except BaseException as error:
            return self._failed(permit, error)
        self._answered(permit)
        return reply

    async def arun(self, call: ScriptCall) -> Any:
        """`run` for asyncio: on `aclient`, or `run` in a thread without one."""
        aclient = self.aclient
        if aclient is None:
            return await asyncio.to_thread(self.run, call)
        permit = self._permit()
        if permit is None:
            return None
        try:
            reply = await self._aevaluate(aclient, call)
        except BaseException as error:
            return self._failed(permit, error)
        self._answered(permit)
        return reply

    # A pool with no connection to lend is waited for, not failed: see `POOL_WAITS`. Its waits
    # are real time whatever the clock: they wait for a real socket.

    def _evaluate(self, call: ScriptCall) -> Any:
        for pause in POOL_WAITS:
            try:
                return self._evaluate_once(call)
            except redis.ConnectionError as error:
                if not exhausted(error):
                    raise
            time.sleep(pause)
        return self._evaluate_once(call)

    async def _aevaluate(self, aclient: redis.asyncio.Redis, call: ScriptCall) -> Any:
        for pause in POOL_WAITS:
            try:
                return await self._aevaluate_once(aclient, call)
            except redis.ConnectionError as error:
                if not exhausted(error):
                    raise
            await asyncio.sleep(pause)
        return await self._aevaluate_once(aclient, call)

    async def _aevaluate_once(self, aclient: redis.asyncio.Redis, call: ScriptCall) -> Any:
        try:
            return await aclient.evalsha(self._sha, call[0], *call[1])
        except NoScriptError:  # flushed or restarted: EVAL runs it and caches it again
            return await aclient.eval(self._script, call[0], *call[1])

    def _evaluate_once(self, call: ScriptCall) -> Any:
        """The reply to `call`: on the held connection, or through the client's methods."""
        held = self._held
        if held is None:
            try:
                return self.client.evalsha(self._sha, call[0], *call[1])
            except NoScriptError:  # flushed or restarted: EVAL runs it and caches it again
                return self.client.eval(self._script, call[0], *call[1])
        try:
            return held.send(call[2])
        except NoScriptError:
            return held.send(self.request(call[0], call[1], cached=False))

    def _permit(self) -> Permit | None:
        try:
            return self._breaker.acquire()
        except CircuitOpen:
            return None

    def _failed(self, permit: Permit, error: BaseException) -> None:
        """After a call that raised: a Redis error opens the breaker and is told once per
        outage, not once per call (the call's answer is None); anything else (a cancellation, a
        bug) is not Redis's failure and goes on to the caller."""
        if not isinstance(error, redis.RedisError):
            self._breaker.release(permit)
            raise error
        self._breaker.record(permit, Outcome.FAILURE)
        self.error = error
        with self._lock:
            first, self._outage = not self._outage, True
            if first:
                self._down_since = self._clock.monotonic()
        if first:
            owner = self._owner
            event = Event(BACKEND_DOWN, owner.name, 0, error=error, reason=self._fallback)
            report(owner.on_event, event)

    def _answered(self, permit: Permit) -> None:
        self._breaker.record(permit, Outcome.SUCCESS)
        if self._outage:
            with self._lock:
                back, self._outage = self._outage, False
                down = self._clock.monotonic() - self._down_since
            if back:
                owner = self._owner
                report(owner.on_event, Event(BACKEND_UP, owner.name, 0, down, reason=self._what))
