"""Fallbacks of `@shielded`: whether a failed call tries the next model, the walk down a
model's fallbacks (`_FallbackRun`, which marks a fallback's answer with `answered_by`), and the
checks that a function can take the `model=` each fallback is called with.

The decorators only drive it, from their sync and async wrappers alike: what counts as giving
up, and what a fallback tells its listeners, is decided here once.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

from .errors import CircuitOpen, ConfigError, QuotaExhausted, RateLimited, add_note
from .events import FALLBACK, FELL_BACK, Event, Listener, report
from .outcome import Outcome
from .registry import Key, Registry
from .shield import Shield

__all__ = ["Model"]

T = TypeVar("T")

Model = str | Callable[..., str]
"""How a decorator names its model: a model name, or a function of the call's arguments
returning one."""

_REFUSALS = (CircuitOpen, QuotaExhausted, RateLimited)
"""Refusals after which `@shielded` tries a fallback."""
_GAVE_UP_ON = (Outcome.FAILURE, Outcome.THROTTLED)
"""Verdicts on the error a call ends with after which `@shielded` tries a fallback."""


def _checked_for_fallbacks(
    registry: Registry, model: Model | None, fn: Any, from_key: Callable[[Key], Shield]
) -> Callable[[Key], Shield]:
    """`from_key`, for a function given its model by the decorator checked able to take the
    `model=` its fallbacks are called with: if it cannot, the fallbacks are refused now when the
    registry knows them, else whenever a key with fallbacks is first used in a configuration."""
    if model is None or _takes_model(fn):
        return from_key
    if isinstance(model, str):
        _refuse_fallbacks(registry, model, fn)
    return partial(_without_fallbacks, from_key, model, fn)


def _takes_model(fn: Any) -> bool:
    """Whether `fn` can be called with `model=` (a parameter of that name, or **kwargs); a
    function whose signature cannot be read is given the benefit of the doubt."""
    try:
        parameters = inspect.signature(getattr(fn, "__func__", fn)).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        or (parameter.name == "model" and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for parameter in parameters
    )


def _refuse_fallbacks(registry: Registry, model: str, fn: Any) -> None:
    """At decoration: refuse `model`'s fallbacks for `fn` if the registry already has them."""
    try:
        policy = registry._state.resolve(model)[1]
    except ConfigError:  # unknown under strict: the first call says so
        return
    if policy.fallbacks:
        raise _cannot_fall_back(model, fn, model, policy.fallbacks)


def _without_fallbacks(
    from_key: Callable[[Key], Shield], model: Model, fn: Any, key: Key
) -> Shield:
    """`from_key(key)` for a function that cannot take `model=`, if `key` has no fallbacks."""
    if key.policy.fallbacks:
        raise _cannot_fall_back(model, fn, key.name, key.policy.fallbacks)
    return from_key(key)


def _cannot_fall_back(model: Model, fn: Any, name: str, fallbacks: tuple[str, ...]) -> ConfigError:
    shown = repr(model) if isinstance(model, str) else getattr(model, "__qualname__", repr(model))
    called = getattr(getattr(fn, "__func__", fn), "__qualname__", repr(fn))
    return ConfigError(
        f"@shielded(model={shown}) on {called}: the policy of {name!r} has fallbacks "
        f"{fallbacks}, but {called} takes no model= argument to call them with: add a model "
        "parameter (or **kwargs) to it and call the model it names, or remove the fallbacks"
    )


def _falls_back(shield: Shield, error: Exception) -> bool:
    """Whether a call that ended in `error` through `shield` tries the next model: after a
    refusal, or once retries gave up on a failure or a throttle; never after an error the
    classifier ignores (a bad request would fail the same way on any model)."""
    if isinstance(error, _REFUSALS):
        return True
    return shield.classifier.classify_error(error).outcome in _GAVE_UP_ON


class _FallbackRun:
    """One call's walk down its model's fallbacks, once the model (`shield.name`) failed with
    `error`: yields (shield, kwargs) for each fallback, told of each one's failure in turn
    (`failed`) and of the answer (`answered`)."""

    __slots__ = ("_registry", "_shield_of", "_on_event", "_shield", "_error", "_kwargs",
                 "_failure", "_tried", "_answering")  # fmt: skip

    def __init__(
        self,
        registry: Registry,
        shield_of: Callable[[str], Shield],
        on_event: Listener | None,
        shield: Shield,
        error: Exception,
        kwargs: dict[str, Any],
    ) -> None:
        self._registry = registry
        self._shield_of = shield_of
        self._on_event = on_event
        self._shield = shield
        self._error = error
        self._kwargs = kwargs
        self._failure: Exception = error
        self._tried: list[str] = []
        self._answering = ""

    def failed(self, failure: Exception) -> None:
        self._failure = failure

    def __iter__(self) -> Iterator[tuple[Shield, dict[str, Any]]]:
        failed = self._shield.name
        for fallback in self._key().policy.fallbacks:
            failure = self._failure
            self._emit(Event(FALLBACK, failed, 0, getattr(failure, "retry_after", None), None,
                             failure, fallback))  # fmt: skip
            self._tried.append(f"{fallback} ({type(failure).__name__} from {failed})")
            self._answering = fallback
            yield self._shield_of(fallback), {**self._kwargs, "model": fallback}
            failed = fallback
        if self._tried:
            add_note(self._error, f"rate-limit-shield: fallbacks tried: {', '.join(self._tried)}")

    def answered(self, result: T) -> T:
        """`result`, from the fallback being tried: marked with the model that answered (where
        it takes an attribute: set on the instance, so that a pydantic response does not
        serialize it), and told to the listeners and the log."""
        asked, answering = self._shield.name, self._answering
        with contextlib.suppress(AttributeError, TypeError):
            object.__setattr__(result, "answered_by", answering)
        tried = f"fallbacks tried: {', '.join(self._tried)}"
        self._emit(Event(FELL_BACK, asked, 0, None, None, self._error, answering, reason=tried))
        return result

    def _key(self) -> Key:
        return self._registry._key_for_call(self._shield.name)

    def _emit(self, event: Event) -> None:
        """Tell the decorator's own listener, else the key's, and the log."""
        listener = self._on_event if self._on_event is not None else self._key().shield.on_event
        report(listener, event)
