"""One model's configuration: validated once, frozen, and turned into live primitives.

A `Policy` holds exactly the keys of the configuration contract. Every value is checked (and
normalised: lists become tuples, sections read-only mappings) when the policy is made, and then
each primitive is built once, so that a bad configuration fails at `configure` time with a
`ConfigError` naming the exact key path and value, never later in the middle of a call.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from types import MappingProxyType, ModuleType
from typing import Any

from .backends import Backend
from .breaker import CircuitBreaker
from .bulkhead import Bulkhead
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError
from .limiter import UNITS, Cost, Limit, Limiter
from .outcome import Classifier
from .retry import BACKOFFS, RetryBudget, RetryPolicy

__all__ = ["Policy", "parse_policies", "read_config_file"]

_Checker = Callable[[Any, str], Any]
"""Checks a value found at a key path and returns it normalised, or raises `ConfigError`."""

_PATH: ContextVar[str] = ContextVar("rate_limit_shield_policy_path", default="Policy")
"""The key path `Policy.__post_init__` reports errors under; `from_mapping` sets it."""


def _invalid(path: str, value: object, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {value!r} {problem}")


class _Number:
    """A number (not a bool, not NaN) that `accepts` says is in range; ints stay ints."""

    __slots__ = ("accepts", "bound", "finite")

    def __init__(self, bound: str, accepts: Callable[[float], bool], *, finite: bool) -> None:
        self.bound = bound
        self.accepts = accepts
        self.finite = finite

    def __call__(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, Real) or value != value:
            raise _invalid(path, value, "is not a number")
        number = int(value) if isinstance(value, Integral) else float(value)
        if self.finite and not math.isfinite(number):
            raise _invalid(path, value, f"is not a finite number {self.bound}")
        if not self.accepts(number):
            raise _invalid(path, value, f"is not {self.bound}")
        return number


_POSITIVE = _Number("> 0", lambda number: number > 0, finite=True)
_NON_NEGATIVE = _Number(">= 0", lambda number: number >= 0, finite=False)
_AT_LEAST_ONE = _Number(">= 1", lambda number: number >= 1, finite=False)
_FRACTION = _Number("in (0, 1]", lambda number: 0 < number <= 1, finite=False)
_WHOLE_SECONDS = _Number(
    "a whole number of seconds > 0",
    lambda number: number > 0 and float(number).is_integer(),
    finite=False,
)


def _count(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise _invalid(path, value, "is not an integer >= 1")
    return int(value)


def _flag(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(path, value, "is not a bool")
    return value


def _classifier(value: object, path: str) -> Classifier:
    if not all(callable(getattr(value, name, None)) for name in _CLASSIFIER_METHODS):
        raise _invalid(path, value, "is not a classifier (classify_error and classify_result)")
    return value  # type: ignore[return-value]


_CLASSIFIER_METHODS = ("classify_error", "classify_result")


def _function(value: object, path: str) -> Callable[..., Any]:
    if not callable(value):
        raise _invalid(path, value, "is not callable")
    return value


def _one_of(choices: tuple[str, ...]) -> _Checker:
    listed = ", ".join(map(repr, choices))

    def check(value: object, path: str) -> str:
        if value not in choices:
            raise _invalid(path, value, f"is not one of {listed}")
        return str(value)

    return check


def _optional(check: _Checker) -> _Checker:
    """`check`, letting None (the primitive's own "not set") through."""

    def check_unless_none(value: object, path: str) -> Any:
        return None if value is None else check(value, path)

    return check_unless_none


def _refuse_unknown(data: Mapping[Any, Any], known: Mapping[str, object], path: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
            raise ConfigError(f"{path}: unknown key {key!r} ({hint})")


_BOOL_HINTS = {True: " (use {} for the defaults)", False: " (use None to disable it)"}


class _Section:
    """A table of options: the checker of each key, and the keys that must be given."""

    __slots__ = ("checks", "required")

    def __init__(self, checks: dict[str, _Checker], *, required: tuple[str, ...] = ()) -> None:
        self.checks = checks
        self.required = required

    def fields(self, data: Mapping[Any, Any], path: str) -> dict[str, Any]:
        """The given keys, each checked; unknown or missing required keys are refused."""
        _refuse_unknown(data, self.checks, path)
        for key in self.required:
            if key not in data:
                raise ConfigError(f"{path}: {key} is required")
        return {key: self.checks[key](value, f"{path}.{key}") for key, value in data.items()}

    def __call__(self, value: object, path: str) -> Mapping[str, Any] | None:
        """A section value: None (disabled) or a mapping, stored as a read-only copy."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            hint = _BOOL_HINTS[value] if isinstance(value, bool) else ""
            raise _invalid(path, value, f"is not a mapping or None{hint}")
        return MappingProxyType(self.fields(value, path))


_LIMIT = _Section(
    {
        "amount": _POSITIVE,
        "per_seconds": _POSITIVE,
        "unit": _one_of(UNITS),
        "burst": _optional(_POSITIVE),
    },
    required=("amount", "per_seconds"),
)


def _limits(value: object, path: str) -> tuple[Limit, ...]:
    if not isinstance(value, (list, tuple)):
        raise _invalid(path, value, "is not a list of Limit")
    return tuple(_limit(entry, f"{path}[{index}]") for index, entry in enumerate(value))


def _limit(entry: object, path: str) -> Limit:
    if isinstance(entry, Limit):
        return _holding_one(entry, path, entry)
    if not isinstance(entry, Mapping):
        raise _invalid(path, entry, "is not a Limit")
    limit = Limit(**_LIMIT.fields(entry, path))
    given = "burst" if limit.burst is not None else "amount"
    return _holding_one(limit, f"{path}.{given}", entry[given])


def _holding_one(limit: Limit, path: str, value: object) -> Limit:
    """`limit`, if its bucket holds at least one unit: a smaller one admits no call at all."""
    if limit.capacity >= 1:
        return limit
    unit = limit.unit.removesuffix("s").replace("_", " ")
    if limit.burst is not None:
        hint = "burst must be >= 1"
    else:
        period = f"{limit.per_seconds / limit.amount:g}"
        kind = "" if limit.unit == "requests" else f', "unit": "{limit.unit}"'
        one = f'{{"amount": 1, "per_seconds": {period}{kind}}}'
        hint = f"for one {unit} every {period}s: limits=[{one}]"
    raise _invalid(path, value, f"holds less than one {unit} at once, so it admits none ({hint})")


def _check_model_name(name: object, path: str) -> str:
    if not isinstance(name, str) or not name:
        raise _invalid(path, name, "is not a model name (a non-empty str)")
    return name


def _model_names(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):  # a bare str is refused here too
        raise _invalid(path, value, "is not a list of model names")
    return tuple(_check_model_name(name, f"{path}[{index}]") for index, name in enumerate(value))


_RETRY = _Section(
    {
        "attempts": _count,
        "backoff": _one_of(BACKOFFS),
        "base_delay": _NON_NEGATIVE,
        "max_delay": _NON_NEGATIVE,
        "multiplier": _AT_LEAST_ONE,
        "max_retry_after": _NON_NEGATIVE,
        "budget": _Section(
            {
                "ratio": _NON_NEGATIVE,
                "min_per_second": _NON_NEGATIVE,
                "window": _WHOLE_SECONDS,
                "shared": _flag,
            }
        ),
    }
)
_RETRY_ARGUMENTS = {"attempts": "max_attempts"}
"""Retry keys whose `RetryPolicy` argument has another name."""

_BREAKER = _Section(
    {
        "failure_threshold": _optional(_count),
        "failure_rate": _optional(_FRACTION),
        "window": _optional(_count),
        "window_seconds": _optional(_POSITIVE),
        "min_calls": _count,
        "recovery_timeout": _POSITIVE,
        "max_recovery_timeout": _optional(_POSITIVE),
        "half_open_max_calls": _count,
        "slow_call_duration": _optional(_POSITIVE),
        "slow_call_rate": _optional(_FRACTION),
        "shared": _flag,
    }
)

_BULKHEAD = _Section(
    {"max_concurrent": _count, "max_wait": _NON_NEGATIVE}, required=("max_concurrent",)
)

_POLICY = _Section(
    {
        "rpm": _optional(_POSITIVE),
        "rpd": _optional(_POSITIVE),
        "tpm": _optional(_POSITIVE),
        "itpm": _optional(_POSITIVE),
        "otpm": _optional(_POSITIVE),
        "limits": _limits,
        "max_wait": _NON_NEGATIVE,
        "timeout": _optional(_POSITIVE),
        "retry": _RETRY,
        "breaker": _BREAKER,
        "bulkhead": _BULKHEAD,
        "fallbacks": _model_names,
        "adaptive": _flag,
        "classifier": _optional(_classifier),
        "cost": _optional(_function),
    }
)
"""Every `Policy` field, in field order, with its checker."""

_SHORTHANDS = (
    ("rpm", 60, "requests"),
    ("rpd", 86400, "requests"),
    ("tpm", 60, "tokens"),
    ("itpm", 60, "input_tokens"),
    ("otpm", 60, "output_tokens"),
)
"""The shorthand keys: (key, period in seconds, unit) of the `Limit` each stands for."""


@dataclass(frozen=True, eq=True, repr=False, slots=True)
class Policy:
    """One model's rate limits, deadline, retry, breaker and bulkhead settings, and fallbacks.

    `classifier` replaces the provider-aware `LLMClassifier` for the model; `cost` replaces the
    token estimate made from an SDK call's arguments. Sections (`retry`, `breaker`,
    `bulkhead`) hold only the keys given: the rest are the primitives' own defaults. An empty
    section means "on, with the defaults"; None means "off".
    """

    rpm: float | None = None
    """Requests per minute: a token bucket holding the whole amount, refilled continuously."""
    rpd: float | None = None
    """Requests per day."""
    tpm: float | None = None
    """Tokens (input and output together) per minute."""
    itpm: float | None = None
    """Input tokens per minute."""
    otpm: float | None = None
    """Output tokens per minute."""
    limits: tuple[Limit, ...] = ()
    """Explicit limits, besides or instead of the shorthands above."""
    max_wait: float = 60.0
    """Longest wait for a rate permit, in seconds, before `RateLimited`."""
    timeout: float | None = None
    """Deadline of the whole call, attempts and waits included, in seconds; None: none."""
    retry: Mapping[str, Any] | None = field(default_factory=dict)
    """`RetryPolicy` keywords (`attempts`, `backoff`, `base_delay`, ..., `budget`); None: one
    attempt."""
    breaker: Mapping[str, Any] | None = field(default_factory=dict)
    """`CircuitBreaker` keywords (`failure_threshold`, `failure_rate`, ...); None: no breaker."""
    bulkhead: Mapping[str, Any] | None = None
    """`Bulkhead` keywords (`max_concurrent`, `max_wait`); None (the default): no bulkhead."""
    fallbacks: tuple[str, ...] = ()
    """Models tried in order when this one refuses the call or its retries give up."""
    adaptive: bool = False
    """Cut the rate on each throttle and recover gradually, never above the limits."""
    classifier: Classifier | None = None
    cost: Callable[..., Cost] | None = None

    def __post_init__(self) -> None:
        path = _PATH.get()
        given = {name: getattr(self, name) for name in _POLICY.checks}
        for name, value in _POLICY.fields(given, path).items():
            object.__setattr__(self, name, value)
        for key, period, unit in _SHORTHANDS:
            amount = getattr(self, key)
            if amount is not None:
                _holding_one(Limit(amount, period, unit), f"{path}.{key}", amount)
        # Checks that span keys are the primitives' own: build each once and report under the
        # section it came from.
        builds: tuple[tuple[str, Callable[[], object]], ...] = (
            (path, self.make_limiter),
            (f"{path}.retry", self.make_retry),
            (f"{path}.retry.budget", self.make_budget),
            (f"{path}.breaker", self.make_breaker),
            (f"{path}.bulkhead", self.make_bulkhead),
        )
        if self.adaptive and not self.rate_limits():
            raise ConfigError(f"{path}.adaptive: True needs a rate limit to adapt (rpm, tpm, ...)")
        for where, build in builds:
            try:
                build()
            except ValueError as error:
                raise ConfigError(f"{where}: {error}") from error

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, path: str = "Policy") -> Policy:
        """A policy from a plain mapping (a dict, a TOML table); errors name keys under `path`."""
        if not isinstance(data, Mapping):
            raise _invalid(path, data, "is not a mapping")
        _refuse_unknown(data, _POLICY.checks, path)
        token = _PATH.set(path)
        try:
            return cls(**data)
        finally:
            _PATH.reset(token)

    def rate_limits(self) -> tuple[Limit, ...]:
        """The limits of the shorthand keys that are set, in key order, then `limits`."""
        shorthands = tuple(
            Limit(amount, period, unit)
            for key, period, unit in _SHORTHANDS
            if (amount := getattr(self, key)) is not None
        )
        return shorthands + self.limits

    @property
    def counts_tokens(self) -> bool:
        """True when a limit counts tokens, so calls need a token estimate and usage settling."""
        return any(limit.unit != "requests" for limit in self.rate_limits())

    def make_limiter(
        self, *, clock: Clock | None = None, name: str = "", backend: Backend | None = None
    ) -> Limiter | None:
        """A new limiter over `rate_limits()` (on `backend`, or in memory), or None without any."""
        limits = self.rate_limits()
        if not limits:
            return None
        if backend is None:
            return Limiter(limits, clock=clock, name=name)
        return backend.limiter(limits, clock=clock or SYSTEM_CLOCK, name=name)

    def make_breaker(
        self, *, clock: Clock | None = None, name: str = "", backend: Backend | None = None
    ) -> CircuitBreaker | None:
        """A new breaker, or None when disabled; with `shared`, its state is the backend's
        (every process sees it open), if the backend shares breakers."""
        if self.breaker is None:
            return None
        options = dict(self.breaker)
        shared = getattr(backend, "shared_breaker", None) if options.pop("shared", False) else None
        if shared is not None:
            breaker: CircuitBreaker = shared(options, clock=clock or SYSTEM_CLOCK, name=name)
            return breaker
        return CircuitBreaker(**options, clock=clock, name=name)

    def make_retry(self) -> RetryPolicy | None:
        """The retry schedule, or None for a single attempt."""
        if self.retry is None:
            return None
        return RetryPolicy(
            **{
                _RETRY_ARGUMENTS.get(key, key): value
                for key, value in self.retry.items()
                if key != "budget"
            }
        )

    def make_budget(
        self, *, clock: Clock | None = None, name: str = "", backend: Backend | None = None
    ) -> RetryBudget | None:
        """A new retry budget (RetryBudget's defaults unless given), or None when disabled;
        with `shared`, it counts on the backend (fleet-wide), if the backend shares budgets."""
        if self.retry is None or self.retry.get("budget", {}) is None:
            return None
        options = dict(self.retry.get("budget", {}))
        shared = getattr(backend, "shared_budget", None) if options.pop("shared", False) else None
        if shared is not None:
            budget: RetryBudget = shared(options, clock=clock or SYSTEM_CLOCK, name=name)
            return budget
        return RetryBudget(**options, clock=clock)

    def make_bulkhead(self, *, clock: Clock | None = None, name: str = "") -> Bulkhead | None:
        return None if self.bulkhead is None else Bulkhead(**self.bulkhead, clock=clock, name=name)

    def __hash__(self) -> int:
        return hash(tuple(_hashable(getattr(self, name)) for name in _POLICY.checks))

    def __repr__(self) -> str:
        """Only the keys that differ from the defaults, sections shown as plain dicts."""
        shown = ", ".join(
            f"{item.name}={_plain(value)!r}"
            for item in fields(self)
            if (value := getattr(self, item.name)) != getattr(_DEFAULT_POLICY, item.name)
        )
        return f"{type(self).__name__}({shown})"


_DEFAULT_POLICY = Policy()


def _hashable(value: object) -> object:
    if isinstance(value, Mapping):
        return frozenset((key, _hashable(item)) for key, item in value.items())
    return value


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def parse_policies(
    policies: Mapping[str, Policy | Mapping[str, Any]], *, path: str = "policies"
) -> dict[str, Policy]:
    """Policies by model name (or pattern), each a `Policy` kept as is or a mapping to parse."""
    if not isinstance(policies, Mapping):
        raise _invalid(path, policies, "is not a mapping of model names to policies")
    parsed: dict[str, Policy] = {}
    for name, value in policies.items():
        _check_model_name(name, path)
        where = f'{path}["{name}"]'
        if isinstance(value, Policy):
            policy = value
        elif isinstance(value, Mapping):
            policy = Policy.from_mapping(value, path=where)
        else:
            raise _invalid(where, value, "is not a Policy or a mapping")
        if name in policy.fallbacks:
            raise _invalid(f"{where}.fallbacks", policy.fallbacks, f"names {name!r} itself")
        parsed[name] = policy
    return parsed


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level table of a TOML file, uninterpreted (the registry reads the policies)."""
    shown = os.fspath(path)
    toml = _toml_module(shown)
    try:
        with open(path, "rb") as file:
            return dict(toml.load(file))
    except OSError as error:
        raise ConfigError(
            f"{shown}: cannot read the configuration file: {error.strerror or error}"
        ) from error
    except ValueError as error:  # TOMLDecodeError, or bytes that are not UTF-8
        raise ConfigError(f"{shown}: invalid TOML: {error}") from error


def _toml_module(shown: str) -> ModuleType:
    """tomllib from Python 3.11 on; the `tomli` backport before, imported only when needed."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        return importlib.import_module("tomli")
    except ImportError as error:
        raise ConfigError(
            f"{shown}: reading TOML on Python < 3.11 needs the tomli package: pip install tomli"
        ) from error
