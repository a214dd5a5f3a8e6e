"""A circuit breaker whose state every process shares through Redis.

`SharedBreaker` counts calls in each process, as `CircuitBreaker` does, but the state is the
fleet's: when one process opens it, every process sees it open until the same instant (on the
Redis server's clock), and the half-open probes are leased on Redis, so that at most
`half_open_max_calls` are in flight across the fleet, those of earlier rounds that have not
ended included. Each lease expires after `probe_ttl`, so a prober that died cannot wedge the
breaker half-open.

The closed fast path stays in memory: a process reads the fleet's state at most once per
`sync_interval`, on a call that finds the interval over, and publishes an opening at once.
Redis failures never reach the call: the breaker falls back to its in-memory behaviour, warns
once per outage, and follows the fleet again when Redis answers. The Redis side of that rule is
`GuardedScript`, the rate limiter's and the shared retry budget's too.
"""

from __future__ import annotations

import math
import uuid
from string import Template
from typing import Any, NamedTuple

import redis

from ...breaker import _HALF_OPEN, _OPEN, Change, CircuitBreaker, Permit, State
from ...clock import Clock
from ...errors import CircuitOpen
from ...limiter import _check_positive
from ...outcome import Outcome
from ._script import GuardedScript, check_sync_interval, fleet_key

__all__ = ["SharedBreaker", "BREAKER_SCRIPT", "PROBE_TTL_FACTOR"]

PROBE_TTL_FACTOR = 2.0
"""The default `probe_ttl` is this many times `recovery_timeout`: a prober silent for that long
is taken for dead and its slot goes to another process."""

_FORGET_AFTER = 86_400
"""Seconds after its open time ends that an unprobed fleet state expires (the breaker closes)."""

BREAKER_SCRIPT = Template(
    """\
-- rate-limit-shield: the fleet-wide state of one circuit breaker, on the server's clock.
-- KEYS[1]: hash, absent while the fleet is closed: "open_until" (server seconds, as a string
--          that also names the episode: every opening writes a new one), "forced" (1: open
--          until reset), "timeout" (seconds of the last re-opening; absent: the base),
--          "successes" (probes that succeeded in this episode). It expires $forget s after
--          the open time ends, unless forced.
-- KEYS[2]: sorted set: the probe leases in flight, scored by when they expire: this episode's
--          and those of earlier ones, which hold their slots until they end or expire. Closing
--          drops them all.
-- ARGV[1]: op, then by op:
--   sync  seconds, force: open for at least `seconds` from now (nothing if < 0), until reset
--         if force is 1; then report
--   lease id, n, ttl: when half-open, lease a probe slot for ttl s if fewer than n are held
--   probe id, episode, result, n, base, ceiling: free the lease; when half-open, a "failure"
--         opens again for the last timeout (or base) doubled up to ceiling (0: not doubled),
--         if the probe is of this episode or its lease was still held (a probe of an earlier
--         one, still in flight); a "success" counts only in its own episode, and closes once n
--         succeeded; "release" counts neither way
--   reset close
-- Returns {verdict, seconds left open, timeout (0: the base), episode} as strings; verdict is
-- closed, open, forced, half_open, or for a lease: leased or busy.
local clock = redis.call('TIME')
local now = clock[1] + clock[2] / 1000000
local state, leases, op = KEYS[1], KEYS[2], ARGV[1]
local stored = redis.call('HMGET', state, 'open_until', 'forced', 'timeout')
local episode, forced, timeout = stored[1], stored[2] == '1', tonumber(stored[3]) or 0
local open_until = tonumber(episode)

local function open(seconds, force)
  open_until = now + seconds
  episode = string.format('%.17g', open_until)
  redis.call('HDEL', state, 'successes')
  redis.call('HSET', state, 'open_until', episode)
  if force then
    forced = true
    redis.call('HSET', state, 'forced', 1)
    redis.call('PERSIST', state)
  else
    redis.call('PEXPIRE', state, math.ceil((seconds + $forget) * 1000))
  end
end

local function report(verdict)
  if not open_until then return {'closed', '0', '0', ''} end
  if forced then verdict = 'forced' end
  if not verdict then verdict = (open_until > now) and 'open' or 'half_open' end
  local left = string.format('%.17g', math.max(open_until - now, 0))
  return {verdict, left, string.format('%.17g', timeout), episode}
end

local half_open = open_until and not forced and open_until <= now
if op == 'sync' then
  local seconds = tonumber(ARGV[2])
  if ARGV[3] == '1' then
    if not forced then open(0, true) end
  elseif seconds >= 0 and not forced and not (open_until and open_until >= now + seconds) then
    open(seconds, false)
  end
elseif op == 'lease' then
  if not half_open then return report() end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  if redis.call('ZCARD', leases) >= tonumber(ARGV[3]) then return report('busy') end
  redis.call('ZADD', leases, now + tonumber(ARGV[4]), ARGV[2])
  local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')[2]
  redis.call('PEXPIRE', leases, math.ceil((last - now) * 1000))  -- with its latest lease
  return report('leased')
elseif op == 'probe' then
  local held = redis.call('ZREM', leases, ARGV[2]) == 1
  local current = episode == ARGV[3]
  if half_open and ARGV[4] == 'success' and current then
    if redis.call('HINCRBY', state, 'successes', 1) >= tonumber(ARGV[5]) then
      redis.call('DEL', state, leases)
      open_until = nil
    end
  elseif half_open and ARGV[4] == 'failure' and (current or held) then
    local ceiling = tonumber(ARGV[7])
    if timeout == 0 then timeout = tonumber(ARGV[6]) end
    if ceiling > 0 then timeout = math.min(timeout * 2, ceiling) end
    open(timeout, false)
    redis.call('HSET', state, 'timeout', string.format('%.17g', timeout))
  end
elseif op == 'reset' then
  redis.call('DEL', state, leases)
  open_until = nil
end
return report()
"""
).substitute(forget=_FORGET_AFTER)
"""The Lua script behind every fleet decision; its header is the contract with the class."""

_RESULTS = {Outcome.SUCCESS: b"success", Outcome.FAILURE: b"failure"}
"""What a probe's outcome tells the fleet; any other outcome only frees the lease."""


class _Fleet(NamedTuple):
    """The fleet's state as the script reports it."""

    verdict: str
    left: float  # seconds until the open time ends (0 when half-open)
    timeout: float  # the open time of the last re-opening, 0: recovery_timeout
    episode: bytes | str  # names the current opening; sent back with a probe's result

    @classmethod
    def of(cls, reply: Any) -> _Fleet:
        verdict, left, timeout, episode = reply
        if isinstance(verdict, bytes):
            verdict = verdict.decode()
        return cls(verdict, float(left), float(timeout), episode)


class SharedBreaker(CircuitBreaker):
    """A `CircuitBreaker` whose state is shared by every process using key `{prefix:name}`.

    Counting (consecutive failures, the window) stays in this process; when it opens the breaker
    it publishes the opening at once, and `force_open` and `reset` publish too. Every
    `sync_interval` seconds at most, a call reads the fleet's state and this process follows it:
    open until the fleet's time (converted to the local clock from the seconds left), half-open,
    or closed. Half-open, each probe first leases one of the fleet's `half_open_max_calls`
    slots for `probe_ttl` seconds (default: `PROBE_TTL_FACTOR` x `recovery_timeout`); its result
    frees the lease, and the fleet closes once that many probes succeeded, or re-opens (doubled
    up to `max_recovery_timeout`) on a failed one. As in memory, a probe that outlives its round
    keeps its slot until it ends: its success is stale, its failure re-opens a later round.
    A probe that outlives its lease still counts if the fleet has not moved on. `disable()` is
    local: a disabled process follows no opening.

    Redis is only asked by the calling thread, synchronously (also under asyncio, where the
    shield calls breakers synchronously): once per `sync_interval` on the closed path, once
    per probe. When it fails the breaker works in memory, as `CircuitBreaker` does, and tries
    Redis again after `redis_recovery_timeout` seconds; an opening it could not publish is
    published then, if its open time is not over. A `reset()` while Redis is away is local.
    Script calls go out as the rate limiter's do (see `GuardedScript`): use a client that fails
    fast (`from_url`).
    """

    __slots__ = (
        "_keys", "_leases", "_pending", "_probe_rules", "_probe_ttl", "_script", "_sync_due",
        "_sync_interval",
    )  # fmt: skip

    def __init__(
        self,
        failure_threshold: int | None = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        client: redis.Redis,
        prefix: str = "rls",
        sync_interval: float = 0.1,
        probe_ttl: float | None = None,
        redis_recovery_timeout: float = 2.0,
        failure_rate: float | None = None,
        window: int | None = None,
        window_seconds: float | None = None,
        min_calls: int = 10,
        max_recovery_timeout: float | None = None,
        slow_call_duration: float | None = None,
        slow_call_rate: float | None = None,
        clock: Clock | None = None,
        name: str = "",
    ) -> None:
        super().__init__(
            failure_threshold,
            recovery_timeout,
            half_open_max_calls,
            failure_rate=failure_rate,
            window=window,
            window_seconds=window_seconds,
            min_calls=min_calls,
            max_recovery_timeout=max_recovery_timeout,
            slow_call_duration=slow_call_duration,
            slow_call_rate=slow_call_rate,
            clock=clock,
            name=name,
        )
        if probe_ttl is None:
            probe_ttl = PROBE_TTL_FACTOR * recovery_timeout
        _check_positive("probe_ttl", probe_ttl)
        _check_positive("redis_recovery_timeout", redis_recovery_timeout)
        self._keys = (fleet_key(prefix, name, "breaker"), fleet_key(prefix, name, "probes"))
        self._sync_interval = check_sync_interval(sync_interval)
        self._probe_ttl = float(probe_ttl)
        self._probe_rules = (
            half_open_max_calls,
            float(recovery_timeout),
            float(max_recovery_timeout or 0.0),
        )
        self._script = GuardedScript(
            client,
            BREAKER_SCRIPT,
            what=f"the shared circuit breaker of {name!r}",
            fallback="breaking circuits in this process only",
            owner=self,
            clock=self._clock,
            recovery_timeout=redis_recovery_timeout,
        )
        self._sync_due = -math.inf
        self._pending: float | None = None  # an opening (local until) not yet published
        # The fleet's leases of this process's probes in flight, by generation: (lease, episode)
        self._leases: dict[Permit, list[tuple[bytes, bytes | str]]] = {}

    @property
    def probe_ttl(self) -> float:
        """Seconds a probe's lease lasts: a silent prober's slot goes to another after that."""
        return self._probe_ttl

    # --- where the fleet is read: calls, and questions about the state ----------------------

    @property
    def state(self) -> State:
        self._sync_if_due()
        return super().state

    @property
    def retry_after(self) -> float | None:
        self._sync_if_due()
        return super().retry_after

    def acquire(self) -> Permit:
        self._sync_if_due()
        return super().acquire()

    def allow(self) -> bool:
        self._sync_if_due()
        return super().allow()

    def snapshot(self) -> dict[str, object]:
        self._sync_if_due()
        return {**super().snapshot(), "redis_available": self._script.available}

    # --- manual control, published --------------------------------------------------------

    def force_open(self) -> None:
        super().force_open()
        if self._pending is not None:  # it was open already: no change published it
            self.sync()

    def reset(self) -> None:
        super().reset()
        gen = self._gen
        reply = self._ask(b"reset")
        if reply is not None:
            self._follow(_Fleet.of(reply), gen)

    def release(self, permit: Permit) -> None:
        if permit != self._closed_gen and not self._finish_probe(permit, b"release"):
            super().release(permit)

    def sync(self) -> None:
        """Publish this process's unpublished opening, if any, and follow the fleet's state."""
        self._sync(when_due=False)

    # --- internals ---------------------------------------------------------------------------

    def _ask(self, *args: bytes | float | str) -> Any:
        """The fleet script's reply to `args` on this breaker's keys; None without Redis."""
        script = self._script
        return script.run(script.call(self._keys, args))

    def _sync_if_due(self) -> None:
        if self._clock.monotonic() >= self._sync_due:
            self._sync(when_due=True)

    def _sync(self, *, when_due: bool) -> None:
        with self._lock:
            now = self._clock.monotonic()
            if when_due and now < self._sync_due:
                return  # another thread has just synced
            self._sync_due = now + self._sync_interval
            gen, pending = self._gen, self._pending
        if pending is None or pending <= now:
            opening: tuple[float, bytes] = (-1.0, b"0")  # nothing to publish (any more)
        elif pending == math.inf:
            opening = (-1.0, b"1")  # forced open
        else:
            opening = (pending - now, b"0")
        reply = self._ask(b"sync", *opening)
        if reply is None:
            return  # the opening stays pending until Redis answers
        with self._lock:
            if self._pending == pending:
                self._pending = None
        self._follow(_Fleet.of(reply), gen)

    def _acquire_not_closed(self) -> Permit | CircuitOpen:
        verdict = super()._acquire_not_closed()
        if isinstance(verdict, CircuitOpen):
            return verdict
        with self._lock:
            probe = self._state is _HALF_OPEN and verdict == self._gen
        return self._lease(verdict) if probe else verdict

    def _lease(self, permit: Permit) -> Permit | CircuitOpen:
        """Turn a probe slot taken in memory into one of the fleet's, or give it back."""
        lease = uuid.uuid4().hex.encode()
        count, _, _ = self._probe_rules
        reply = self._ask(b"lease", lease, count, self._probe_ttl)
        if reply is None:
            return permit  # Redis is away: a probe of this process alone
        fleet = _Fleet.of(reply)
        change = None
        with self._lock:
            now = self._clock.monotonic()
            current = self._gen == permit
            if current and fleet.verdict == "leased":
                self._leases.setdefault(permit, []).append((lease, fleet.episode))
                return permit
            self._end_probe_locked(permit)  # its slot, whatever round it belongs to by now
            if current:
                change = self._adopt_locked(fleet, now)
            closed = self._closed_gen
            busy = fleet.verdict == "busy"
            verdict: Permit | CircuitOpen = (
                closed
                if closed >= 0
                else CircuitOpen(
                    "circuit breaker is half-open with every probe slot of the fleet taken"
                    if busy
                    else "circuit breaker is open",
                    retry_after=self._busy_retry_after if busy else self._retry_after_locked(now),
                    key=self.name,
                )
            )
        if change is not None:
            self._notify(change)
        if fleet.verdict == "leased":  # the state moved on meanwhile: the slot is not needed
            self._ask(b"probe", lease, fleet.episode, b"release", *self._probe_rules)
        return verdict

    def _record_probe(self, permit: Permit, outcome: Outcome, duration: float) -> None:
        slow = outcome is Outcome.SUCCESS and duration >= self._slow_call_duration
        result = b"failure" if slow else _RESULTS.get(outcome, b"release")
        if not self._finish_probe(permit, result):
            super()._record_probe(permit, outcome, duration)

    def _finish_probe(self, permit: Permit, result: bytes) -> bool:
        """Tell the fleet a probe's result, whatever round it was let through in, free its slot
        and follow the fleet's answer; False when the probe is for the in-memory logic: one let
        through while Redis was away, or Redis failed now."""
        with self._lock:
            leases = self._leases.get(permit)
            if not leases:
                return False
            lease, episode = leases.pop()  # the leases of one round of one process are alike
            if not leases:
                del self._leases[permit]
            gen = self._gen
        reply = self._ask(b"probe", lease, episode, result, *self._probe_rules)
        if reply is None:
            return False
        with self._lock:
            self._end_probe_locked(permit)
        self._follow(_Fleet.of(reply), gen)
        return True

    def _follow(self, fleet: _Fleet, gen: Permit) -> None:
        """Adopt the fleet's state, unless this process changed state since it asked."""
        with self._lock:
            if self._gen != gen:
                return
            change = self._adopt_locked(fleet, self._clock.monotonic())
        if change is not None:
            self._notify(change)

    def _adopt_locked(self, fleet: _Fleet, now: float) -> Change | None:
        verdict = fleet.verdict
        if verdict == "closed":
            return None if self._closed_gen >= 0 else self._close_locked("the fleet closed it")
        if self._disabled:
            return None
        self._open_timeout = fleet.timeout or self.recovery_timeout
        until = math.inf if verdict == "forced" else now + fleet.left  # left is 0 if half-open
        state = self._state
        if state is _OPEN:
            self._open_until = until
            return None
        if state is _HALF_OPEN and until <= now:
            return None
        # not ours to publish: the fleet's already
        return super()._open_locked(until, "the fleet opened it")

    def _open_locked(self, until: float, why: str) -> Change | None:
        self._pending = until  # this process opens it: published once the lock is released
        return super()._open_locked(until, why)

    def _close_locked(self, why: str) -> Change | None:
        self._pending = None
        self._leases.clear()  # closing ends the episode: the fleet drops (or expires) them
        return super()._close_locked(why)

    def _notify(self, change: Change) -> None:
        super()._notify(change)
        if change.new is _OPEN and self._pending is not None:
            self.sync()
