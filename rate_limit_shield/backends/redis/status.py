"""The fleet's live state on Redis, per model key, read without changing it: what
`rate-limit-shield status` shows.

It reads the keys the backend writes for each model (see `fleet_key`): `{prefix:name}:rate`,
the limiter's schedules (laid out as `SCRIPT` says), `:fleet`, the heartbeats of the limiters
that use it, `:breaker` and `:probes`, a shared breaker's state and probe leases
(`BREAKER_SCRIPT`), and `:budget`, a shared retry budget's ring of seconds (`BUDGET_SCRIPT`).
Every time is the Redis server's, as the scripts' are. It runs no script and writes nothing: a
SCAN for the model keys, then one pipeline of plain reads.

What Redis holds names each rate limit by an 8-byte id (see `_limit_id`), not by its amount:
the tokens left in a bucket can be told only given the model's limits (`KeyPolicy`), from the
same configuration the fleet runs. Breakers and budgets that are not `shared` live in each
process, not here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import redis

from ...limiter import Limit
from ...retry import RetryBudget
from .limiter import _HEARTBEAT_EVERY, _limit_id

__all__ = [
    "BreakerStatus", "BudgetStatus", "FleetStatus", "KeyPolicy", "LimitStatus", "ModelStatus",
    "as_plain", "read_fleet",
]  # fmt: skip

_PARTS = ("rate", "fleet", "breaker", "probes", "budget")
_STALE = 3 * _HEARTBEAT_EVERY
"""Seconds after its last heartbeat that a limiter has left the fleet, as the script counts."""
_DEFAULT_BUDGET = RetryBudget()
"""The window a shared budget is read over when no policy tells its own."""
_STATE_HEAD = 16  # the key's expiry and its pause, two doubles after the ids
_PER_LIMIT = 40  # an 8-byte id and four doubles


class KeyPolicy(NamedTuple):
    """What a model's policy tells about its state on Redis: its rate limits (each named there
    by an id only), and its retry budget if that is the fleet's (`shared`)."""

    limits: tuple[Limit, ...] = ()
    shared_breaker: bool = False
    shared_budget: RetryBudget | None = None


class LimitStatus(NamedTuple):
    """One rate limit of a key. `limit` is its label, or `unknown <id>` when no policy names
    it; then `left` and `capacity` are None. `left` is negative while the bucket is in debt."""

    limit: str
    left: float | None
    capacity: float | None
    full_in: float


class BreakerStatus(NamedTuple):
    """A shared breaker: `state` closed, open, half_open or forced_open; `open_until` the
    server's epoch seconds (None unless open); `probes` the probe leases in flight."""

    state: str
    open_for: float
    open_until: float | None
    probes: int
    probe_successes: int


class BudgetStatus(NamedTuple):
    """A shared retry budget over its last `window` seconds; `retries_left` is None when no
    policy tells its ratio and floor."""

    calls: int
    retries: int
    retries_left: float | None
    window: float


class ModelStatus(NamedTuple):
    """One model key: the limiters that sent a heartbeat lately, the pause left, its limits,
    and its shared breaker and budget (None where the fleet has none)."""

    model: str
    processes: int
    paused_for: float
    limits: tuple[LimitStatus, ...]
    breaker: BreakerStatus | None
    budget: BudgetStatus | None


class FleetStatus(NamedTuple):
    """Every model key found on Redis, by name, at the server's time `now` (epoch seconds)."""

    now: float
    models: tuple[ModelStatus, ...]


def read_fleet(
    client: redis.Redis,
    *,
    prefix: str = "rls",
    policy_of: Callable[[str], KeyPolicy] | None = None,
    models: Iterable[str] | None = None,
) -> FleetStatus:
    """The state of `models` (default: every model key under `prefix`), read with `client`
    (which must not decode responses); `policy_of(model)` tells each model's limits and what
    it shares."""
    names = sorted(set(models) if models is not None else _model_names(client, prefix))
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for name in names:
        keys = [f"{{{prefix}:{name}}}:{part}" for part in _PARTS]
        pipe.get(keys[0])
        pipe.hgetall(keys[1])
        pipe.hgetall(keys[2])
        pipe.zrange(keys[3], 0, -1, withscores=True)
        pipe.hgetall(keys[4])
    replies = pipe.execute()
    seconds, micros = replies[0]
    now = int(seconds) + int(micros) / 1e6
    found = []
    for at, name in enumerate(names):
        rate, fleet, breaker, probes, budget = replies[1 + 5 * at : 6 + 5 * at]
        policy = policy_of(name) if policy_of is not None else KeyPolicy()
        paused_until, schedules = _schedules(rate)
        found.append(
            ModelStatus(
                model=name,
                processes=sum(now - float(beat) <= _STALE for beat in fleet.values()),
                paused_for=max(0.0, paused_until - now),
                limits=_limits(schedules, policy.limits, now),
                breaker=_breaker(_text(breaker), probes, policy.shared_breaker, now),
                budget=_budget(_text(budget), policy.shared_budget, now),
            )
        )
    return FleetStatus(now, tuple(found))


def _model_names(client: redis.Redis, prefix: str) -> set[str]:
    """The models with any key under `prefix`: `{prefix:name}:part`."""
    head = "{" + prefix + ":"
    pattern = _glob_escape(head) + "*}:*"
    names = set()
    for key in client.scan_iter(match=pattern, count=1000):
        name, _, part = key.decode(errors="replace")[len(head) :].rpartition("}:")
        if part in _PARTS and name:
            names.add(name)
    return names


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _text(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in fields.items()}


def _schedules(value: bytes | None) -> tuple[float, dict[bytes, float]]:
    """The pause (until, in server seconds) and each limit's tat by id, from the rate state; a
    value of another shape is none, as the script takes it."""
    if not value or len(value) < _STATE_HEAD or (len(value) - _STATE_HEAD) % _PER_LIMIT:
        return -math.inf, {}
    size = (len(value) - _STATE_HEAD) // _PER_LIMIT
    numbers = struct.unpack_from(f"<{2 + 4 * size}d", value, 8 * size)
    ids = [value[8 * at : 8 * at + 8] for at in range(size)]
    return numbers[1], {id_: numbers[2 + 4 * at] for at, id_ in enumerate(ids)}


def _limits(
    schedules: dict[bytes, float], limits: Iterable[Limit], now: float
) -> tuple[LimitStatus, ...]:
    """The policy's limits in its order (full when Redis has no schedule for one), then those
    on Redis that it does not name (another configuration's)."""
    known = {_limit_id(limit): limit for limit in limits}
    found = []
    for id_, limit in known.items():
        ahead = max(schedules.get(id_, -math.inf) - now, 0.0)
        left = limit.capacity - ahead / (limit.per_seconds / limit.amount)
        found.append(LimitStatus(str(limit), left, limit.capacity, ahead))
    for id_, tat in schedules.items():
        if id_ not in known:
            found.append(LimitStatus(f"unknown {id_.hex()}", None, None, max(tat - now, 0.0)))
    return tuple(found)


def _breaker(
    state: dict[str, str], probes: list[tuple[bytes, float]], shared: bool, now: float
) -> BreakerStatus | None:
    if "open_until" not in state:
        return BreakerStatus("closed", 0.0, None, 0, 0) if shared else None
    until = float(state["open_until"])
    in_flight = sum(expires > now for _, expires in probes)
    successes = int(state.get("successes", 0))
    if state.get("forced") == "1":
        return BreakerStatus("forced_open", math.inf, None, in_flight, successes)
    if until > now:
        return BreakerStatus("open", until - now, until, in_flight, successes)
    return BreakerStatus("half_open", 0.0, None, in_flight, successes)


def _budget(
    ring: dict[str, str], budget: RetryBudget | None, now: float
) -> BudgetStatus | None:
    if not ring and budget is None:
        return None
    window = (budget or _DEFAULT_BUDGET).window
    second = int(now)
    calls = retries = 0
    for field, stamp in ring.items():
        if field.startswith("s") and second - int(stamp) < window:
            slot = field[1:]
            calls += int(ring.get("c" + slot, 0))
            retries += int(ring.get("r" + slot, 0))
    left = None if budget is None else max(0.0, budget.allowed(calls) - retries)
    return BudgetStatus(calls, retries, left, window)


def as_plain(value: Any) -> Any:
    """A status as JSON-ready dicts and lists (infinity as None: JSON has none)."""
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {name: as_plain(item) for name, item in value._asdict().items()}
    if isinstance(value, tuple):
        return [as_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
