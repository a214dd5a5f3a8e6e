"""The decorators users write: `@shielded`, and the single parts `@rate_limited`, `@breaker`,
`@retry` and `@bulkhead`.

Each decorator is one wrapt layer around one `Shield`. Which Shield is decided per call by a
resolver: the decorator's own (built from its arguments, and kept in the registry's state, so
that testing mode and `reset` reach it) or a model key's (from the registry: for a named model,
cached by the decorator until `configure` runs; for a model taken from each call, kept on that
model's key, so that the registry may drop idle keys). Sync or async, generator or not, is
decided once, when decorating; the async wrapper is an `async def`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    cast,
    overload,
)

import wrapt

from ._diagnostics import _outside_us
from .breaker import CircuitBreaker
from .bulkhead import Bulkhead
from .errors import ConfigError
from .events import Listener
from .fallbacks import (
    Model,
    _checked_for_fallbacks,
    _FallbackRun,
    _falls_back,
)
from .limiter import Cost, Limit, Limiter
from .outcome import Classifier, DefaultClassifier, ExceptionTypes, exception_types
from .policy import Policy, _classifier, _function
from .registry import Key, Registry, default_registry
from .retry import RetryPolicy
from .shield import Shield

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DISABLED_ENV",
    "shielded",
    "rate_limited",
    "breaker",
    "retry",
    "bulkhead",
    "disable",
    "enable",
    "is_enabled",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DISABLED_ENV = "RATE_LIMIT_SHIELD_DISABLED"
"""Set to 1 (or true, yes, on) to start with every decorator a pass-through."""

_disabled = os.environ.get(DISABLED_ENV, "").strip().lower() in ("1", "true", "yes", "on")

_RETRYING = ("shielded", "retry")
"""Decorators whose retries an SDK client's own would multiply."""
_UNWRAPPED_AT_MOST = 8
"""Wrappers (`__wrapped__`) looked through for an SDK method: an SDK adds one or two."""
_TOLD_OF_RETRIES: weakref.WeakSet[object] = weakref.WeakSet()
"""SDK clients whose own retries a warning has told of."""

Resolve = Callable[[tuple[Any, ...], dict[str, Any]], Shield]


def disable() -> None:
    """Make every decorator a pass-through (tests, emergencies); `enable` undoes it."""
    global _disabled
    _disabled = True


def enable() -> None:
    """Undo `disable` (and the environment variable)."""
    global _disabled
    _disabled = False


def is_enabled() -> bool:
    """Whether the decorators shield their calls: False after `disable()`, or from the start
    when `RATE_LIMIT_SHIELD_DISABLED` is 1, true, yes or on."""
    return not _disabled


# -- typing -----------------------------------------------------------------------------------


class Decorator(Protocol):
    """What the decorators return when given arguments: it keeps the function's own signature."""

    @overload
    def __call__(self, fn: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
    @overload
    def __call__(self, fn: staticmethod[P, R], /) -> staticmethod[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...


class RetryOptions(TypedDict, total=False):
    attempts: int
    backoff: str
    base_delay: float
    max_delay: float
    multiplier: float
    max_retry_after: float
    budget: Mapping[str, float] | None


class BreakerOptions(TypedDict, total=False):
    failure_threshold: int | None
    failure_rate: float
    window: int
    window_seconds: float
    min_calls: int
    recovery_timeout: float
    max_recovery_timeout: float
    half_open_max_calls: int
    slow_call_duration: float
    slow_call_rate: float


class BulkheadOptions(TypedDict, total=False):
    max_concurrent: int
    max_wait: float


class _Options(NamedTuple):
    """What a decorator adds to the parts it uses, whoever owns them."""

    cost: Callable[..., Cost] | None = None
    usage: Callable[[Any], Cost | None] | None = None
    classifier: Classifier | None = None
    on_event: Listener | None = None
    timeout: float | None = None
    max_wait: float | None = None


# -- the decorators -----------------------------------------------------------------------------


@overload
def shielded(fn: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def shielded(fn: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def shielded(
    fn: Callable[P, R],
    /,
    *,
    model: Model | None = None,
    registry: Registry | None = None,
    cost: Callable[..., Cost] | None = None,
    usage: Callable[[Any], Cost | None] | None = None,
    classifier: Classifier | None = None,
    on_event: Listener | None = None,
) -> Callable[P, R]: ...
@overload
def shielded(
    *,
    model: Model | None = None,
    registry: Registry | None = None,
    cost: Callable[..., Cost] | None = None,
    usage: Callable[[Any], Cost | None] | None = None,
    classifier: Classifier | None = None,
    on_event: Listener | None = None,
) -> Decorator: ...
def shielded(
    fn: Any = None,
    /,
    *,
    model: Model | None = None,
    registry: Registry | None = None,
    cost: Callable[..., Cost] | None = None,
    usage: Callable[[Any], Cost | None] | None = None,
    classifier: Classifier | None = None,
    on_event: Listener | None = None,
) -> Any:
    """Every part of a model's policy, in one layer: retry, breaker, rate limit, bulkhead.

    `model` is a model name, or a function of the call's arguments returning one; without it,
    the call's own `model=` keyword argument names the model. A call the model refuses (open
    circuit, quota gone, no rate permit in time), or whose retries give up on a failure or a
    throttle, is made again with `model=` each of the policy's `fallbacks` in turn (never after
    an error the classifier ignores, such as a bad request); a result a fallback gave carries
    `answered_by`, the model that answered, where an attribute can be set. A function that
    cannot take `model=` while its model's policy has fallbacks is a `ConfigError`. `cost`,
    `usage` and `classifier` refine the model's pipeline for this function.
    """
    fn, _ = _bare("shielded", fn, None)
    options = _checked("shielded", _Options(cost, usage, classifier, on_event))
    custom = options != _Options()

    def from_key(key: Key) -> Shield:
        if not custom:
            return key.shield
        return _key_shield(key, options, limiter=True, breaker=True, retry=True, bulkhead=True)

    decorator = _decorator("shielded", registry, model, None, from_key, options, falls_back=True)
    return decorator if fn is None else decorator(fn)


def rate_limited(
    limiter: Limiter | None = None,
    /,
    *,
    rpm: float | None = None,
    rpd: float | None = None,
    tpm: float | None = None,
    itpm: float | None = None,
    otpm: float | None = None,
    limits: list[Limit] | tuple[Limit, ...] = (),
    max_wait: float | None = None,
    model: Model | None = None,
    registry: Registry | None = None,
    cost: Callable[..., Cost] | None = None,
    usage: Callable[[Any], Cost | None] | None = None,
) -> Decorator:
    """Wait for a rate permit before each call (at most `max_wait`), or raise `RateLimited`.

    Give a live `Limiter` (shared on purpose), rate keywords (`rpm=60`, `limits=[...]`), or a
    `model` whose limiter to share. `max_wait` defaults to the model's, or 60 s.
    """
    rates = {"rpm": rpm, "rpd": rpd, "tpm": tpm, "itpm": itpm, "otpm": otpm}
    given: dict[str, Any] = {name: value for name, value in rates.items() if value is not None}
    if limits:
        given["limits"] = limits
    _check_one_source("rate_limited", Limiter, limiter, bool(given), model)
    if limiter is None and not given and model is None:
        raise ConfigError("@rate_limited: give a Limiter, rate keywords (rpm=60, ...) or model=")
    options = _checked("rate_limited", _Options(cost, usage, max_wait=max_wait))
    wait = max_wait if max_wait is not None else 60.0
    policy = _policy("rate_limited", {**given, "max_wait": wait}, section=None)
    own = None
    if limiter is not None or given:

        def build(clock: Any) -> Shield:
            live = limiter if limiter is not None else policy.make_limiter(clock=clock)
            return Shield(live, max_wait=policy.max_wait, cost=cost, usage=usage, clock=clock)

        own = build

    def from_key(key: Key) -> Shield:
        return _key_shield(key, options, limiter=True)

    return _decorator("rate_limited", registry, model, own, from_key, options)


@overload
def breaker(fn: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def breaker(fn: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def breaker(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def breaker(
    cb: CircuitBreaker | None = None,
    /,
    *,
    model: Model | None = None,
    registry: Registry | None = None,
    classifier: Classifier | None = None,
    **options: Unpack[BreakerOptions],
) -> Decorator: ...
def breaker(
    cb: Any = None,
    /,
    *,
    model: Model | None = None,
    registry: Registry | None = None,
    classifier: Classifier | None = None,
    **options: Any,
) -> Any:
    """Refuse calls with `CircuitOpen` while the circuit is open.

    Give a live `CircuitBreaker` (shared on purpose), its keyword arguments, or a `model` whose
    breaker to share. `classifier` says which outcomes are failures.
    """
    fn, cb = _bare("breaker", cb, CircuitBreaker)
    _check_one_source("breaker", CircuitBreaker, cb, bool(options), model)
    extra = _checked("breaker", _Options(classifier=classifier))
    own = None
    if cb is not None or model is None:
        policy = _policy("breaker", {"breaker": options}, section="breaker")

        def build(clock: Any) -> Shield:
            live = cb if cb is not None else policy.make_breaker(clock=clock)
            return Shield(breaker=live, classifier=classifier, clock=clock)

        own = build

    def from_key(key: Key) -> Shield:
        return _key_shield(key, extra, breaker=True)

    decorator = _decorator("breaker", registry, model, own, from_key, extra)
    return decorator if fn is None else decorator(fn)


@overload
def retry(fn: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def retry(fn: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def retry(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def retry(
    policy: RetryPolicy | None = None,
    /,
    *,
    on: ExceptionTypes = Exception,
    ignore: ExceptionTypes = (),
    retry_if_result: Callable[[Any], bool] | None = None,
    classifier: Classifier | None = None,
    timeout: float | None = None,
    on_event: Listener | None = None,
    model: Model | None = None,
    registry: Registry | None = None,
    **options: Unpack[RetryOptions],
) -> Decorator: ...
def retry(
    policy: Any = None,
    /,
    *,
    on: ExceptionTypes = Exception,
    ignore: ExceptionTypes = (),
    retry_if_result: Callable[[Any], bool] | None = None,
    classifier: Classifier | None = None,
    timeout: float | None = None,
    on_event: Listener | None = None,
    model: Model | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Any:
    """Retry failed calls with jittered backoff, within `timeout` seconds for all attempts.

    Give a live `RetryPolicy`, its keyword arguments (`attempts=3`, `backoff="full"`, ...,
    `budget={"ratio": 0.2}`: no budget unless given), or a `model` whose retry policy and budget
    to share. `on` names the exceptions worth retrying (others are raised at once), `ignore`
    those never retried, `retry_if_result` the results worth retrying.
    """
    fn, policy = _bare("retry", policy, RetryPolicy)
    _check_one_source("retry", RetryPolicy, policy, bool(options), model)
    exception_types(on, "@retry.on")
    exception_types(ignore, "@retry.ignore")
    if retry_if_result is not None:
        _function(retry_if_result, "@retry.retry_if_result")
    extra = _checked("retry", _Options(classifier=classifier, on_event=on_event, timeout=timeout))
    if classifier is None:
        classifier = DefaultClassifier(retry_on=on, ignore=ignore, retry_if_result=retry_if_result)
        extra = extra._replace(classifier=classifier)
    own = None
    if policy is not None or model is None:
        settings = _policy(
            "retry", {"retry": {"budget": None, **options}, "timeout": timeout}, section="retry"
        )
        schedule = policy if policy is not None else settings.make_retry()

        def build(clock: Any) -> Shield:
            return Shield(
                retry=schedule,
                budget=settings.make_budget(clock=clock),
                classifier=classifier,
                timeout=timeout,
                clock=clock,
                on_event=on_event,
            )

        own = build
    else:
        _policy("retry", {"timeout": timeout}, section=None)

    def from_key(key: Key) -> Shield:
        return _key_shield(key, extra, retry=True)

    decorator = _decorator("retry", registry, model, own, from_key, extra)
    return decorator if fn is None else decorator(fn)


def bulkhead(
    bh: Bulkhead | None = None,
    /,
    *,
    model: Model | None = None,
    registry: Registry | None = None,
    **options: Unpack[BulkheadOptions],
) -> Decorator:
    """At most `max_concurrent` calls in flight; others wait up to `max_wait` or get
    `BulkheadFull`. Give a live `Bulkhead`, its keyword arguments, or a `model` to share."""
    _check_one_source("bulkhead", Bulkhead, bh, bool(options), model)
    if bh is None and not options and model is None:
        raise ConfigError("@bulkhead: give a Bulkhead, max_concurrent=... or model=")
    own = None
    if bh is not None or model is None:
        settings = None if bh is not None else _policy("bulkhead", {"bulkhead": dict(options)},
                                                       section="bulkhead")  # fmt: skip

        def build(clock: Any) -> Shield:
            live = bh if settings is None else settings.make_bulkhead(clock=clock)
            return Shield(bulkhead=live, clock=clock)

        own = build

    def from_key(key: Key) -> Shield:
        return _key_shield(key, _Options(), bulkhead=True)

    return _decorator("bulkhead", registry, model, own, from_key, _Options())


# -- building blocks ---------------------------------------------------------------------------


def _bare(name: str, first: Any, primitive: type | None) -> tuple[Any, Any]:
    """Split the first positional argument into (function for a bare `@decorator`, primitive)."""
    if first is None or (primitive is not None and isinstance(first, primitive)):
        return None, first
    if callable(first) or isinstance(first, (classmethod, staticmethod)):
        return first, None
    _refuse_model(name, first)
    expected = "a function" if primitive is None else f"a {primitive.__name__} or a function"
    raise ConfigError(f"@{name}: expected {expected}, got {first!r}")


def _refuse_model(name: str, first: object) -> None:
    """A model name given as the first positional argument: say how to write it."""
    if isinstance(first, str):
        raise ConfigError(
            f"@{name}: the model is a keyword argument: write @{name}(model={first!r})"
        )


def _check_one_source(
    name: str, primitive: type, live: object, given: bool, model: Model | None
) -> None:
    """A single-part decorator takes its part from exactly one place."""
    _refuse_model(name, live)
    if live is not None and not isinstance(live, primitive):
        kind = "a function" if callable(live) else repr(live)
        raise ConfigError(
            f"@{name}: expected a {primitive.__name__}, got {kind}; write @{name}(...)"
        )
    sources = [
        source
        for source, present in (
            (f"a {primitive.__name__}", live is not None),
            ("keyword arguments", given),
            ("model=", model is not None),
        )
        if present
    ]
    if len(sources) > 1:
        raise ConfigError(f"@{name}: give one of {' or '.join(sources)}, not several")


_OPTION_CHECKS = {"cost": _function, "usage": _function, "classifier": _classifier,
                  "on_event": _function}  # fmt: skip
"""The checker of each decorator option that holds a function or a classifier."""


def _checked(name: str, options: _Options) -> _Options:
    """`options`, each one given checked now: a bad one would otherwise replace every call's
    own outcome with a `TypeError` or an `AttributeError`."""
    for option, check in _OPTION_CHECKS.items():
        value = getattr(options, option)
        if value is not None:
            check(value, f"@{name}.{option}")
    return options


def _policy(name: str, data: dict[str, Any], *, section: str | None) -> Policy:
    """Validate a decorator's keywords as a policy; errors name them as `@name.key`."""
    parts = {"retry": None, "breaker": None} | data
    try:
        return Policy.from_mapping(parts, path=f"@{name}")
    except ConfigError as exc:
        if section is None:
            raise
        raise ConfigError(exc.message.replace(f"@{name}.{section}", f"@{name}", 1)) from None


def _key_shield(
    key: Key,
    options: _Options,
    *,
    limiter: bool = False,
    breaker: bool = False,
    retry: bool = False,
    bulkhead: bool = False,
) -> Shield:
    """A pipeline over some of a model key's live parts, with a decorator's own options."""
    policy = key.policy
    timeout = options.timeout if options.timeout is not None else policy.timeout
    return Shield(
        key.limiter if limiter else None,
        key.breaker if breaker else None,
        key.retry if retry else None,
        bulkhead=key.bulkhead if bulkhead else None,
        budget=key.budget if retry else None,
        classifier=options.classifier if options.classifier is not None else key.classifier,
        timeout=timeout if retry else None,
        max_wait=options.max_wait if options.max_wait is not None else policy.max_wait,
        cost=options.cost if options.cost is not None else key.cost,
        usage=options.usage if options.usage is not None else key.usage,
        guide=key.guide if limiter else None,
        clock=key.clock,
        name=key.name,
        on_event=options.on_event if options.on_event is not None else key.shield.on_event,
    )


def _decorator(
    name: str,
    registry: Registry | None,
    model: Model | None,
    own: Callable[[Any], Shield] | None,
    from_key: Callable[[Key], Shield],
    options: _Options,
    *,
    falls_back: bool = False,
) -> Decorator:
    """The decorator: picks the resolver for where the Shield comes from, then the wrapper for
    the kind of function. With `falls_back`, a failed call walks down its model's fallbacks."""
    registry = registry if registry is not None else default_registry()
    if model is not None and not ((isinstance(model, str) and model) or callable(model)):
        raise ConfigError(f"model={model!r} is not a model name nor a function")
    shared = None if own is None else _fixed(registry, lambda state: _own_shield(own, state))

    def decorate(fn: Any) -> Any:
        if inspect.isclass(fn):
            raise ConfigError(
                f"@{name}: {fn.__qualname__} is a class, not a function; decorate the function "
                "or method that makes the call instead"
            )
        if name in _RETRYING:
            _warn_of_sdk_retries(name, fn)
        if shared is not None:
            source, fallbacks = shared, None
        else:
            source, fallbacks = _model_source(registry, model, from_key, options, fn, falls_back)
        wrapper = _wrapper(_kind(fn), source, fallbacks)
        # A coroutine takes its name from its function: let a "never awaited" warning name fn's.
        target = getattr(fn, "__func__", fn)
        wrapper.__name__ = getattr(target, "__name__", wrapper.__name__)
        wrapper.__qualname__ = getattr(target, "__qualname__", wrapper.__qualname__)
        return wrapt.FunctionWrapper(fn, wrapper)

    return decorate


def _warn_of_sdk_retries(name: str, fn: Any) -> None:
    """Warn, once per client, that `fn` is a method of an SDK client that retries by itself:
    each of the decorator's attempts would be retried out of its sight, the SDK's sleeps holding
    the call's rate permit and bulkhead slot, its 429s pausing no one."""
    client = _sdk_client(fn)
    retries = getattr(client, "max_retries", None)
    if type(retries) is not int or retries <= 0:
        return
    try:
        if client in _TOLD_OF_RETRIES:
            return
        _TOLD_OF_RETRIES.add(client)
    except TypeError:  # a client that takes no weak reference is told each time
        pass
    warnings.warn(
        f"rate_limit_shield: @{name} over {getattr(fn, '__qualname__', repr(fn))}, whose SDK "
        f"client retries by itself (max_retries={retries}): the SDK retries each of the "
        "shield's attempts out of its sight (its sleeps hold the call's rate permit and "
        "bulkhead slot, its 429s pause no one). Make the client with max_retries=0 (or use "
        "client.with_options(max_retries=0)), or use rls.shield_client(client), which does it "
        "and shields every call of the client",
        RuntimeWarning,
        stacklevel=_outside_us(),
    )


def _sdk_client(fn: Any) -> Any:
    """The SDK client (`_client`) of the resource whose bound method `fn` is, looking through
    the wrappers an SDK adds (`with_raw_response`'s); None for anything else. A function's own
    wrappers lack `self`: the search stops at the first object that has one."""
    for _ in range(_UNWRAPPED_AT_MOST):
        owner = getattr(fn, "__self__", None)
        if owner is not None:
            return getattr(owner, "_client", None)
        fn = getattr(fn, "__wrapped__", None)
    return None


def _model_source(
    registry: Registry,
    model: Model | None,
    from_key: Callable[[Key], Shield],
    options: _Options,
    fn: Any,
    falls_back: bool,
) -> tuple[_Source, Callable[..., _FallbackRun] | None]:
    """Where `fn`'s Shield comes from when a model key provides it, and with `falls_back` how a
    failed call walks down the key's fallbacks (once `fn` is checked able to call them)."""
    build = _checked_for_fallbacks(registry, model, fn, from_key) if falls_back else from_key
    shield_of = _pipelines(registry, build)
    if isinstance(model, str):
        named = model
        source = _fixed(registry, lambda state: build(registry.key(named)))
    else:
        source = _per_call(registry, model, shield_of)
    fallbacks = partial(_FallbackRun, registry, shield_of, options.on_event) if falls_back else None
    return source, fallbacks



def _own_shield(own: Callable[[Any], Shield], state: Any) -> Shield:
    """A decorator's own Shield, kept in the registry state so that `isolated()` and `reset()`
    reach it: one per state, carried over by `configure` while the clock stays the same."""
    shield: Shield | None = state.own.get(own)
    if shield is None:
        shield = state.own.setdefault(own, own(state.clock))
    return shield


class _Source:
    """Where a decorator's Shield comes from: `shield` holds while `state` is the registry's
    state, which the wrapper checks inline; otherwise the wrapper asks `find(args, kwargs)`. A
    source whose Shield depends on the call (its model) leaves `state` None: it always asks."""

    __slots__ = ("registry", "state", "shield", "find")

    def __init__(self, registry: Registry, find: Resolve) -> None:
        self.registry = registry
        self.state: object = None
        self.shield = cast(Shield, None)  # read only once `state` matches, which it does not yet
        self.find = find


def _fixed(registry: Registry, make: Callable[[Any], Shield]) -> _Source:
    """One Shield for every call, found again by `make(state)` when the registry state changes."""

    def find(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Shield:
        current = registry._state
        shield = make(current)
        source.shield = shield  # before the state: who sees the new state sees its shield
        source.state = current
        return shield

    source = _Source(registry, find)
    return source


def _pipelines(registry: Registry, build: Callable[[Key], Shield]) -> Callable[[str], Shield]:
    """A decorated function's Shield for each model, built by `build(key)` once. It is kept on
    the model's key, not here: a new model costs O(1), and a key the registry drops takes this
    function's Shield with it."""

    def shield_of(model: str) -> Shield:
        key = registry._state.keys.get(model)  # inline, `_key_for_call` when the key is new
        if key is None:
            key = registry._key_for_call(model)
        else:
            key.used = True
        shield = key.pipelines.get(shield_of)
        return shield if shield is not None else key.pipeline(shield_of, build)

    return shield_of


def _per_call(
    registry: Registry, pick: Callable[..., str] | None, shield_of: Callable[[str], Shield]
) -> _Source:
    """The Shield of the model each call names: its `model=` argument, or what `pick(*args,
    **kwargs)` returns."""

    def resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Shield:
        model = kwargs.get("model") if pick is None else pick(*args, **kwargs)
        if model is None:
            raise ConfigError(
                "no model for this call: pass model=... to it, or decorate with "
                "@shielded(model=...)"
            )
        return shield_of(model)

    return _Source(registry, resolve)



def _kind(fn: Any) -> str:
    """How to call `fn`: "sync", "async", "generator" or "async generator"."""
    target = getattr(fn, "__func__", fn)  # classmethod, staticmethod, bound method
    for candidate in (target, inspect.unwrap(target)):
        if inspect.isasyncgenfunction(candidate):
            return "async generator"
        if inspect.iscoroutinefunction(candidate) or inspect.iscoroutinefunction(
            getattr(candidate, "__call__", None)  # noqa: B004 - an object with async __call__
        ):
            return "async"
        if inspect.isgeneratorfunction(candidate):
            return "generator"
    return "sync"


def _wrapper(
    kind: str, source: _Source, fallbacks: Callable[..., _FallbackRun] | None
) -> Callable[..., Any]:
    """The wrapt wrapper for one kind of function."""
    registry = source.registry

    def sync(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _disabled:
            return wrapped(*args, **kwargs)
        shield = source.shield if source.state is registry._state else source.find(args, kwargs)
        try:
            return shield.invoke(wrapped, args, kwargs)
        except Exception as error:
            if fallbacks is None or not _falls_back(shield, error):
                raise
            run = fallbacks(shield, error, kwargs)
            for fallback, fallback_kwargs in run:
                try:
                    return run.answered(fallback.invoke(wrapped, args, fallback_kwargs))
                except Exception as failure:
                    if not _falls_back(fallback, failure):
                        raise
                    run.failed(failure)
            raise

    async def asynchronous(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if _disabled:
            return await wrapped(*args, **kwargs)
        shield = source.shield if source.state is registry._state else source.find(args, kwargs)
        try:
            return await shield.ainvoke(wrapped, args, kwargs)
        except Exception as error:
            if fallbacks is None or not _falls_back(shield, error):
                raise
            run = fallbacks(shield, error, kwargs)
            for fallback, fallback_kwargs in run:
                try:
                    return run.answered(await fallback.ainvoke(wrapped, args, fallback_kwargs))
                except Exception as failure:
                    if not _falls_back(fallback, failure):
                        raise
                    run.failed(failure)
            raise

    def generator(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Generator[Any, Any, Any]:
        return (yield from sync(wrapped, instance, args, kwargs))

    async def async_generator(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        async def started(*args: Any, **kwargs: Any) -> Any:
            return wrapped(*args, **kwargs)

        stream = await asynchronous(started, instance, args, kwargs)
        async with contextlib.aclosing(stream):
            async for item in stream:
                yield item

    return {
        "sync": sync,
        "async": asynchronous,
        "generator": generator,
        "async generator": async_generator,
    }[kind]
