"""What the shield did, for logs, metrics and tests.

A listener is any callable taking an `Event`; it is called inline, in the thread (or task) of
the call, after every decision and outside every lock. So a listener must not block: an
exporter that does slow work (a network push) hands the event to a queue of its own. One that
raises is logged and never breaks a call.

Every event is also logged, with no set-up beyond `logging`'s own, on the `rate_limit_shield`
loggers: `rate_limit_shield.shield` (calls: retries, give-ups, refusals, throttles, fallbacks at
INFO or WARNING; each success and each wait for a permit at DEBUG), `rate_limit_shield.breaker`
(transitions: an opening at WARNING) and `rate_limit_shield.backend` (a shared backend's
outage at WARNING and recovery). A record's message is one line; its `rls_*` attributes are
the event's fields for structured handlers (`rls_error` in words: see `_redact`).

Nobody listening costs nothing: a source asks `heard(listener, kind)` before it builds an
Event, which is a flag of the `Listeners` and `logging`'s cached level check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol, runtime_checkable

from ._redact import describe
from .outcome import Outcome

__all__ = [
    "Event",
    "Listener",
    "Listeners",
    "Reporter",
    "heard",
    "report",
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
calls_logger = logging.getLogger("rate_limit_shield.shield")
breaker_logger = logging.getLogger("rate_limit_shield.breaker")
backend_logger = logging.getLogger("rate_limit_shield.backend")

SUCCEEDED = "succeeded"
"""An attempt succeeded; `duration` since the first attempt began."""
WAITED = "waited"
"""A call waited `delay` seconds for a rate permit, `limit` bound it."""
RETRY = "retry"
"""An attempt failed (`outcome`, `error`, `reason`); another follows in `delay`."""
GAVE_UP = "gave_up"
"""An attempt failed and no other follows (`reason`); `error` is raised."""
REJECTED = "rejected"
"""The shield refused the call (`error`: RateLimited, CircuitOpen, ...)."""
THROTTLED = "throttled"
"""The server throttled: the key pauses `delay` s (`reason`: the hint)."""
BREAKER = "breaker"
"""The key's breaker went `transition` (old, new state), `reason` why."""
FALLBACK = "fallback"
"""`key` refused the call (`error`); it is made again with `fallback`."""
FELL_BACK = "fell_back"
"""`fallback` answered the call made for `key`."""
BACKEND_DOWN = "backend_down"
"""The shared backend failed (`error`); `reason`: what runs instead."""
BACKEND_UP = "backend_up"
"""The shared backend answers again after `delay` s down."""
UNSETTLED = "unsettled"
"""`key` reserves token estimates that no usage ever settles (`reason`)."""


class Event(NamedTuple):
    """One decision of the shield. `key` is the model key (or the shield's name); `attempt` the
    call's attempt it is about, 0 for what is about no attempt (a breaker's transition, a
    fallback, an outage); the other fields are None where they do not apply to the `kind`."""

    kind: str
    """What happened: one of the kinds above (`SUCCEEDED`, `RETRY`, `THROTTLED`, ...)."""
    key: str
    """The model key (or the shield's name) the decision is about."""
    attempt: int
    """The call's attempt it is about, from 1; 0 for what is about no attempt."""
    delay: float | None = None
    """Seconds: waited (WAITED), before the next attempt (RETRY), of the key's pause
    (THROTTLED), of an opening (BREAKER to open; None when forced), the server's hint after a
    refusal (REJECTED, FALLBACK), of an outage (BACKEND_UP)."""
    outcome: Outcome | None = None
    """How the attempt was classified (RETRY, GAVE_UP, SUCCEEDED)."""
    error: BaseException | None = None
    """The exception itself, for listeners; the logs say only `_redact.describe(error)`."""
    fallback: str | None = None
    """The model the call is made again with (FALLBACK), or that answered it (FELL_BACK)."""
    duration: float | None = None
    """Seconds the call took, first attempt to outcome (SUCCEEDED, GAVE_UP); None when nobody
    listened as the call began (a call is timed only when someone listens)."""
    limit: str | None = None
    """The limit that bound a wait (WAITED), as `str(Limit)` (e.g. "500/60s requests"); None
    when a pause held it or the limiter cannot tell (one on Redis)."""
    reason: str | None = None
    """Why, in words: the failure retried (RETRY), why no attempt follows (GAVE_UP), the
    refusal (REJECTED), the hint a pause came from ("retry-after", "reset header", "server
    message", "backoff": THROTTLED), what moved a breaker (BREAKER), the fallbacks tried
    (FELL_BACK), what runs instead of the backend (BACKEND_DOWN) or comes back (BACKEND_UP),
    the limit an unsettled estimate binds (UNSETTLED)."""
    transition: tuple[str, str] | None = None
    """A breaker's (old, new) state values (BREAKER)."""


Listener = Callable[[Event], None]
"""What `add_listener` and `on_event=` take: any callable of one `Event`."""


@runtime_checkable
class Reporter(Protocol):
    """A part that reports events of its own (a breaker's transitions, a shared backend's
    outages) to `on_event`, which a model key sets to its registry's listeners."""

    name: str
    on_event: Listener | None


class Listeners:
    """A registry's listeners, called in turn: the one listener every key's shield holds, so
    that adding or removing a listener reaches every key without rebuilding any. `listening`
    is False while there is none, for `heard` to read."""

    __slots__ = ("_all", "listening")

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._all: tuple[Listener, ...] = tuple(listeners)
        self.listening = bool(self._all)

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
        self.listening = bool(listeners)

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


def heard(listener: Listener | None, kind: str) -> bool:
    """Whether an event of `kind` reaches anyone: `listener` (a `Listeners` only while it holds
    one), or its logger at the highest level it is logged at. Cheap: ask it before building an
    Event."""
    if listener is not None and (type(listener) is not Listeners or listener.listening):
        return True
    log, level = _LOGS[kind]
    return log.isEnabledFor(level)


def report(listener: Listener | None, event: Event) -> None:
    """Tell `listener` (if any) and the log of `event`."""
    if listener is not None:
        emit(listener, event)
    log, level = _LOGS[event.kind]
    if _mild(event):
        level = logging.INFO
    if log.isEnabledFor(level):
        log.log(level, _message(event), extra=_fields(event))


_LOGS: dict[str, tuple[logging.Logger, int]] = {
    SUCCEEDED: (calls_logger, logging.DEBUG),
    WAITED: (calls_logger, logging.DEBUG),
    RETRY: (calls_logger, logging.INFO),
    GAVE_UP: (calls_logger, logging.WARNING),
    REJECTED: (calls_logger, logging.INFO),
    THROTTLED: (calls_logger, logging.INFO),
    FALLBACK: (calls_logger, logging.INFO),
    FELL_BACK: (calls_logger, logging.INFO),
    UNSETTLED: (calls_logger, logging.WARNING),
    BREAKER: (breaker_logger, logging.WARNING),
    BACKEND_DOWN: (backend_logger, logging.WARNING),
    BACKEND_UP: (backend_logger, logging.INFO),
}
"""Where and at which level each kind is logged: the highest, lowered to INFO by `_mild`."""

SUCCEEDED_LOG = _LOGS[SUCCEEDED]
"""Where and at which level a success is logged, for a hot path that asks `heard` inline."""


def _mild(event: Event) -> bool:
    """A transition other than an opening; giving up on an error not worth retrying (a bad
    request: the caller's to fix, no sign of trouble at the provider)."""
    if event.kind == BREAKER:
        return event.transition is None or event.transition[1] != "open"
    return event.kind == GAVE_UP and event.outcome is Outcome.IGNORED


def _seconds(value: float | None) -> str:
    if value is None:
        return "?s"
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def _attempts(count: int) -> str:
    return f"{count} attempt{'s' if count != 1 else ''}"


def _message(event: Event) -> str:
    """The one line an event is logged as: the key, what happened, the numbers."""
    kind, key = event.kind, event.key or "?"
    error = "" if event.error is None else describe(event.error)
    took = "" if event.duration is None else f" in {_seconds(event.duration)}"
    outcome = event.outcome.value if event.outcome is not None else "failed"
    if kind == SUCCEEDED:
        return f"[{key}] succeeded on attempt {event.attempt}{took}"
    if kind == WAITED:
        bound = f", bound by {event.limit}" if event.limit is not None else ""
        return f"[{key}] waited {_seconds(event.delay)} for a rate permit{bound}"
    if kind == RETRY:
        return (
            f"[{key}] attempt {event.attempt} {outcome}: {event.reason}; "
            f"retrying in {_seconds(event.delay)}"
        )
    if kind == GAVE_UP:
        raised = f": {error}" if error else ""
        return f"[{key}] gave up after {_attempts(event.attempt)}{took} ({event.reason}){raised}"
    if kind == REJECTED:
        return f"[{key}] refused attempt {event.attempt}: {error}"
    if kind == THROTTLED:
        if event.delay is None:
            return f"[{key}] throttled by the server with no hint: backing off"
        return f"[{key}] throttled by the server for {_seconds(event.delay)} ({event.reason})"
    if kind == BREAKER:
        old, new = event.transition or ("?", "?")
        lasting = f" for {_seconds(event.delay)}" if event.delay is not None else ""
        return f"[{key}] circuit breaker {old} -> {new}{lasting}: {event.reason}"
    if kind == FALLBACK:
        return f"[{key}] could not answer ({error}); falling back to {event.fallback}"
    if kind == FELL_BACK:
        return f"[{key}] {event.fallback} answered the call made for {key} ({event.reason})"
    if kind == BACKEND_DOWN:
        return f"[{key}] Redis is unavailable ({error}); {event.reason} until it answers again"
    if kind == BACKEND_UP:
        return f"[{key}] Redis answers again for {event.reason} after {_seconds(event.delay)}"
    if kind == UNSETTLED:
        return (
            f"[{key}] no result reports its usage, so each call's token estimate is never "
            f"settled: {event.reason}. Return the usage with the result (or read it with "
            "@shielded(usage=...)), pass max_tokens= to size the estimate, or give "
            "@shielded(cost=...) what a call really costs."
        )
    return f"[{key}] {kind}"


def _fields(event: Event) -> dict[str, object]:
    """The event as a log record's `rls_*` attributes: plain values, the error in words."""
    return {
        "rls_kind": event.kind,
        "rls_key": event.key,
        "rls_attempt": event.attempt,
        "rls_delay": event.delay,
        "rls_outcome": None if event.outcome is None else event.outcome.value,
        "rls_error": None if event.error is None else describe(event.error),
        "rls_fallback": event.fallback,
        "rls_duration": event.duration,
        "rls_limit": event.limit,
        "rls_reason": event.reason,
        "rls_transition": event.transition,
    }
