"""What the shield tells its user once, never on every call: a result it could not read, token
estimates that no result settles (the shield's UNSETTLED event says it), a sync call about to
block a running event loop.

Each is remembered by what it is about (a key, a function) in one bounded cache: a program that
makes names on the fly grows no memory, and past the bound is told of each again, once.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Iterable, Mapping

from ._bounded import remember
from .events import logger
from .limiter import UNITS, Cost, Limit, _by_unit, _format
from .policy import _SHORTHANDS

__all__ = ["unreadable", "unsettled", "blocking"]

_TOLD: dict[tuple[str, object], None] = {}
"""(topic, what it is about) already told of."""

_SHORTHAND = {(float(period), unit): key for key, period, unit in _SHORTHANDS}
_OURS = ("rate_limit_shield", "wrapt")
"""Packages whose frames a warning skips, to point at the code that made the call."""


def _first_time(topic: str, subject: object) -> bool:
    """Whether `topic` is new for `subject`; it is remembered from now on."""
    told = (topic, subject)
    if told in _TOLD:
        return False
    remember(_TOLD, told, None)
    return True


def unreadable(key: str, reading: str, subject: object) -> None:
    """Log, once per key, reading and class, that reading a result failed (with the error)."""
    if _first_time(reading, (key, type(subject))):
        logger.warning(
            "rate_limit_shield: [%s] could not read the %s of a %s; the call's result is returned "
            "as it is and the reserved estimate is kept",
            key or "?",
            reading,
            type(subject).__name__,
            exc_info=True,
        )


def unsettled(key: str, limits: Iterable[Limit], cost: Cost) -> str | None:
    """A call charged `cost` succeeded with no usage to settle it by: once per key whose calls
    reserve tokens, which limit binds at that estimate, in words, for the shield's UNSETTLED
    event (logged with how to settle it); None otherwise."""
    if ("unsettled", key) in _TOLD or not _takes_tokens(cost):
        return None
    binding = _binding_at(tuple(limits), cost)
    if binding is None or not _first_time("unsettled", key):
        return None
    return binding


def _takes_tokens(cost: Cost) -> bool:
    """Whether `cost` takes any tokens: cheap, since calls that take none are told of nothing."""
    if type(cost) is dict or isinstance(cost, Mapping):
        return bool(cost.get("output_tokens") or cost.get("input_tokens") or cost.get("tokens"))
    return bool(cost)


def _binding_at(limits: tuple[Limit, ...], cost: Cost) -> str | None:
    """Which limit binds calls that each take `cost` for good, in words; None when no token
    limit takes any of it."""
    units = _by_unit("cost", cost) if isinstance(cost, Mapping) else dict.fromkeys(UNITS, cost)
    calls = {limit: limit.rate * 60.0 / units[limit.unit] for limit in limits if units[limit.unit]}
    tokens = [limit for limit in calls if limit.unit != "requests"]
    if not tokens:
        return None
    token = min(tokens, key=calls.__getitem__)
    each = f"{_format(units[token.unit])} {token.unit.replace('_', ' ')}"
    said = f"{_label(token)} at {each} a call allows {calls[token]:.1f} calls/min"
    requests = [limit for limit in calls if limit.unit == "requests"]
    if not requests:
        return said
    request = min(requests, key=calls.__getitem__)
    relation = "below" if calls[token] < calls[request] else "not below"
    return f"{said}, {relation} {_label(request)}"


def _label(limit: Limit) -> str:
    """A limit as its policy key says it ("otpm 8000"), or in full when no key does."""
    key = _SHORTHAND.get((limit.per_seconds, limit.unit))
    if key is None or limit.burst is not None:
        return str(limit)
    return f"{key} {_format(limit.amount)}"


def blocking(fn: object, seconds: float, waiting_for: str) -> None:
    """Warn, once per function, that its sync call is about to sleep `seconds` for
    `waiting_for` inside a running event loop, which stops every task of the loop meanwhile."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    name = _name_of(fn)
    if _first_time("blocking", name):
        warnings.warn(
            f"rate_limit_shield: the sync call of {name} blocks the running event loop for "
            f"{seconds:.3g}s, waiting for {waiting_for}; shield an `async def` function instead, "
            f"or `await shield.acall(...)`, so that the wait lets the loop run",
            RuntimeWarning,
            stacklevel=_outside_us(),
        )


def _name_of(fn: object) -> str:
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not isinstance(qualname, str):
        return repr(fn)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


def _outside_us() -> int:
    """The `stacklevel`, for a warning issued by our caller, of the first frame outside this
    package and wrapt: the code that made the call."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and _package(frame.f_globals.get("__name__")) in _OURS:
        frame = frame.f_back
        level += 1
    return level


def _package(module: object) -> str:
    return module.partition(".")[0] if isinstance(module, str) else ""
