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
    "RETRY",
    "GAVE_UP",
    "REJECTED",
    "THROTTLED",
    "SUCCEEDED",
    "FALLBACK",
    "FELL_BACK",
    "UNSETTLED",
]

logger = logging.getLogger("rate_limit_shield")

RETRY = "retry"  # an attempt failed and another follows after `delay`
GAVE_UP = "gave_up"  # an attempt failed and no other follows; `error` is what is raised
REJECTED = "rejected"  # the shield refused the call (rate limit, open circuit, full bulkhead)
THROTTLED = "throttled"  # the server throttled: the key pauses for `delay` seconds
SUCCEEDED = "succeeded"  # an attempt succeeded after earlier attempts failed
FALLBACK = "fallback"  # `key` refused the call (`error`); it is made again with `fallback`
FELL_BACK = "fell_back"  # `fallback` answered the call made for `key`
UNSETTLED = "unsettled"  # `key` reserves token estimates that no usage ever settles


class Event(NamedTuple):
    kind: str
    key: str
    attempt: int
    delay: float | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    fallback: str | None = None


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
