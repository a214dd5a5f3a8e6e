"""Per-model policies, and the live limiter, breaker, bulkhead and budget of each model key.

A model name resolves to a policy (its exact name, then the most specific matching glob pattern,
then ``"default"``) and gets its own live primitives, created once on first use and shared by
every function decorated for that name. `configure` swaps in a new state in one assignment, so
readers never lock; keys whose policy did not change keep their state across it.

Model names may come from each call, and so be unbounded: past `Registry.max_keys` keys, the
keys at rest (whose state a new key would have too) are dropped, oldest first, and made anew on
their next use. A key busy in any way is kept, whatever the bound.
"""

from __future__ import annotations

import enum
import fnmatch
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

from ._bounded import remember
from .backends import MEMORY, Backend, backend_from
from .breaker import CircuitBreaker, State
from .bulkhead import Bulkhead
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError
from .events import Listener, Listeners, Reporter
from .limiter import UNITS, Cost, Limiter
from .llm import AdaptiveRate, Guide, LearnedEstimate, LLMClassifier, usage_of
from .outcome import Classifier
from .policy import Policy, parse_policies, read_config_file
from .retry import RetryBudget, RetryPolicy
from .shield import Shield

__all__ = [
    "CONFIG_ENV",
    "Key",
    "Registry",
    "default_registry",
    "configure",
    "configure_from_file",
    "update",
    "add_listener",
    "remove_listener",
    "snapshot",
]

CONFIG_ENV = "RATE_LIMIT_SHIELD_CONFIG"
"""Environment variable naming a TOML configuration file, read at first use if `configure` was
not called before."""

_DEFAULT = "default"
_BUILT_IN = Policy()
_BUILT_IN_NAME = "(built-in)"  # the pattern a model gets when nothing is configured for it
_FILE_KEYS = ("policies", "strict", "backend")
_MAX_KEYS = 10_000
"""`Registry.max_keys` unless set: 10,000 keys of a few KB each."""
_SCAN = 8
"""Keys a new key looks at, at most, to bring the registry back within its bound: O(1) each."""
_DECORATORS_PER_KEY = 64
"""Pipelines a key keeps for the decorators that take its model from the call."""
_BREAKER_COUNTS = ("consecutive_failures", "window_failures", "window_slow_calls")
"""What a closed breaker has counted that a new one would not: such a key is not at rest."""
_CLOCK_METHODS = ("monotonic", "time", "sleep", "asleep")


class _Keep(enum.Enum):
    """An argument of `configure` not given: it keeps its current value."""

    KEEP = "keep"


_KEEP: Literal[_Keep.KEEP] = _Keep.KEEP


class Key:
    """One model name's live state: its policy and the primitives shared by all its callers.

    Calls are classified by the provider taxonomy (`LLMClassifier`) unless the policy names its
    own classifier. A key with token limits estimates each call's tokens from the SDK call's
    arguments and settles them from the response's usage. A key without rate limits still has
    a limiter, with no limits: it pauses, so that one caller's 429 holds back the others, and
    it learns the provider's limits from the headers of each answer (see `Guide`).
    It learns a requests limit, and token limits only when it estimates tokens (a policy with a
    token limit): a key that starts counting tokens only once a provider states a limit would
    cost every call an estimate, and its first calls none.
    Its shield and the parts that report events of their own (its breaker's transitions, a
    shared backend's outages) tell `on_event`, the registry's listeners.
    """

    __slots__ = ("name", "pattern", "policy", "limiter", "breaker", "retry", "budget", "bulkhead",
                 "clock", "classifier", "cost", "usage", "guide", "shield", "pipelines", "kept",
                 "used")  # fmt: skip

    def __init__(
        self,
        name: str,
        pattern: str,
        policy: Policy,
        clock: Clock,
        on_event: Listener | None,
        backend: Backend = MEMORY,
    ) -> None:
        self.name = name
        self.pattern = pattern
        self.policy = policy
        self.clock = clock
        limiter = policy.make_limiter(clock=clock, name=name, backend=backend)
        self.limiter: Limiter = limiter or backend.limiter((), clock=clock, name=name)
        self.breaker: CircuitBreaker | None = policy.make_breaker(
            clock=clock, name=name, backend=backend
        )
        self.retry: RetryPolicy | None = policy.make_retry()
        self.budget: RetryBudget | None = policy.make_budget(
            clock=clock, name=name, backend=backend
        )
        self.bulkhead: Bulkhead | None = policy.make_bulkhead(clock=clock, name=name)
        for part in (self.limiter, self.breaker, self.budget):
            if isinstance(part, Reporter):
                part.on_event = on_event
        self.classifier: Classifier = (
            policy.classifier if policy.classifier is not None else LLMClassifier(clock=clock)
        )
        tokens = policy.counts_tokens
        self.cost: Callable[..., Cost] | None = (
            policy.cost if policy.cost is not None else LearnedEstimate() if tokens else None
        )
        """A call's rate cost unless the decorator says otherwise (None: one request)."""
        self.usage: Callable[[Any], Cost | None] | None = usage_of if tokens else None
        """What a result really cost, to settle the estimate with."""
        adaptive = AdaptiveRate(limiter, clock) if limiter is not None and policy.adaptive else None
        self.guide: Guide = Guide(
            self.limiter, adaptive, clock, learns=UNITS if tokens else ("requests",)
        )
        """What the key learns from the provider's headers (and throttles, when adaptive)."""
        self.shield = Shield(
            self.limiter,
            self.breaker,
            self.retry,
            bulkhead=self.bulkhead,
            classifier=self.classifier,
            budget=self.budget,
            timeout=policy.timeout,
            max_wait=policy.max_wait,
            cost=self.cost,
            usage=self.usage,
            guide=self.guide,
            clock=clock,
            name=name,
            on_event=on_event,
        )
        """The model's own pipeline: every part of its policy."""
        self.pipelines: dict[object, Shield] = {}
        """What decorators that take the model from each call built over these parts, by
        decorator: dropped with the key, so that no decorator keeps a dropped key alive."""
        self.kept = False
        """Handed out by `Registry.key`: whoever holds it may go on using it, so it is kept."""
        self.used = False
        """Used by a call since the registry last looked at it for dropping: spared once."""

    def pipeline(self, decorator: object, build: Callable[[Key], Shield]) -> Shield:
        """The pipeline `decorator` uses for this key, built by `build(key)` once."""
        shield = self.pipelines.get(decorator)
        if shield is None:
            shield = build(self)
            remember(self.pipelines, decorator, shield, _DECORATORS_PER_KEY)
        return shield

    def at_rest(self) -> bool:
        """Whether a key made anew would hold the same state: every bucket full at the full rate,
        no pause, the breaker closed with no failure or slow call counted, no slot taken or
        awaited, no retry spent. Only such a key may be dropped."""
        limiter = self.limiter
        if limiter.paused_for > 0.0 or limiter.rate_factor != 1.0:
            return False
        levels = limiter.levels().values()
        if any(level < limit.capacity for limit, level in zip(limiter.limits, levels, strict=True)):
            return False
        bulkhead = self.bulkhead
        if bulkhead is not None and (bulkhead.in_flight or bulkhead.waiting):
            return False
        if self.budget is not None and self.budget.snapshot()["retries"]:
            return False
        breaker = self.breaker
        if breaker is None:
            return True
        if breaker.state is not State.CLOSED:
            return False
        counts = breaker.snapshot()
        return not any(counts[name] for name in _BREAKER_COUNTS)

    def snapshot(self) -> dict[str, object]:
        """The policy this key resolved to, and what each of its primitives holds now."""
        return {"pattern": self.pattern, **self.shield.snapshot()}

    def __repr__(self) -> str:
        return f"Key({self.name!r}, pattern={self.pattern!r}, policy={self.policy!r})"


def _specificity(pattern: str) -> int:
    """How much of a glob pattern is literal: the most specific match wins."""
    return sum(char not in "*?[]" for char in pattern)


class _State:
    """One configuration and the keys it has made live. Replaced whole, never edited."""

    __slots__ = ("policies", "strict", "clock", "listeners", "backend", "keys", "own", "_exact",
                 "_patterns")  # fmt: skip

    def __init__(
        self,
        policies: dict[str, Policy],
        *,
        strict: bool,
        clock: Clock,
        listeners: Listeners,
        backend: Backend = MEMORY,
    ) -> None:
        self.policies = policies
        self.strict = strict
        self.clock = clock
        self.listeners = listeners
        """The registry's listeners: every key's shield reports to them."""
        self.backend = backend
        self.keys: OrderedDict[str, Key] = OrderedDict()
        """Live keys, oldest first (a key spared from dropping goes to the back)."""
        self.own: weakref.WeakKeyDictionary[object, Shield] = weakref.WeakKeyDictionary()
        """The decorators' own pipelines (built from their arguments), by their builder."""
        self._exact = {name: policy for name, policy in policies.items() if not _is_glob(name)}
        globs = [name for name in policies if _is_glob(name)]
        # Most literal characters first, then the longer pattern; sorted() keeps ties in order.
        globs.sort(key=lambda glob: (-_specificity(glob), -len(glob)))
        self._patterns = [(glob, policies[glob]) for glob in globs]

    def fresh(self, clock: Clock, backend: Backend, listeners: Listeners) -> _State:
        """The same policies on `clock` and `backend`, with no live key yet."""
        return _State(
            self.policies, strict=self.strict, clock=clock, listeners=listeners, backend=backend
        )

    def resolve(self, model: str) -> tuple[str, Policy]:
        """The name of the policy `model` gets (exact, glob or default), and the policy."""
        policy = self._exact.get(model)
        if policy is not None:
            return model, policy
        for glob in self.matching_globs(model):
            return glob, self.policies[glob]
        policy = self.policies.get(_DEFAULT)
        if policy is not None:
            return _DEFAULT, policy
        if self.strict:
            known = ", ".join(repr(name) for name in self.policies) or "none"
            raise ConfigError(
                f"unknown model {model!r}: no policy matches it and strict=True (policies: {known})"
            )
        return _BUILT_IN_NAME, _BUILT_IN

    def matching_globs(self, model: str) -> Iterator[str]:
        """The glob patterns `model` matches, the one it resolves to first (most literal
        characters, then the longer pattern)."""
        return (glob for glob, _ in self._patterns if fnmatch.fnmatchcase(model, glob))

    def make_key(self, model: str) -> Key:
        pattern, policy = self.resolve(model)
        return Key(model, pattern, policy, self.clock, self.listeners, self.backend)

    def check_fallbacks(self) -> None:
        """Under `strict`, every fallback must resolve to a policy now, not mid-outage."""
        if not self.strict:
            return
        for name, policy in self.policies.items():
            for fallback in policy.fallbacks:
                try:
                    self.resolve(fallback)
                except ConfigError:
                    raise ConfigError(
                        f'policies["{name}"].fallbacks: {fallback!r} matches no policy and '
                        'strict=True (add a policy or a pattern for it, or a "default")'
                    ) from None

    def carry_over(self, previous: _State) -> None:
        """Keep the decorators' pipelines, and the live keys whose resolved policy is unchanged,
        on the same clock and backend (their state lives there); a key made anew keeps the
        listeners added to its breaker."""
        if previous.clock is not self.clock:
            return
        self.own.update(previous.own)
        if previous.backend is not self.backend:
            return
        for name, key in previous.keys.items():
            try:
                pattern, policy = self.resolve(name)
            except ConfigError:
                continue
            if pattern == key.pattern and policy == key.policy:
                self.keys[name] = key
            elif key.breaker is not None and key.breaker.listeners:
                self.keys[name] = fresh = self.make_key(name)
                fresh.kept = key.kept
                if fresh.breaker is not None:
                    for listener in key.breaker.listeners:
                        fresh.breaker.add_listener(listener)


def _check_listener(name: str, listener: object) -> None:
    if not callable(listener):
        raise ConfigError(f"{name}: {listener!r} is not callable (a listener takes an Event)")


def _is_glob(name: str) -> bool:
    return any(char in name for char in "*?[")


class _Saved(NamedTuple):
    """What `testing.isolated()` puts back at the end of its block."""

    state: _State
    listeners: Listeners
    configured_listener: Listener | None
    backend: Backend
    backend_value: object
    max_keys: int
    isolated: bool


class Registry:
    """Policies by model name or pattern, and the live state of every model key used so far.

    `max_keys` (default 10,000) bounds the keys kept in memory: past it, each new key drops the
    oldest keys at rest (see `Key.at_rest`), which come back fresh on their next use. Keys that
    are busy (a drained bucket, a pause, failures counted, calls in flight on a bulkhead, retries
    spent), keys handed out by `key()` (and so those of decorators naming their model) and keys on
    a shared backend, whose state is not only here, are never dropped: while every key is busy,
    the bound is exceeded rather than any state lost. A key used by a call is spared the next
    time it is looked at; a call that outlasts that (its bucket refilled, no bulkhead counting
    it) ends on the state of the key it started with.
    """

    __slots__ = ("_state", "_lock", "_configured", "_backend", "_backend_value", "_max_keys",
                 "_isolated", "_listeners", "_configured_listener")  # fmt: skip

    def __init__(self) -> None:
        self._listeners = Listeners()
        self._configured_listener: Listener | None = None
        """The listener `configure(on_event=...)` gave, which the next one replaces."""
        self._state = _State({}, strict=False, clock=SYSTEM_CLOCK, listeners=self._listeners)
        self._lock = threading.Lock()
        self._configured = False
        self._backend: Backend = MEMORY
        self._backend_value: object = None
        """What `configure` was given, so that configuring the same URL again keeps the client."""
        self._max_keys = _MAX_KEYS
        self._isolated = False
        """Within `testing.isolated()`: every key is in memory, whatever the backend."""

    @property
    def max_keys(self) -> int:
        """How many model keys to keep before dropping those at rest."""
        return self._max_keys

    @max_keys.setter
    def max_keys(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"max_keys: {value!r} is not a positive int")
        self._max_keys = value

    @property
    def policies(self) -> Mapping[str, Policy]:
        """The configured policies, by model name or pattern."""
        return dict(self._state.policies)

    @property
    def clock(self) -> Clock:
        return self._state.clock

    def configure(
        self,
        policies: Mapping[str, Policy | Mapping[str, Any]],
        *,
        backend: object = _KEEP,
        clock: Clock | None = None,
        strict: bool | Literal[_Keep.KEEP] = _KEEP,
        on_event: Listener | Literal[_Keep.KEEP] | None = _KEEP,
    ) -> None:
        """Replace the policies. Bad configuration raises `ConfigError` here, naming the key.

        An argument not given keeps its current value. `backend` is None or "memory" (in
        memory), a ``redis://`` URL, a redis-py client or a `Backend`: where the model keys' rate
        limits and pauses live (the same URL again keeps its connections). `clock` defaults to
        the registry's current one (the system clock, or the `FakeClock` of `testing.isolated()`,
        within which keys stay in memory whatever `backend` says). `on_event` is a listener of
        every model key, replacing the one an earlier `configure` gave (None removes it); those
        of `add_listener` stay. Keys whose policy did not change keep their live state, unless
        the backend or clock changes, where that state lives.
        """
        parsed = parse_policies(policies)
        self._apply(lambda current: parsed, backend, clock, strict, on_event)

    def update(self, policies: Mapping[str, Policy | Mapping[str, Any]]) -> None:
        """Add or replace the policies of the given names and patterns, keeping the others, the
        settings, and the live state of every key whose policy does not change: one module per
        provider can each add its own."""
        parsed = parse_policies(policies)
        if not self._configured:
            self._configure_from_env()
        self._apply(lambda current: {**current, **parsed}, _KEEP, None, _KEEP, _KEEP)

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` on every event of every model key, from now on; policies and
        live state are untouched. Listeners run inline, in the thread or task of the call that
        made the decision: one must not block (an exporter doing slow work hands each event to
        a queue of its own); one that raises is logged, never breaking a call."""
        _check_listener("add_listener", listener)
        with self._lock:
            self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener` (one never added is ignored)."""
        with self._lock:
            self._listeners.remove(listener)

    def _apply(
        self,
        policies: Callable[[dict[str, Policy]], dict[str, Policy]],
        backend: object,
        clock: Clock | None,
        strict: bool | Literal[_Keep.KEEP],
        on_event: Listener | Literal[_Keep.KEEP] | None,
    ) -> None:
        """Swap in a new state: `policies(current)`, and each setting given (not `_KEEP`)."""
        if strict is not _KEEP and not isinstance(strict, bool):
            raise ConfigError(f"strict: {strict!r} is not a bool")
        if clock is not None and not all(
            callable(getattr(clock, method, None)) for method in _CLOCK_METHODS
        ):
            raise ConfigError(
                f"clock: {clock!r} is not a Clock (an object with {', '.join(_CLOCK_METHODS)})"
            )
        if on_event is not _KEEP and on_event is not None:
            _check_listener("on_event", on_event)
        keep = backend is _KEEP or (backend is not None and backend == self._backend_value)
        resolved = self._backend if keep else backend_from(backend)
        with self._lock:
            current = self._state
            state = _State(
                policies(current.policies),
                strict=current.strict if strict is _KEEP else strict,
                clock=current.clock if clock is None else clock,
                listeners=self._listeners,
                backend=MEMORY if self._isolated else resolved,
            )
            state.check_fallbacks()
            if not keep:
                self._backend, self._backend_value = resolved, backend
            if on_event is not _KEEP:
                self._listeners.replace(self._configured_listener, on_event)
                self._configured_listener = on_event
            state.carry_over(current)
            self._state = state
            self._configured = True

    def configure_from_file(self, path: str | os.PathLike[str]) -> None:
        """`configure` from a TOML file: a `[policies."<model or pattern>"]` table per policy,
        and optionally `strict` and `backend` at the top level."""
        data = read_config_file(path)
        try:
            unknown = sorted(set(data) - set(_FILE_KEYS))
            if unknown:
                raise ConfigError(f"unknown key {unknown[0]!r} (known: {', '.join(_FILE_KEYS)})")
            if "policies" not in data:
                raise ConfigError('no [policies."<model or pattern>"] table')
            settings = {name: data[name] for name in ("backend", "strict") if name in data}
            self.configure(data["policies"], **settings)
        except ConfigError as exc:
            raise ConfigError(f"{os.fspath(path)}: {exc.message}") from None

    def key(self, model: str) -> Key:
        """The live state of `model`, created on first use (thread-safe), and kept from then on:
        the same object until `configure` changes its policy or `reset` runs."""
        key = self._state.keys.get(model)
        if key is None:
            key = self._new_key(model)
        key.kept = True
        return key

    def _key_for_call(self, model: str) -> Key:
        """The live state of `model` for one call: dropped once it is at rest and idle, when the
        registry holds more than `max_keys` keys; hold `key()` instead to keep it."""
        key = self._state.keys.get(model)
        if key is None:
            key = self._new_key(model)
        key.used = True
        return key

    def reset(self) -> None:
        """Forget every key's live state (buckets, breakers, slots); keep the policies."""
        with self._lock:
            state = self._state
            self._state = state.fresh(state.clock, state.backend, self._listeners)

    def matching_globs(self, model: str) -> list[str]:
        """The glob patterns `model` matches, in the order resolution tries them: the first is
        the one it gets unless a policy names it exactly."""
        return list(self._state.matching_globs(model))

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Per model key used so far: its pattern, rate levels, breaker, bulkhead and budget."""
        return {name: key.snapshot() for name, key in list(self._state.keys.items())}

    def _new_key(self, model: str) -> Key:
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model: {model!r} is not a model name (a non-empty str)")
        if not self._configured:
            self._configure_from_env()
        with self._lock:
            state = self._state
            key = state.keys.get(model)
            if key is None:
                key = state.keys[model] = state.make_key(model)
                key.used = True  # about to be: spared by the drop below
                if len(state.keys) > self._max_keys and state.backend is MEMORY:
                    self._drop_idle(state.keys)
            return key

    def _drop_idle(self, keys: OrderedDict[str, Key]) -> None:
        """Drop keys at rest, oldest first, until within the bound, looking at `_SCAN` keys at
        most and never at the newest; a key kept, used since last looked at, or busy goes to
        the back instead."""
        for _ in range(min(_SCAN, len(keys) - 1)):
            if len(keys) <= self._max_keys:
                return
            name, key = keys.popitem(last=False)
            if key.kept or key.used or not key.at_rest():
                key.used = False
                keys[name] = key

    def _configure_from_env(self) -> None:
        """First use without `configure`: read the file the environment names, if any."""
        path = os.environ.get(CONFIG_ENV)
        if not path:
            self._configured = True
            return
        try:
            self.configure_from_file(path)
        except ConfigError as exc:
            raise ConfigError(f"{CONFIG_ENV}={exc.message}") from None

    def _enter_testing(self, clock: Clock) -> _Saved:
        """Fresh state in memory on `clock` (which `configure` then keeps, and a backend it is
        given does not replace); returns what to restore."""
        if not self._configured:
            self._configure_from_env()
        with self._lock:
            state = self._state
            saved = _Saved(
                state, self._listeners, self._configured_listener, self._backend,
                self._backend_value, self._max_keys, self._isolated,
            )  # fmt: skip
            self._listeners = Listeners(self._listeners.all)
            self._state = state.fresh(clock, MEMORY, self._listeners)
            self._isolated = True
            return saved

    def _leave_testing(self, saved: _Saved) -> None:
        with self._lock:
            self._state = saved.state
            self._listeners, self._configured_listener = saved.listeners, saved.configured_listener
            self._backend, self._backend_value = saved.backend, saved.backend_value
            self._max_keys, self._isolated = saved.max_keys, saved.isolated

    def __repr__(self) -> str:
        return f"Registry(policies={list(self._state.policies)!r}, keys={list(self._state.keys)!r})"


_registry = Registry()


def default_registry() -> Registry:
    """The registry that `configure` and the decorators use unless given another."""
    return _registry


configure = _registry.configure
"""`Registry.configure` of the default registry: replace its policies (and, where given, its
backend, clock, strictness and `on_event` listener)."""
configure_from_file = _registry.configure_from_file
"""`Registry.configure_from_file` of the default registry: `configure` from a TOML file."""
update = _registry.update
"""`Registry.update` of the default registry: add or replace the policies given, keep the rest."""
add_listener = _registry.add_listener
"""`Registry.add_listener` of the default registry: hear every event of every model key."""
remove_listener = _registry.remove_listener
"""`Registry.remove_listener` of the default registry."""
snapshot = _registry.snapshot
"""`Registry.snapshot` of the default registry: what each model key used so far holds now."""
