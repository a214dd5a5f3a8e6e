"""Prometheus metrics of the shield (extra `prometheus`, on `prometheus-client`).

    from rate_limit_shield.prometheus import instrument
    instrument()                      # into prometheus_client's default REGISTRY

Counters and histograms are updated in memory by a registry listener; the gauges (breaker
state, requests and tokens left, pause left) are read from the registry's keys when scraped,
so a call pays nothing for them. Past `max_models` distinct models, the rest are counted under
`model="_other"` (and have no gauges).

| metric | labels |
| --- | --- |
| `rate_limit_shield_calls_total` | `model`, `outcome` (success, failure, throttled, ignored, timeout, rejected) |
| `rate_limit_shield_attempts_total`, `..._retries_total`, `..._throttles_total` | `model` |
| `rate_limit_shield_refusals_total` | `model`, `kind` (rate_limited, circuit_open, bulkhead_full, quota_exhausted, cost_too_large) |
| `rate_limit_shield_fallbacks_total` | `model`, `fallback` |
| `rate_limit_shield_breaker_transitions_total` | `model`, `state` (the new one) |
| `rate_limit_shield_call_duration_seconds` (histogram) | `model`, `outcome` |
| `rate_limit_shield_wait_seconds` (histogram) | `model` |
| `rate_limit_shield_breaker_state` (1 for the current state) | `model`, `state` |
| `rate_limit_shield_requests_available`, `..._tokens_available` | `model`, `limit` |
| `rate_limit_shield_pause_remaining_seconds` | `model` |
"""  # noqa: E501 - a table

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ._metrics import BREAKER_STATES, DURATION_BUCKETS, ModelLabels, Recorder, key_states
from .registry import Registry, default_registry

__all__ = ["instrument", "PrometheusMetrics"]

_PREFIX = "rate_limit_shield_"

_C = TypeVar("_C", bound=Collector)


def instrument(
    registry: CollectorRegistry | None = None,
    *,
    shield_registry: Registry | None = None,
    max_models: int = 100,
) -> PrometheusMetrics:
    """Register the shield's metrics in `registry` (prometheus_client's default `REGISTRY` if
    None) and start counting the events of `shield_registry` (the default one if None).
    `uninstrument()` on the result undoes both."""
    metrics = PrometheusMetrics(
        REGISTRY if registry is None else registry,
        default_registry() if shield_registry is None else shield_registry,
        ModelLabels(max_models),
    )
    metrics.shield_registry.add_listener(metrics)
    return metrics


class PrometheusMetrics(Recorder):
    """The shield's metrics in one prometheus_client registry; the listener that counts them."""

    def __init__(
        self, registry: CollectorRegistry, shield_registry: Registry, labels: ModelLabels
    ) -> None:
        super().__init__(labels)
        self.registry = registry
        self.shield_registry = shield_registry
        self._collectors: list[Collector] = []
        try:
            self._make_instruments()
        except BaseException:  # a name taken already: leave the registry as it was
            self._unregister()
            raise

    def _make_instruments(self) -> None:
        self._calls = self._counter("calls", "Calls through a model key, by outcome.", "outcome")
        self._attempts = self._counter("attempts", "Attempts made (each request sent).")
        self._retries = self._counter("retries", "Attempts that failed and were retried.")
        self._refusals = self._counter(
            "refusals", "Calls the shield refused before they went out, by kind.", "kind"
        )
        self._throttles = self._counter("throttles", "Attempts the server throttled (429-like).")
        self._fallbacks = self._counter(
            "fallbacks", "Calls made again with a fallback model.", "fallback"
        )
        self._transitions = self._counter(
            "breaker_transitions", "Circuit breaker transitions, by the new state.", "state"
        )
        self._durations = self._histogram(
            "call_duration_seconds", "Seconds from a call's first attempt to its end.", "outcome"
        )
        self._waits = self._histogram("wait_seconds", "Seconds a call waited for a rate permit.")
        self._register(_StateCollector(self.shield_registry, self.labels))

    def uninstrument(self) -> None:
        """Stop counting and remove every metric from the prometheus_client registry."""
        self.shield_registry.remove_listener(self)
        self._unregister()

    def _unregister(self) -> None:
        for collector in self._collectors:
            self.registry.unregister(collector)
        self._collectors.clear()

    def count_call(self, model: str, outcome: str) -> None:
        self._calls.labels(model, outcome).inc()

    def count_attempt(self, model: str) -> None:
        self._attempts.labels(model).inc()

    def count_retry(self, model: str) -> None:
        self._retries.labels(model).inc()

    def count_refusal(self, model: str, kind: str) -> None:
        self._refusals.labels(model, kind).inc()

    def count_throttle(self, model: str) -> None:
        self._throttles.labels(model).inc()

    def count_transition(self, model: str, state: str) -> None:
        self._transitions.labels(model, state).inc()

    def count_fallback(self, model: str, fallback: str) -> None:
        self._fallbacks.labels(model, fallback).inc()

    def observe_duration(self, model: str, outcome: str, seconds: float) -> None:
        self._durations.labels(model, outcome).observe(seconds)

    def observe_wait(self, model: str, seconds: float) -> None:
        self._waits.labels(model).observe(seconds)

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        # prometheus_client appends the `_total` of a counter's samples itself.
        counter = Counter(_PREFIX + name, documentation, ("model", *labels), registry=None)
        return self._register(counter)

    def _histogram(self, name: str, documentation: str, *labels: str) -> Histogram:
        histogram = Histogram(
            _PREFIX + name,
            documentation,
            ("model", *labels),
            registry=None,
            buckets=DURATION_BUCKETS,
        )
        return self._register(histogram)

    def _register(self, collector: _C) -> _C:
        self.registry.register(collector)
        self._collectors.append(collector)
        return collector


class _StateCollector(Collector):
    """The gauges, read from the registry's keys at each scrape."""

    def __init__(self, shield_registry: Registry, labels: ModelLabels) -> None:
        self._shield_registry = shield_registry
        self._labels = labels

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_gauges())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        breaker, requests, tokens, paused = gauges = _gauges()
        for key in key_states(self._shield_registry, self._labels):
            if key.breaker_state is not None:
                for state in BREAKER_STATES:
                    breaker.add_metric([key.model, state], float(state == key.breaker_state))
            for limit, level in key.requests.items():
                requests.add_metric([key.model, limit], level)
            for limit, level in key.tokens.items():
                tokens.add_metric([key.model, limit], level)
            paused.add_metric([key.model], key.paused_for)
        return iter(gauges)


def _gauges() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily(
            _PREFIX + "breaker_state",
            "1 for the circuit breaker's current state, 0 for the others.",
            labels=("model", "state"),
        ),
        GaugeMetricFamily(
            _PREFIX + "requests_available",
            "Requests a model key may send now, by limit (negative: owed).",
            labels=("model", "limit"),
        ),
        GaugeMetricFamily(
            _PREFIX + "tokens_available",
            "Tokens a model key may spend now, by limit (negative: owed).",
            labels=("model", "limit"),
        ),
        GaugeMetricFamily(
            _PREFIX + "pause_remaining_seconds",
            "Seconds left of a model key's pause (after a server's Retry-After).",
            labels=("model",),
        ),
    )
