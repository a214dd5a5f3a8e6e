"""What the shield did, for logs, metrics and tests.

A listener is any callable taking an `Event`; the shield calls it synchronously, after every
decision and outside every lock. With no listener, emitting costs one comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .outcome import Outcome

__all__ = [
    "Event",
    "Listener",
    "Listeners",
    "SUCCEEDED",
    "WAITED",
    "RETRY",
    "GAVE_UP",
    "REJECTED",
    "THROTTLED",
    "BREAKER",
    "FALLBACK",
    "FELL_BACK",
    "BACKEND_DOWN",
    "BACKEND_UP",
    "UNSETTLED",
]

logger = logging.getLogger("rate_limit_shield")

SUCCEEDED = "succeeded"  # an attempt succeeded (`attempt` > 1: after retries); `duration`
WAITED = "waited"  # a call waited `delay` seconds for a rate permit, `limit` bound it
RETRY = "retry"  # an attempt failed (`outcome`, `error`) and another follows after `delay`
GAVE_UP = "gave_up"  # an attempt failed and no other follows; `error` is what is raised
REJECTED = "rejected"  # the shield refused the call (`error`: RateLimited, CircuitOpen, ...)
THROTTLED = "throttled"  # the server throttled: the key pauses for `delay` s (`reason`: the hint)
BREAKER = "breaker"  # the key's breaker went `transition` (old, new state), `reason` why
FALLBACK = "fallback"  # `key` refused the call (`error`); it is made again with `fallback`
FELL_BACK = "fell_back"  # `fallback` answered the call made for `key`
BACKEND_DOWN = "backend_down"  # the shared backend failed (`error`); `reason`: what runs instead
BACKEND_UP = "backend_up"  # the shared backend answers again after `delay` s down
UNSETTLED = "unsettled"  # `key` reserves token estimates that no usage ever settles


class Event(NamedTuple):
    """One decision of the shield. `key` is the model key (or the shield's name); the other
    fields are None where they do not apply to the `kind`."""

    kind: str
    key: str
    attempt: int
    delay: float | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    fallback: str | None = None
    duration: float | None = None
    """Seconds the call took, first attempt to outcome (SUCCEEDED, GAVE_UP)."""
    limit: str | None = None
    """The limit that bound a wait or a refusal, as `str(Limit)` (e.g. "500/60s requests")."""
    reason: str | None = None
    """Why, in words: the hint a pause came from, what tripped a breaker."""
    transition: tuple[str, str] | None = None
    """A breaker's (old, new) state values (BREAKER)."""


Listener = Callable[[Event], None]


class Listeners:
    """A registry's listeners, called in turn: the one listener every key's shield holds, so
    that adding or removing a listener reaches every key without rebuilding any."""

    __slots__ = ("_all",)

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._all: tuple[Listener, ...] = tuple(listeners)

    @property
    def all(self) -> tuple[Listener, ...]:
        return self._all

    def add(self, listener: Listener) -> None:
        self.replace(None, listener)

    def remove(self, listener: Listener) -> None:
        """Remove `listener` (its first occurrence, by equality); one never added is ignored."""
        self.replace(listener, None)

    def replace(self, old: Listener | None, new: Listener | None) -> None:
        """Swap `old` for `new` in place (either may be None: only add, or only remove)."""
        listeners = list(self._all)
        if old is not None and old in listeners:
            at = listeners.index(old)
            if new is None:
                del listeners[at]
            else:
                listeners[at] = new
        elif new is not None:
            listeners.append(new)
        self._all = tuple(listeners)

    def __call__(self, event: Event) -> None:
        for listener in self._all:
            emit(listener, event)

    def __repr__(self) -> str:
        return f"Listeners({list(self._all)!r})"


def emit(listener: Listener, event: Event) -> None:
    """Call a listener; a listener that raises is logged and never breaks a call."""
    try:
        listener(event)
    except Exception:
        logger.exception("rate_limit_shield: event listener %r raised", listener)
