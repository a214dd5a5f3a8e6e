"""What the Prometheus and OpenTelemetry integrations share: which event counts as what, the
closed sets of label values, model labels bounded in number, and the per-model state their
gauges read at collection time.

Neither metrics library is imported here: each integration subclasses `Recorder` with its own
in-memory instruments. Label values are only model names, outcome and refusal kind names and
breaker states, never an error's message, which may carry a request's headers or a URL.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Iterator
from typing import NamedTuple

from .breaker import State
from .errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    CostTooLarge,
    QuotaExhausted,
    RateLimited,
)
from .events import (
    BREAKER,
    FALLBACK,
    GAVE_UP,
    REJECTED,
    RETRY,
    SUCCEEDED,
    THROTTLED,
    WAITED,
    Event,
)
from .registry import Registry

__all__ = [
    "OTHER_MODEL",
    "CALL_OUTCOMES",
    "REFUSAL_KINDS",
    "BREAKER_STATES",
    "DURATION_BUCKETS",
    "ModelLabels",
    "Recorder",
    "KeyState",
    "key_states",
]

_log = logging.getLogger("rate_limit_shield")

OTHER_MODEL = "_other"
"""The model label of every model past the first `max_models`."""

CALL_OUTCOMES = ("success", "failure", "throttled", "ignored", "timeout", "rejected")
"""How a call through one model key ended: it succeeded; it gave up after an attempt that
failed, was throttled, or raised an error the classifier ignores (the caller's fault, a quota
gone); the deadline cut it off; or the shield refused it before it went out."""

REFUSAL_KINDS = (
    (RateLimited, "rate_limited"),
    (CircuitOpen, "circuit_open"),
    (BulkheadFull, "bulkhead_full"),
    (QuotaExhausted, "quota_exhausted"),
    (CostTooLarge, "cost_too_large"),
)
"""A refusal's kind label, by the error the shield raised ("other" for any other error)."""

BREAKER_STATES = tuple(state.value for state in State)

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Histogram bounds in seconds: the GenAI semantic conventions' for an operation's duration,
which also span the waits for a permit (`max_wait` is 60 s by default)."""

_RECORDED = frozenset((SUCCEEDED, GAVE_UP, RETRY, REJECTED, WAITED, THROTTLED, BREAKER, FALLBACK))
"""The kinds of event the metrics count: the others (a fallback's answer, a backend's outage,
estimates never settled) would take a model label for no series."""
_TIMEOUT = "timeout"
_REJECTED = "rejected"


def refusal_kind(error: BaseException | None) -> str:
    for error_type, kind in REFUSAL_KINDS:
        if isinstance(error, error_type):
            return kind
    return "other"


class ModelLabels:
    """Model names as label values: the first `max_models` distinct names as they are, every
    later one as `OTHER_MODEL`, so that callers naming models cannot grow the series without
    bound. A name seen before costs one dict lookup."""

    __slots__ = ("max_models", "_labels", "_lock")

    def __init__(self, max_models: int) -> None:
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ConfigError(f"max_models: {max_models!r} is not a positive int")
        self.max_models = max_models
        self._labels: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, model: str) -> str:
        label = self._labels.get(model)
        if label is not None:
            return label
        if len(self._labels) >= self.max_models:
            return OTHER_MODEL
        with self._lock:
            if len(self._labels) < self.max_models:
                self._labels.setdefault(model, model)
        return self._labels.get(model, OTHER_MODEL)


class Recorder(abc.ABC):
    """A registry listener turning events into updates of in-memory instruments: never an
    export, never I/O, so that a slow exporter never holds a call back. Subclasses hold one
    library's instruments; the model label of every update is bounded by `labels`."""

    def __init__(self, labels: ModelLabels) -> None:
        self.labels = labels

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind not in _RECORDED:
            return
        model = self.labels(event.key)
        if kind in (SUCCEEDED, GAVE_UP):
            outcome = "success" if kind == SUCCEEDED else _ended_by(event)
            self.count_attempt(model)
            self.count_call(model, outcome)
            if event.duration is not None:
                self.observe_duration(model, outcome, event.duration)
        elif kind == RETRY:
            self.count_attempt(model)
            self.count_retry(model)
        elif kind == REJECTED:
            self.count_call(model, _REJECTED)
            self.count_refusal(model, refusal_kind(event.error))
        elif kind == WAITED:
            if event.delay is not None:
                self.observe_wait(model, event.delay)
        elif kind == THROTTLED:
            self.count_throttle(model)
        elif kind == BREAKER:
            if event.transition is not None:
                self.count_transition(model, event.transition[1])
        elif kind == FALLBACK and event.fallback is not None:
            self.count_fallback(model, self.labels(event.fallback))

    @abc.abstractmethod
    def count_call(self, model: str, outcome: str) -> None: ...

    @abc.abstractmethod
    def count_attempt(self, model: str) -> None: ...

    @abc.abstractmethod
    def count_retry(self, model: str) -> None: ...

    @abc.abstractmethod
    def count_refusal(self, model: str, kind: str) -> None: ...

    @abc.abstractmethod
    def count_throttle(self, model: str) -> None: ...

    @abc.abstractmethod
    def count_transition(self, model: str, state: str) -> None: ...

    @abc.abstractmethod
    def count_fallback(self, model: str, fallback: str) -> None: ...

    @abc.abstractmethod
    def observe_duration(self, model: str, outcome: str, seconds: float) -> None: ...

    @abc.abstractmethod
    def observe_wait(self, model: str, seconds: float) -> None: ...


def _ended_by(event: Event) -> str:
    """A give-up's outcome: that of its last attempt; none when the deadline cut it off."""
    return _TIMEOUT if event.outcome is None else event.outcome.value


class KeyState(NamedTuple):
    """What the gauges show of one model key."""

    model: str
    breaker_state: str | None
    """None: the key has no breaker."""
    paused_for: float
    requests: dict[str, float]
    """Requests left, by limit (as `str(Limit)`, e.g. "500/60s requests")."""
    tokens: dict[str, float]
    """Tokens left (of any token unit), by limit."""


def key_states(registry: Registry, labels: ModelLabels) -> Iterator[KeyState]:
    """The state of each of the registry's keys whose model has a label of its own (an
    overflowing model has no gauge: summing levels across models would mean nothing). Read at
    collection time; a registry that cannot be read (a backend down) yields nothing, logged."""
    try:
        snapshot = registry.snapshot()
    except Exception as error:  # its message may hold a backend's URL: only its type is told
        _log.error(
            "rate_limit_shield: metrics could not read the registry's state (%s)",
            type(error).__qualname__,
        )
        return
    for name, state in snapshot.items():
        model = labels(name)
        if model == OTHER_MODEL:
            continue
        limiter = state.get("limiter")
        levels: dict[str, float] = limiter.get("levels", {}) if isinstance(limiter, dict) else {}
        requests: dict[str, float] = {}
        tokens: dict[str, float] = {}
        for limit, level in levels.items():
            # `str(Limit)` is "<amount>/<per>s <unit>[ burst <n>]".
            (requests if limit.split(" ")[1] == "requests" else tokens)[limit] = level
        breaker = state.get("breaker")
        breaker_state = State(breaker["state"]).value if isinstance(breaker, dict) else None
        paused_for = limiter.get("paused_for", 0.0) if isinstance(limiter, dict) else 0.0
        yield KeyState(model, breaker_state, paused_for, requests, tokens)
