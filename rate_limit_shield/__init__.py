"""Rate limits, circuit breakers, bulkheads and retries for code that calls LLM APIs."""

from __future__ import annotations

from . import testing  # rls.testing.FakeClock, rls.testing.isolated()
from .breaker import CircuitBreaker, Permit, State
from .bulkhead import Bulkhead
from .clock import SYSTEM_CLOCK, Clock, SystemClock
from .errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    CostTooLarge,
    QuotaExhausted,
    RateLimited,
    ShieldError,
)
from .events import Event
from .limiter import BucketView, Cost, Limit, Limiter, Reservation, TokenBucket
from .llm import LLMClassifier, Quota, RateLimitInfo, estimate_cost, usage_of
from .outcome import Classifier, DefaultClassifier, Outcome, Verdict
from .policy import Policy
from .registry import (
    Key,
    Registry,
    add_listener,
    configure,
    configure_from_file,
    default_registry,
    remove_listener,
    update,
)
from .retry import RetryBudget, RetryPolicy
from .seed import LLMShield, parse_retry_after
from .shield import Shield

# Last: the decorators `breaker`, `bulkhead` and `retry` take the names of their modules.
from .decorators import (  # isort: skip
    breaker,
    bulkhead,
    disable,
    enable,
    is_enabled,
    rate_limited,
    retry,
    shielded,
)
from .clients import shield_client  # isort: skip  # after the decorators, which it uses

# The one place the version is written: the build reads it from here ([tool.hatch.version]).
__version__ = "0.2.0"

__all__ = [
    "__version__",
    "shielded",
    "shield_client",
    "rate_limited",
    "breaker",
    "retry",
    "bulkhead",
    "disable",
    "enable",
    "is_enabled",
    "configure",
    "configure_from_file",
    "update",
    "add_listener",
    "remove_listener",
    "default_registry",
    "Policy",
    "Registry",
    "Key",
    "LLMShield",
    "Clock",
    "SystemClock",
    "SYSTEM_CLOCK",
    "ShieldError",
    "RateLimited",
    "CircuitOpen",
    "BulkheadFull",
    "QuotaExhausted",
    "CostTooLarge",
    "ConfigError",
    "Outcome",
    "Verdict",
    "Classifier",
    "DefaultClassifier",
    "Event",
    "Limit",
    "Limiter",
    "TokenBucket",
    "BucketView",
    "Reservation",
    "Cost",
    "CircuitBreaker",
    "State",
    "Permit",
    "RetryPolicy",
    "RetryBudget",
    "Bulkhead",
    "Shield",
    "LLMClassifier",
    "RateLimitInfo",
    "Quota",
    "parse_retry_after",
    "estimate_cost",
    "usage_of",
    "testing",
]
