"""What the outcome of one attempt means.

Four outcomes, not two: SUCCESS; FAILURE (a breaker failure, retried with backoff); THROTTLED
(429-like: pause and retry after the hint, never a breaker failure); IGNORED, also spelled
FATAL (the caller's fault or a quota that is gone: raised at once, counted neither way).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from .errors import ConfigError, QuotaExhausted, RateLimited

__all__ = ["Outcome", "Verdict", "Classifier", "DefaultClassifier", "SUCCESS"]

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


class Outcome(enum.Enum):
    """What one attempt's result or error means to the breaker, the limiter and the retries."""

    SUCCESS = "success"
    """It worked: a breaker success, no retry."""
    FAILURE = "failure"
    """The provider failed (5xx, timeout, connection): a breaker failure, retried with backoff."""
    THROTTLED = "throttled"
    """The server throttled (429-like): the key pauses and the call retries after the hint;
    never a breaker failure."""
    IGNORED = "ignored"
    """The caller's fault (a bad request) or a quota gone: raised at once, counted neither way."""
    FATAL = "ignored"
    """The same member as `IGNORED`, by another name: fatal errors count exactly like ignored
    ones."""


class Verdict(NamedTuple):
    """A classified attempt: its outcome, the server's retry hint, and an error to raise instead."""

    outcome: Outcome
    retry_after: float | None = None
    """Seconds the server asked to wait before the next attempt, if it said."""
    error: BaseException | None = None
    """An error to raise instead of the call's own (e.g. `QuotaExhausted` for a quota gone)."""


SUCCESS = Verdict(Outcome.SUCCESS)
_FAILURE = Verdict(Outcome.FAILURE)
_IGNORED = Verdict(Outcome.IGNORED)


class Classifier(Protocol):
    """Turns a result or an exception into a `Verdict`."""

    def classify_result(self, result: Any) -> Verdict:
        """The verdict on what a call returned (an HTTP response may still be a 429)."""
        ...

    def classify_error(self, error: BaseException) -> Verdict:
        """The verdict on what a call raised."""
        ...


def exception_types(value: object, path: str) -> ExceptionTypes:
    """`value` if it is an exception class or a tuple of them, as `except` takes; otherwise a
    `ConfigError` now, rather than a `TypeError` from the first call that raises."""
    classes = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(item, type) and issubclass(item, BaseException) for item in classes):
        raise ConfigError(f"{path}: {value!r} is not an exception class or a tuple of them")
    return value  # type: ignore[return-value]


class DefaultClassifier:
    """Exceptions are FAILURE, results SUCCESS, unless told otherwise.

    `retry_on`: exception types that are failures (others are IGNORED: raised at once).
    `ignore`: exception types that are never retried nor counted, checked first.
    `retry_if_result`: a predicate; a result for which it is true is a FAILURE (for example an
    empty completion); when attempts run out, the last such result is returned.
    A `RateLimited` from an inner shield is THROTTLED with its hint; `QuotaExhausted` is FATAL.
    """

    __slots__ = ("_retry_on", "_ignore", "_retry_if_result", "_never_retried")

    def __init__(
        self,
        *,
        retry_on: ExceptionTypes = Exception,
        ignore: ExceptionTypes = (),
        retry_if_result: Callable[[Any], bool] | None = None,
    ) -> None:
        self._retry_on = exception_types(retry_on, "DefaultClassifier.retry_on")
        self._ignore = exception_types(ignore, "DefaultClassifier.ignore")
        if retry_if_result is not None and not callable(retry_if_result):
            raise ConfigError(
                f"DefaultClassifier.retry_if_result: {retry_if_result!r} is not callable"
            )
        self._retry_if_result = retry_if_result
        ignored = ignore if isinstance(ignore, tuple) else (ignore,)
        self._never_retried: tuple[type[BaseException], ...] = (QuotaExhausted, *ignored)

    # Read-only: a shield decides once whether it needs to look at results at all.

    @property
    def retry_on(self) -> ExceptionTypes:
        return self._retry_on

    @property
    def ignore(self) -> ExceptionTypes:
        return self._ignore

    @property
    def retry_if_result(self) -> Callable[[Any], bool] | None:
        return self._retry_if_result

    def classify_result(self, result: Any) -> Verdict:
        if self._retry_if_result is not None and self._retry_if_result(result):
            return _FAILURE
        return SUCCESS

    def classify_error(self, error: BaseException) -> Verdict:
        if isinstance(error, self._never_retried):
            return _IGNORED
        if isinstance(error, RateLimited):
            return Verdict(Outcome.THROTTLED, error.retry_after)
        if isinstance(error, self._retry_on):
            return _FAILURE
        return _IGNORED

    def __repr__(self) -> str:
        return (
            f"DefaultClassifier(retry_on={self.retry_on!r}, ignore={self.ignore!r}, "
            f"retry_if_result={self.retry_if_result!r})"
        )
