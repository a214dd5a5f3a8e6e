"""A retry budget counted over every process through Redis.

`SharedBudget` allows retries up to `ratio` of the calls the whole fleet made over the last
`window` seconds, plus the floor. Calls are counted in memory and sent to Redis at most once per
`sync_interval` (so a call costs no round trip); a retry, which is rare, is one script call that
decides on the fleet's totals and takes the retry if allowed. When Redis is unavailable the
budget is this process's own, as `RetryBudget` keeps it, until Redis answers again.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from ...clock import Clock
from ...events import Listener
from ...limiter import _check_positive
from ...retry import RetryBudget
from ._script import GuardedScript, check_sync_interval, fleet_key

__all__ = ["SharedBudget", "BUDGET_SCRIPT"]

BUDGET_SCRIPT = """\
-- rate-limit-shield: the fleet-wide retry budget of one key, on the server's clock.
-- KEYS[1]: hash: a ring of one-second buckets, as RetryBudget keeps in memory: for each slot
--          i (0 <= i < window) "s<i>" the server second it counts, "c<i>" its calls and "r<i>"
--          its retries. It expires window + 1 s after its last write.
-- ARGV: op, calls (counted in this second first), ratio, floor, window (whole seconds).
--   count  only counts the calls
--   spend  takes one retry if the window's retries are fewer than ratio x calls + floor:
--          returns 1 if taken, else 0
--   read   returns {calls, retries} of the window
local second = tonumber(redis.call('TIME')[1])
local key, op, calls = KEYS[1], ARGV[1], tonumber(ARGV[2])
local window = tonumber(ARGV[5])
local slot = second % window

local function add(field, amount)
  if tonumber(redis.call('HGET', key, 's' .. slot)) ~= second then
    redis.call('HSET', key, 's' .. slot, second, 'c' .. slot, 0, 'r' .. slot, 0)
  end
  redis.call('HINCRBY', key, field .. slot, amount)
  redis.call('EXPIRE', key, window + 1)
end

if calls > 0 then add('c', calls) end
if op == 'count' then return 0 end
local fields, total_calls, retries = {}, 0, 0
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do fields[all[i]] = tonumber(all[i + 1]) end
for i = 0, window - 1 do
  local stamp = fields['s' .. i]
  if stamp and second - stamp < window then
    total_calls = total_calls + fields['c' .. i]
    retries = retries + fields['r' .. i]
  end
end
if op == 'read' then return {total_calls, retries} end
if retries < tonumber(ARGV[3]) * total_calls + tonumber(ARGV[4]) then
  add('r', 1)
  return 1
end
return 0
"""
"""The Lua script behind the shared budget; its header is the contract with the class."""


class SharedBudget(RetryBudget):
    """A `RetryBudget` whose calls and retries are counted by every process sharing
    `{prefix:name}` on Redis: retries ≤ `ratio` x the fleet's calls + `min_per_second` x
    `window`, over the last `window` seconds of the server's clock.

    `record_call` counts in memory and sends the count at most once per `sync_interval`;
    `try_spend` sends the count and decides in one script call. When Redis fails, the calls
    counted meanwhile and the retries go to the in-memory budget, which decides alone until
    Redis answers (tried again after `redis_recovery_timeout` seconds); one warning per outage.
    """

    __slots__ = (
        "name", "on_event", "_flush_due", "_key", "_rules", "_script", "_sync_interval", "_unsent",
    )  # fmt: skip

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 1.0,
        *,
        window: float = 10.0,
        clock: Clock | None = None,
        client: redis.Redis,
        name: str = "",
        prefix: str = "rls",
        sync_interval: float = 0.1,
        redis_recovery_timeout: float = 2.0,
    ) -> None:
        super().__init__(ratio, min_per_second, window=window, clock=clock)
        self.name = name
        self.on_event: Listener | None = None
        """Told of the outages of Redis (a model key's: its registry's listeners)."""
        self._key = (fleet_key(prefix, name, "budget"),)
        self._sync_interval = check_sync_interval(sync_interval)
        _check_positive("redis_recovery_timeout", redis_recovery_timeout)
        self._rules = (self.ratio, self.min_per_second * self.window, int(self.window))
        self._script = GuardedScript(
            client,
            BUDGET_SCRIPT,
            what=f"the shared retry budget of {name!r}",
            fallback="counting retries in this process only",
            owner=self,
            clock=self._clock,
            recovery_timeout=redis_recovery_timeout,
        )
        self._flush_due = -math.inf
        self._unsent = 0  # calls counted here and not yet sent to Redis

    def record_call(self) -> None:
        """Count one call; the count goes to Redis at most once per `sync_interval`."""
        with self._lock:
            self._unsent += 1
        if self._clock.monotonic() >= self._flush_due:
            self._send(b"count")

    def try_spend(self) -> bool:
        """Take one retry from the fleet's budget if there is one left."""
        reply = self._send(b"spend")
        return super().try_spend() if reply is None else reply == 1

    def snapshot(self) -> dict[str, float]:
        """The fleet's calls, retries and retries left (this process's while Redis is away)."""
        reply = self._send(b"read")
        if reply is None:
            return {**super().snapshot(), "redis_available": False}
        calls, retries = reply
        return {
            "calls": calls,
            "retries": retries,
            "retries_left": max(0.0, self.allowed(calls) - retries),
            "redis_available": True,
        }

    def _send(self, op: bytes) -> Any:
        """Run `op` with the unsent calls; None (and the calls counted in memory) without Redis."""
        with self._lock:
            calls, self._unsent = self._unsent, 0
            self._flush_due = self._clock.monotonic() + self._sync_interval
        script = self._script
        reply = script.run(script.call(self._key, (op, calls, *self._rules)))
        if reply is None and calls:
            with self._lock:
                self._bucket(int(self._clock.monotonic()))[1] += calls
        return reply

    def __repr__(self) -> str:
        return (
            f"SharedBudget(name={self.name!r}, ratio={self.ratio!r}, "
            f"min_per_second={self.min_per_second!r}, window={self.window!r})"
        )
