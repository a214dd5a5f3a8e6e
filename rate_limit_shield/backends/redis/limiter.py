"""Rate limits shared by every process through Redis: one Lua script call per decision.

`RedisLimiter` is a `Limiter` whose GCRA schedules live in one small Redis string per key, so
that a fleet of processes shares one quota. Each decision (reserve, settle, refund, pause, clamp)
is a single EVALSHA of `SCRIPT`, which takes the time from the Redis server: client clocks that
disagree cannot over-admit, and the arithmetic is the in-memory one (but for what a late
settlement gives back: see `RedisLimiter`). The local clock only sleeps.

A decision costs little more than the round trip: the script runs three commands (TIME, GET,
SET) on binary doubles, and its request is encoded ahead but for its numbers.

When Redis does not answer, `on_backend_error` decides: "local" limits in memory at this
process's share of each limit (learnt from the fleet's heartbeats) until Redis answers again,
"allow" grants at once, "deny" raises `BackendUnavailable`. Settling, refunding, pausing and
clamping never raise for a Redis failure: the call they follow has its outcome already. A script
call cut short (a timeout, a cancelled task) may still have been applied on the server: such a
cost stays charged, so that the error is always on the side of admitting less.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import operator
import os
import struct
import uuid
from collections.abc import Callable, Iterable
from string import Template
from typing import Any

import redis
import redis.asyncio

from ...clock import Clock
from ...errors import ConfigError, ShieldError
from ...events import Listener
from ...limiter import (
    _ROUNDING,
    Cost,
    Limit,
    Limiter,
    Reservation,
    _amount,
    _check_positive,
    _gained,
    _max_wait,
)
from ._script import GuardedScript, ScriptCall, bulk, fleet_key

__all__ = ["BackendUnavailable", "RedisLimiter", "SCRIPT", "check_options"]

_HEARTBEAT_EVERY = 5.0
"""Seconds between two heartbeats of one limiter; after three missed ones it leaves the fleet."""

_MODES = ("local", "allow", "deny")
_WHILE_DOWN = {
    "local": "limiting in memory at this process's share",
    "allow": "allowing every call",
    "deny": "refusing every call",
}

SCRIPT = Template(
    """\
-- rate-limit-shield: one decision on the limits of one key, on the server's clock.
-- KEYS[1]: string: the 8-byte ids of the limits it holds, then little-endian doubles: when the
--          key expires and the pause (before which nobody proceeds), in server seconds, then
--          four for each limit: its tat (its GCRA theoretical arrival time), its last start (the
--          latest instant a call charged to it goes: once every limit and the pause let it),
--          the seconds of permits given back in all (by shifts without a reservation), and its
--          cut: the instant its state began or a provider's floor last raised its tat, before
--          which no reservation gets anything back. It expires at least $margin s after every
--          bucket is full again and every start has passed, pushed on (to twice the time until
--          then, + 2 x $margin s) only when that comes too close: SET keeps the TTL meanwhile.
--          A TTL is at most 1e15 ms (30,000 years): a longer one would reach PEXPIRE in
--          exponent notation.
-- KEYS[2], only with a heartbeat: hash: a field per live limiter holding its last heartbeat.
-- ARGV: op; the ids of this limiter's limits; little-endian doubles: param, then each limit's
--       amount (seconds of schedule), then each limit's tau; ARGV[4]: with KEYS[2], the
--       member; for a shift that settles a reservation, what its reserve returned but the wait.
--   reserve (param: max_wait) takes every amount if the wait is at most max_wait, else nothing,
--           each limit charged from the call's start, when every limit and the pause let it
--           go: its tat becomes max(tat, start) + amount (a limit charged before would refill,
--           while the call waits, what the call takes when it goes, and admit it twice).
--           Returns, if taken, a string of doubles: the wait in seconds, now, then for each
--           limit where the slot its call takes there ends (start + amount), plus the seconds
--           given back so far; if not, the wait in microseconds (rounded up, at most 1e18);
--           with a heartbeat, {that, the number of live limiters}.
--   shift   moves each tat on from now by a positive amount (a debt, charged now), back by a
--           negative one: all of it for a permit given back, but for a reservation at most
--           what its slot has beyond the last start and the permits given back since, and
--           nothing if it is older than the cut. The chain of each call charged since (where
--           its schedule would end, every later charge included) ends by the last start + the
--           charges since; the reservation's own ends at its slot's end + the same - what was
--           given back since, and the tat is past it: so the tat may come back that far, no
--           further, and no bucket charged each call's real cost when it went holds more (the
--           chains: see `Reservation`).
--   pause   (param: seconds) holds the key until now + seconds, unless it is held longer.
--   floor   raises each tat to now + its amount (seconds; -inf leaves it), unless it is later.
--   A debt (the most of a shift's), a pause's length and a floor's raise of a tat on which a
--   call waits hold the calls waiting back as long: each tat ahead of now moves on by as much,
--   and so does each start ahead (see `Limiter._hold_waiting_locked`, which keeps each waiting
--   call's slack on each limit and holds them back by a debt or a floor only as far as it
--   delays them: here, with no slack kept, by all of it, which can only grant later).
--   read    returns {now, pause, tat...} as strings, "-inf" where there is none.
-- Limiters of other limits on the same key (another configuration) share the limits of the
-- same id; those of the others are kept until full and started. A value of another size counts
-- as none. Lua numbers go to Redis with 17 digits, but come back from a script truncated to
-- integers.
local clock = redis.call('TIME')
local now = clock[1] + clock[2] / 1000000
local state_key, op, ids, numbers = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local count = #ids / 8
local param = struct.unpack('<d', numbers)
local stored = redis.call('GET', state_key)
-- expires, pause, then (tat, last start, given back, cut) of each of this limiter's limits
-- from 4 x its place - 1, then those of the others (their ids: others)
local state, others = {-math.huge, -math.huge}, ''
if stored and #stored == 40 * count + 16 and string.sub(stored, 1, 8 * count) == ids then
  local at = 8 * count + 1
  for i = 1, 4 * count + 2 do state[i], at = struct.unpack('<d', stored, at) end
else
  for i = 1, count do
    local base = 4 * i - 1
    state[base], state[base + 1], state[base + 2], state[base + 3] = -math.huge, -math.huge, 0, now
  end
  local size = (#(stored or '') - 16) / 40
  if size >= 0 and size % 1 == 0 then
    local ours, at = {}, 8 * size + 1
    for i = 1, count do ours[string.sub(ids, 8 * i - 7, 8 * i)] = 4 * i - 1 end
    state[1], state[2], at = struct.unpack('<dd', stored, at)
    for j = 1, size do
      local id, limit = string.sub(stored, 8 * j - 7, 8 * j), {}
      limit[1], limit[2], limit[3], limit[4], at = struct.unpack('<dddd', stored, at)
      local base = ours[id]
      if not base and math.max(limit[1], limit[2]) > now then
        others, base = others .. id, #state + 1
      end
      if base then
        for k = 1, 4 do state[base + k - 1] = limit[k] end
      end
    end
  end
end

-- this limiter's tats, as they are now
local function tats()
  local values = {}
  for i = 1, count do values[i] = state[4 * i - 1] end
  return values
end
-- whether a call charged here still waits (its start is ahead)
local function waiting()
  for i = 1, count do
    if state[4 * i] > now then return true end
  end
  return false
end
-- raises limit i's tat to `tat`: a reservation made at this very microsecond, before or after,
-- gets nothing back
local function raise(i, tat)
  state[4 * i - 1], state[4 * i + 2] = tat, now + 1e-6
end
-- the calls waiting go `seconds` later (the limiter's `_hold_waiting_locked`): each tat that was
-- ahead of now (`before`) moves on by as much, and so do the starts still ahead; true if any did
local function hold(before, seconds)
  if seconds <= 0 or not waiting() then return false end
  for i = 1, count do
    if before[i] > now and before[i] + seconds > state[4 * i - 1] then
      raise(i, before[i] + seconds)
    end
    if state[4 * i] > now then state[4 * i] = state[4 * i] + seconds end
  end
  return true
end

local reply, changed = 0, false
if op == 'reserve' then
  -- the call goes once every limit and the pause let it, and is charged to each from then
  local ready = math.max(state[2], now)
  for i = 1, count do
    local start = math.max(state[4 * i - 1], now) + struct.unpack('<d', numbers, 8 * i + 1)
      - struct.unpack('<d', numbers, 8 * (count + i) + 1)
    if start > ready then ready = start end
  end
  local wait = ready - now
  if wait <= $rounding then wait = 0 end
  changed = wait <= param
  if changed then
    local slots = {wait, now}
    for i = 1, count do
      local amount = struct.unpack('<d', numbers, 8 * i + 1)
      state[4 * i - 1] = math.max(state[4 * i - 1], ready) + amount
      state[4 * i] = math.max(state[4 * i], ready)
      slots[i + 2] = ready + amount + state[4 * i + 1]
    end
    reply = struct.pack('<' .. string.rep('d', count + 2), unpack(slots))
  else
    reply = math.ceil(math.min(wait, 1e12) * 1000000)
  end
elseif op == 'shift' then
  local given = ARGV[4]
  local reserved_at = given and struct.unpack('<d', given)
  local before, debt = tats(), 0
  for i = 1, count do
    local change, tat = struct.unpack('<d', numbers, 8 * i + 1), state[4 * i - 1]
    if change > 0 then
      state[4 * i - 1] = math.max(tat, now) + change
      state[4 * i] = math.max(state[4 * i], now)
      debt = math.max(debt, change)
      changed = true
    elseif change < 0 and tat > now then
      if not given then
        state[4 * i + 1] = state[4 * i + 1] - change
      elseif state[4 * i + 2] <= reserved_at then
        local room = struct.unpack('<d', given, 8 * i + 1) - state[4 * i] - state[4 * i + 1]
        change = math.max(change, -math.max(room, 0))
      else
        change = 0
      end
      if change < 0 then
        state[4 * i - 1] = tat + change
        before[i] = tat + change
        changed = true
      end
    end
  end
  hold(before, debt)
elseif op == 'pause' then
  changed = now + param > state[2]
  if changed then state[2] = now + param end
  changed = hold(tats(), param) or changed
elseif op == 'floor' then
  local before, held = tats(), 0
  for i = 1, count do
    local tat = now + struct.unpack('<d', numbers, 8 * i + 1)
    if tat > state[4 * i - 1] then
      if waiting() and before[i] - struct.unpack('<d', numbers, 8 * (count + i) + 1) > now then
        held = math.max(held, tat - before[i])
      end
      raise(i, tat)
      changed = true
    end
  end
  hold(before, held)
else
  local values = {string.format('%.17g', now), string.format('%.17g', state[2])}
  for i = 1, count do values[i + 2] = string.format('%.17g', state[4 * i - 1]) end
  return values
end

if changed then
  local full_at, expires = math.max(now, state[2]), state[1]
  for base = 3, #state, 4 do full_at = math.max(full_at, state[base], state[base + 1]) end
  if full_at + $margin > expires then state[1] = 2 * full_at - now + 2 * $margin end
  local value = ids .. others .. struct.pack('<' .. string.rep('d', #state), unpack(state))
  redis.call('SET', state_key, value, 'KEEPTTL')
  if state[1] ~= expires then
    redis.call('PEXPIRE', state_key, math.min(math.ceil((state[1] - now) * 1000), 1e15))
  end
end
if not KEYS[2] then return reply end
local beats, alive = KEYS[2], 0
redis.call('HSET', beats, ARGV[4], now)
local all = redis.call('HGETALL', beats)
for i = 1, #all, 2 do
  if now - all[i + 1] > $stale then redis.call('HDEL', beats, all[i]) else alive = alive + 1 end
end
redis.call('PEXPIRE', beats, $stale_ms)
return {reply, alive}
"""
).substitute(
    rounding=repr(_ROUNDING),
    margin=1,
    stale=repr(3 * _HEARTBEAT_EVERY),
    stale_ms=int(3000 * _HEARTBEAT_EVERY),
)
"""The Lua script behind every decision; its header is the contract between it and the class."""

_OPS = (b"reserve", b"shift", b"pause", b"floor", b"read")


def _limit_id(limit: Limit) -> bytes:
    """The 8 bytes that name `limit` in the state: limiters that share a key share the limits of
    the same label, whatever others each has."""
    return hashlib.blake2b(str(limit).encode(), digest_size=8).digest()


class BackendUnavailable(ShieldError):
    """Redis did not answer and `on_backend_error="deny"`: no rate permit without it."""


_WAIT = struct.Struct("<d")
"""The wait at the head of a granted reservation's reply, before what its settlement sends back:
when it was made and where its slot ends on each limit (see `SCRIPT`)."""


class _Wire:
    """How the script calls of one set of limits are encoded, but for their numbers: made
    again only when a limit is learned or lapses (see `Limiter.clamp`)."""

    __slots__ = ("ids", "limits", "numbers", "prefixes", "settle_prefix", "zeros")

    def __init__(self, limits: tuple[Limit, ...], state_key: bytes, script: GuardedScript) -> None:
        self.limits = limits
        self.ids = b"".join(map(_limit_id, limits))
        self.numbers = struct.Struct(f"<{1 + 2 * len(limits)}d")
        # Each op's request but for its numbers, their header included (their size is fixed).
        numbers_header = b"$%d\r\n" % self.numbers.size
        self.prefixes = {
            op: script.request(1, (state_key, op, self.ids), 1) + numbers_header for op in _OPS
        }
        self.settle_prefix = script.request(1, (state_key, b"shift", self.ids), 2) + numbers_header
        self.zeros = (0.0,) * len(limits)


class _Held(Reservation):
    """A reservation and where it is held: on Redis (`share` None), with the `slots` its
    settlement sends back (the slots of the limits of its `wire`), or in memory at `share`."""

    __slots__ = ("share", "slots", "wire")

    def __init__(
        self,
        limiter: Limiter,
        ready_at: float,
        delay: float,
        increments: tuple[float, ...] | None,
        share: float | None,
        *,
        units: tuple[float, ...] | None = None,
        position: int = -1,
        slots: bytes = b"",
        wire: _Wire | None = None,
    ) -> None:
        limits = None if wire is None else wire.limits
        super().__init__(limiter, ready_at, delay, (), units, position, limits=limits)
        self._increments = increments  # None: granted without any limit, nothing to give back
        self.share = share
        self.slots = slots
        self.wire = wire


class RedisLimiter(Limiter):
    """A `Limiter` whose state lives on Redis, shared by every limiter with the same key.

    The key is `{prefix:name}`: its braces are a Redis Cluster hash tag, so the state
    (`{prefix:name}:rate`) and the fleet (`{prefix:name}:fleet`) of one key live on one node.
    `on_backend_error` is "local" (in memory at `local_share` of each limit, by default 1 / the
    number of limiters that sent this key a heartbeat lately), "allow" or "deny".
    `recovery_timeout` is how long Redis is left alone after a failure. The async methods use
    `aclient`, or run the sync ones in a thread without it. Clients from `from_url` fail fast;
    others should too (short timeouts, no retries), or a dead server holds each call for as long
    as they insist. The sync calls of a plain `redis.Redis` go out on a connection held out of its
    pool, not through its `execute_command`; a client whose `execute_command` is overridden (a
    subclass) or wrapped (instrumentation) is called through it as usual.

    Settling or cancelling a reservation gives back what it over-charged only as far as the
    calls charged since allow, as in memory; Redis keeps no history of those calls, only bounds
    on where their schedules end (see `SCRIPT`), so it may give back less, never more.

    `scale_rates` (adaptive pacing) cuts this process's rate, not the schedule on Redis, which
    every process shares, each with a cut of its own: that schedule stays in seconds at the
    limits' own rates, and a cut charges each unit 1/factor of its time there, a call going
    once the bucket holds its units. So no cut lets any process take more than the bucket
    holds, and a recovery moves no call already granted; unlike in memory, a cut process takes
    from a full bucket 1/factor of what its calls cost, and a reservation settled after a
    change of rate gives back its over-charge at the interval it was charged at.
    """

    __slots__ = (
        "_fleet",
        "_heartbeat_due",
        "_keys",
        "_local_share",
        "_member",
        "_on_backend_error",
        "on_event",
        "_script",
        "_sending",
        "_wire",
    )

    def __init__(
        self,
        limits: Iterable[Limit],
        *,
        client: redis.Redis,
        aclient: redis.asyncio.Redis | None = None,
        name: str = "",
        prefix: str = "rls",
        clock: Clock | None = None,
        on_backend_error: str = "local",
        local_share: float | None = None,
        recovery_timeout: float = 2.0,
    ) -> None:
        super().__init__(limits, clock=clock, name=name)
        check_options(prefix, on_backend_error, local_share, recovery_timeout)
        self.on_event: Listener | None = None
        """Told of the outages of Redis (a model key's: its registry's listeners)."""
        self._script = GuardedScript(
            client,
            SCRIPT,
            aclient=aclient,
            what=f"the rate limits of {name!r}",
            fallback=_WHILE_DOWN[on_backend_error],
            owner=self,
            clock=self._clock,
            recovery_timeout=recovery_timeout,
        )
        self._on_backend_error = on_backend_error
        self._local_share = None if local_share is None else float(local_share)
        self._keys = (fleet_key(prefix, name, "rate"), fleet_key(prefix, name, "fleet"))
        self._wire = _Wire(self.limits, self._keys[0], self._script)
        self._member = uuid.uuid4().hex[:16]
        self._heartbeat_due = -math.inf
        self._fleet = 1
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def local_share(self) -> float:
        """The share of each limit granted in memory while Redis is unavailable ("local")."""
        return self._local_share if self._local_share is not None else 1.0 / self._fleet

    # -- decisions -------------------------------------------------------------------------

    def try_acquire(self, cost: Cost = 1) -> bool:
        """Take `cost` now from every limit, or take nothing and return False. Never waits."""
        _, increments, call, _ = self._reserve_call(cost, 0.0)
        return self._taken(increments, self._script.run(call))

    def reserve(self, cost: Cost = 1, max_wait: float = math.inf) -> Reservation:
        """Commit `cost` on every limit if the wait for it is at most `max_wait` (see `Limiter`)."""
        units, increments, call, wire = self._reserve_call(cost, max_wait)
        reply = self._script.run(call)
        return self._granted(self._reserved(units, increments, max_wait, reply, wire), cost)

    def wait_time(self, cost: Cost = 1) -> float:
        """Seconds until `cost` could be taken on every limit (0.0 if now); reserves nothing."""
        units, increments, call, wire = self._reserve_call(cost, -1.0)  # -1: none is taken
        result = self._reserved(units, increments, -1.0, self._script.run(call), wire)
        return result if isinstance(result, float) else result.delay

    # Cancel, settle, refund, pause and clamp need no answer: inside a running event loop (the
    # async driver of a Shield) they are sent on `aclient` as a task, so the loop never blocks.

    def cancel(self, reservation: Reservation) -> None:
        """Give back what `reservation` charged, as far as the calls since allow; nothing if it
        was cancelled or settled."""
        for call in self._finish_calls(reservation, 0):
            self._send(call)

    def settle(self, reservation: Reservation, actual: Cost) -> None:
        """Replace the reserved cost by the `actual` one: refund the excess as far as the calls
        since allow, or charge the debt."""
        for call in self._finish_calls(reservation, actual):
            self._send(call)

    def refund(self, cost: Cost = 1) -> None:
        """Give back `cost` taken by `try_acquire`: on Redis, or in memory while it is away."""
        increments, call = self._refund_call(cost)
        self._send(call, lambda reply: self._refunded(increments, reply))

    def pause(self, seconds: float) -> None:
        """Let nobody sharing this key proceed before `seconds` from now (a Retry-After)."""
        self._send(self._pause_call(seconds))

    def _raise_tat(self, index: int, seconds: float) -> None:
        """`clamp`'s floor, for everyone sharing this key: on Redis, and in memory too (the
        fallback honours it, whether Redis fails now or later)."""
        super()._raise_tat(index, seconds)
        wire = self._wire
        floors = [-math.inf] * len(wire.limits)
        if index < len(floors):  # else the limit lapsed meanwhile
            floors[index] = seconds
            taus = self._taus if wire.limits is self.limits else ()  # whether a call waits on it
            self._send(self._args(b"floor", 0.0, floors, taus=taus, wire=wire))

    def _send(self, call: ScriptCall, then: Callable[[Any], None] | None = None) -> None:
        """Run `call` now, or as a task on `aclient` inside a running event loop; `then` gets
        the reply."""
        try:
            loop = asyncio.get_running_loop() if self._script.aclient is not None else None
        except RuntimeError:
            loop = None
        if loop is None:
            reply = self._script.run(call)
            if then is not None:
                then(reply)
            return

        async def send() -> None:
            reply = await self._script.arun(call)
            if then is not None:
                then(reply)

        task = loop.create_task(send())
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)

    # -- async twins: the same decisions over `aclient` ------------------------------------

    async def atry_acquire(self, cost: Cost = 1) -> bool:
        _, increments, call, _ = self._reserve_call(cost, 0.0)
        return self._taken(increments, await self._script.arun(call))

    async def areserve(self, cost: Cost = 1, max_wait: float = math.inf) -> Reservation:
        units, increments, call, wire = self._reserve_call(cost, max_wait)
        reply = await self._script.arun(call)
        return self._granted(self._reserved(units, increments, max_wait, reply, wire), cost)

    async def acancel(self, reservation: Reservation) -> None:
        for call in self._finish_calls(reservation, 0):
            await self._script.arun(call)

    async def asettle(self, reservation: Reservation, actual: Cost) -> None:
        for call in self._finish_calls(reservation, actual):
            await self._script.arun(call)

    async def arefund(self, cost: Cost = 1) -> None:
        increments, call = self._refund_call(cost)
        self._refunded(increments, await self._script.arun(call))

    async def apause(self, seconds: float) -> None:
        await self._script.arun(self._pause_call(seconds))

    async def aacquire(self, cost: Cost = 1, timeout: float | None = None) -> Reservation:
        """`acquire` for asyncio: awaits instead of sleeping; cancellation gives the tokens back."""
        reservation = await self.areserve(cost, _max_wait(timeout))
        if reservation.delay > 0.0:
            try:
                await self._clock.asleep(reservation.delay)
            except BaseException:
                await self.acancel(reservation)
                raise
        return reservation

    # -- observation -----------------------------------------------------------------------

    @property
    def paused_for(self) -> float:
        """Seconds left of the key's current pause (0.0 when none)."""
        return self._observe()[1]

    def snapshot(self) -> dict[str, object]:
        """Levels and pause as Redis sees them (or the local ones while it is unavailable)."""
        tokens, paused_for, on_redis = self._observe()
        return {
            "name": self.name,
            "levels": dict(zip(map(str, self.limits), tokens, strict=True)),
            "paused_for": paused_for,
            "redis_available": on_redis,
            "local_share": self.local_share,
        }

    def _tokens(self) -> list[float]:
        return self._observe()[0]

    def _observe(self) -> tuple[list[float], float, bool]:
        """Tokens per limit, pause left, and whether they come from Redis, in one call."""
        with self._lock:
            self._forget_learned_locked(self._monotonic())
            wire = self._wire
            capacities, intervals, factor = self._capacities, self._intervals, self._rate_factor
        reply = self._script.run(self._args(b"read", 0.0, wire.zeros, wire=wire))
        if reply is None:
            share = self.local_share
            return [share * tokens for tokens in super()._tokens()], super().paused_for, False
        now, pause, *tats = map(float, reply)
        tokens = [  # at the limits' own rates, as Redis keeps them (see `RedisLimiter`)
            capacity - (max(tat, now) - now) / (interval * factor)
            for capacity, interval, tat in zip(capacities, intervals, tats, strict=True)
        ]
        return tokens, max(0.0, pause - now), True

    # -- script arguments and replies, shared by the sync and the async decisions -----------

    def _args(
        self,
        op: bytes,
        param: float,
        amounts: Iterable[float],
        *,
        taus: tuple[float, ...] = (),
        member: bytes = b"",
        slots: bytes = b"",
        wire: _Wire | None = None,
    ) -> ScriptCall:
        """The script call of `op` on the limits of `wire` (those in force by default; see
        `SCRIPT`); only the numbers (and the `slots` of a reservation's settlement) are encoded
        anew. `taus` only matter to a reservation and a floor."""
        wire = wire or self._wire
        numbers = wire.numbers.pack(param, *amounts, *(taus or wire.zeros))
        if member:
            return self._script.call(self._keys, (op, wire.ids, numbers, member))
        if slots:
            words = (self._keys[0], op, wire.ids, numbers, slots)
            return 1, words, wire.settle_prefix + numbers + b"\r\n" + bulk(slots)
        return 1, (self._keys[0], op, wire.ids, numbers), wire.prefixes[op] + numbers + b"\r\n"

    def _reserve_call(
        self, cost: Cost, max_wait: float
    ) -> tuple[tuple[float, ...], tuple[float, ...], ScriptCall, _Wire]:
        """The units of `cost` on each limit, the seconds of schedule they take, the script
        call that reserves them (with a heartbeat every few seconds, from which the fleet size
        and so the local share are learnt), and the limits it is on."""
        if max_wait != max_wait:
            raise ValueError(f"max_wait must be a number of seconds, got {max_wait!r}")
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            units = self._amounts(cost)
            with self._lock:
                wire = self._wire
                if wire.limits is limits:
                    if self._rate_factor == 1.0:
                        increments = tuple(map(operator.mul, units, self._intervals))
                        taus = self._taus
                    else:
                        increments, taus = self._cut_charge_locked(units)
                    break
        member = b""
        if self._local_share is None:
            now = self._monotonic()
            if now >= self._heartbeat_due:
                self._heartbeat_due = now + _HEARTBEAT_EVERY
                member = f"{self._member}:{os.getpid()}".encode()  # a forked child: another
        call = self._args(b"reserve", max_wait, increments, taus=taus, member=member, wire=wire)
        return units, increments, call, wire

    def _cut_charge_locked(
        self, units: tuple[float, ...]
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The seconds `units` take on each limit's schedule while `scale_rates` cuts this
        process's rate, and the tolerance that lets them go once the bucket holds them: each
        unit takes 1/factor of an interval at the limit's own rate, T, and the call goes when
        tat + units * T - capacity * T <= now (see `RedisLimiter`)."""
        intervals, capacities, factor = self._intervals, self._capacities, self._rate_factor
        increments = tuple(map(operator.mul, units, intervals))
        taus = tuple(
            (capacity - unit) * interval * factor + increment
            for capacity, unit, interval, increment in zip(
                capacities, units, intervals, increments, strict=True
            )
        )
        return increments, taus

    def _reserved(
        self,
        units: tuple[float, ...],
        increments: tuple[float, ...],
        max_wait: float,
        reply: Any,
        wire: _Wire,
    ) -> Reservation | float:
        """The reservation granted (by Redis or the fallback), or the wait it was refused for."""
        if reply is None:
            return self._fallback(increments, max_wait, reserving=True)
        code = self._code(reply)
        if isinstance(code, int):
            return code / 1e6
        wait: float = _WAIT.unpack_from(code)[0]
        ready_at = self._monotonic() + wait
        slots = code[_WAIT.size :]
        return _Held(self, ready_at, wait, increments, None, units=units, slots=slots, wire=wire)

    def _taken(self, increments: tuple[float, ...], reply: Any) -> bool:
        """Whether `try_acquire` took its cost: on Redis, or by the fallback (`reply` None)."""
        if reply is None:
            return not isinstance(self._fallback(increments, 0.0, reserving=False), float)
        return not isinstance(self._code(reply), int)

    def _code(self, reply: Any) -> bytes | int:
        """A reservation's reply (see `SCRIPT`): granted (bytes) or the wait it was refused for
        (an int); a heartbeat's reply tells the fleet's size too."""
        code: bytes | int
        if type(reply) is list:
            code, self._fleet = reply
        else:
            code = reply
        return code

    def _fallback(
        self, increments: tuple[float, ...], max_wait: float, *, reserving: bool
    ) -> Reservation | float:
        """What `on_backend_error` makes of a reservation that Redis could not decide."""
        mode = self._on_backend_error
        if mode == "deny":
            error = self._script.error
            raise BackendUnavailable(
                f"Redis is unavailable for these rate limits ({type(error).__name__}: {error})",
                retry_after=self._script.retry_after,
                key=self.name,
                cause=error,
            )
        if mode == "allow":
            return _Held(self, self._monotonic(), 0.0, None, None)
        share = self.local_share
        scaled = tuple(increment / share for increment in increments)
        now, wait, position = self._take(scaled, max_wait, reserving=reserving)
        if wait > max_wait:
            return wait
        return _Held(self, now + wait, wait, scaled, share, position=position)

    def _granted(self, result: Reservation | float, cost: Cost) -> Reservation:
        """The reservation made, keeping the `cost` asked for (see `Limiter.settle`), or the
        refusal of a wait too long."""
        if isinstance(result, float):
            raise self._refusal(result)
        result._cost = cost
        return result

    def _finish_calls(self, reservation: Reservation, actual: Cost) -> tuple[ScriptCall, ...]:
        """Settle `reservation` at the `actual` cost once: in memory if it is held there, else
        the script calls that settle it on Redis (none when there is nothing to do), on the
        limits it was made on (nothing moves on one that lapsed since). What it over-charged is
        given back in the seconds it was charged at (see `_settlement`), only as far as the
        calls charged since allow (see `SCRIPT`). A cost by unit is compared unit by unit (see
        `Limiter.settle`): the units that cost less come back so bounded, in a first call, and
        those that cost more are a debt, in a second."""
        if not isinstance(reservation, _Held) or reservation._limiter is not self:
            raise ValueError(f"{reservation!r} was not made by {self!r}")
        share = reservation.share
        if share is not None:
            self._finish(reservation, actual, 1.0 / share)
            return ()
        gained = _gained(reservation._cost, actual)
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            seconds = self._increments(actual, name="actual", check_capacity=False)
            gains = None if gained is None else self._increments(gained, check_capacity=False)
            with self._lock:
                if self.limits is limits:
                    intervals = self._intervals
                    reserved = reservation._increments
                    reservation._increments = None
                    break
        units, wire = reservation._units, reservation.wire
        if reserved is None or units is None or wire is None:  # settled, or without a limit
            return ()
        index = {limit: i for i, limit in enumerate(limits)}
        places = [index.get(limit) for limit in wire.limits]
        # The units that cost less, as if the others cost what was reserved; then the others.
        owed = gains if gains is not None else (0.0,) * len(seconds)
        given = [
            0.0 if i is None else _settlement(charged, unit, seconds[i] - owed[i], intervals[i])
            for i, charged, unit in zip(places, reserved, units, strict=True)
        ]
        settle = self._args(b"shift", 0.0, given, slots=reservation.slots, wire=wire)
        if gains is None:
            return (settle,)
        debts = [0.0 if i is None else gains[i] for i in places]
        return settle, self._args(b"shift", 0.0, debts, wire=wire)

    def _refund_call(self, cost: Cost) -> tuple[tuple[float, ...], ScriptCall]:
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            increments = self._increments(cost, name="refund", check_capacity=False)
            wire = self._wire  # made last when the limits change: then theirs
            if wire.limits is limits and self.limits is limits:
                negated = [-increment for increment in increments]
                return increments, self._args(b"shift", 0.0, negated, wire=wire)

    def _refunded(self, increments: tuple[float, ...], reply: Any) -> None:
        """A refund Redis did not take goes to memory, where "local" took the cost meanwhile."""
        if reply is None and self._on_backend_error == "local":
            share = self.local_share
            with self._lock:
                self._shift_locked([-increment / share for increment in increments])

    def _pause_call(self, seconds: float) -> ScriptCall:
        """Pause in memory too (the fallback honours it), and the script call for Redis."""
        seconds = _amount(seconds, "seconds")
        super().pause(seconds)
        wire = self._wire
        return self._args(b"pause", seconds, wire.zeros, wire=wire)

    def _relaid_locked(self) -> None:
        self._wire = _Wire(self.limits, self._keys[0], self._script)


def _settlement(charged: float, units: float, actual: float, interval: float) -> float:
    """The seconds a settlement moves a limit's schedule on Redis by: a debt at the `interval`
    in force now (a new charge), an over-charge at the interval `charged` was taken at, since
    no change of rate rescales the schedule there (in memory one does, so units both ways)."""
    debt = actual - units * interval
    return debt if debt >= 0.0 else (actual / interval - units) * (charged / units)


def check_options(
    prefix: str, on_backend_error: str, local_share: float | None, recovery_timeout: float
) -> None:
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(f"prefix must be a non-empty string, got {prefix!r}")
    if on_backend_error not in _MODES:
        raise ConfigError(f"on_backend_error must be one of {_MODES}, got {on_backend_error!r}")
    if local_share is not None and not (
        isinstance(local_share, (int, float))
        and not isinstance(local_share, bool)
        and 0.0 < local_share <= 1.0
    ):
        raise ConfigError(f"local_share must be a number in (0, 1] or None, got {local_share!r}")
    _check_positive("recovery_timeout", recovery_timeout)
