"""The exceptions the library raises itself.

Every refusal is a `ShieldError` carrying `retry_after` (seconds, or None when unknown) and,
where there is one, the exception that caused it, so that callers can back off precisely.
"""

from __future__ import annotations

import contextlib
import sys

__all__ = [
    "ShieldError",
    "RateLimited",
    "CircuitOpen",
    "BulkheadFull",
    "QuotaExhausted",
    "CostTooLarge",
    "ConfigError",
]


class ShieldError(Exception):
    """Base class of every error the shield raises instead of calling (or re-calling) a function."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        key: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        """What was refused and why, without the key or the hint that `str()` adds."""
        self.retry_after = retry_after
        """Seconds after which trying again makes sense; None when nobody can tell."""
        self.key = key
        """The model key (or the shield's name) that refused, if any."""
        self.cause = cause
        """The exception that led to the refusal, if any (also its `__cause__`)."""
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        where = f"[{self.key}] " if self.key else ""
        hint = f" (retry after {self.retry_after:.3f}s)" if self.retry_after is not None else ""
        return f"{where}{self.message}{hint}"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.retry_after, self.key))


def _rebuild(
    cls: type[ShieldError], message: str, retry_after: float | None, key: str | None
) -> ShieldError:
    return cls(message, retry_after=retry_after, key=key)


class RateLimited(ShieldError):
    """No rate permit within the allowed wait, or the server asked for a longer pause."""


class CircuitOpen(ShieldError):
    """The circuit breaker rejects calls; `retry_after` says when it will let a probe through."""


class BulkheadFull(ShieldError):
    """Too many calls are in flight and no slot freed up within the allowed wait."""


class QuotaExhausted(ShieldError):
    """The provider says the quota or budget is gone: retrying will not help."""


class CostTooLarge(ShieldError, ValueError):
    """A call costs more than a rate limit can hold at once: no wait would let it through.

    `limit` names that limit. `learned` says whether a provider's headers set it: it then
    expires, and `retry_after` says when; a configured one never does (`retry_after` None), so
    the call must cost less. A ValueError too, as a cost no limit could grant always was.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        key: str | None = None,
        cause: BaseException | None = None,
        limit: str = "",
        learned: bool = False,
    ) -> None:
        super().__init__(message, retry_after=retry_after, key=key, cause=cause)
        self.limit = limit
        self.learned = learned

    def __reduce__(self) -> tuple[object, ...]:
        fields = (self.message, self.retry_after, self.key, self.limit, self.learned)
        return (_rebuild_cost_too_large, fields)


def _rebuild_cost_too_large(
    message: str, retry_after: float | None, key: str | None, limit: str, learned: bool
) -> CostTooLarge:
    return CostTooLarge(message, retry_after=retry_after, key=key, limit=limit, learned=learned)


class ConfigError(ShieldError, ValueError):
    """A policy or argument is invalid; the message names the key and the value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def add_note(error: BaseException, note: str) -> None:
    """PEP 678 `add_note`, or on Python 3.10 the same `__notes__` list it would have made."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
        return
    with contextlib.suppress(AttributeError):  # an exception class that refuses attributes
        error.__notes__ = [*getattr(error, "__notes__", ()), note]  # type: ignore[attr-defined]
