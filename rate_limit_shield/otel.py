"""OpenTelemetry metrics and span events of the shield (extra `otel`, on `opentelemetry-api`).

    from rate_limit_shield.otel import instrument
    instrument()                      # the global meter and tracer providers

Metrics, with attributes `model` and where it applies `outcome`, `kind`, `fallback`, `state`,
`limit` (the same values as the Prometheus integration's labels):
`rate_limit_shield.calls`, `.attempts`, `.retries`, `.refusals`, `.throttles`, `.fallbacks`,
`.breaker.transitions` (counters); `rate_limit_shield.call.duration` and `.wait.duration`
(histograms, in seconds); `rate_limit_shield.breaker.state`, `.requests.available`,
`.tokens.available` and `.pause.remaining` (gauges, observed from the registry's keys at
collection time). Past `max_models` distinct models, the rest are counted under
`model="_other"` (and have no gauges).

Span events (`rate_limit_shield.retry`, `.wait`, `.throttle`, `.fallback`, `.breaker`,
`.rejected`, `.gave_up`) go to the caller's current span, with the GenAI semantic conventions'
`gen_ai.request.model` and `error.type` (an error's class name, never its message). A listener
only adds to in-memory instruments and to a span already open: exporting happens in the SDK's
readers and processors, never during a call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from . import __version__
from ._metrics import (
    BREAKER_STATES,
    DURATION_BUCKETS,
    KeyState,
    ModelLabels,
    Recorder,
    key_states,
)
from .events import (
    BREAKER,
    FALLBACK,
    GAVE_UP,
    REJECTED,
    RETRY,
    THROTTLED,
    WAITED,
    Event,
)
from .registry import Registry, default_registry

__all__ = ["instrument", "OTelMetrics"]

_SCOPE = "rate_limit_shield"

_SPAN_EVENTS = {
    RETRY: "rate_limit_shield.retry",
    WAITED: "rate_limit_shield.wait",
    THROTTLED: "rate_limit_shield.throttle",
    FALLBACK: "rate_limit_shield.fallback",
    BREAKER: "rate_limit_shield.breaker",
    REJECTED: "rate_limit_shield.rejected",
    GAVE_UP: "rate_limit_shield.gave_up",
}
"""The span event each kind of event adds to the caller's span (a success adds none: the span
itself tells of it)."""


def instrument(
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    *,
    shield_registry: Registry | None = None,
    max_models: int = 100,
) -> OTelMetrics:
    """Record the events of `shield_registry` (the default one if None) as metrics of
    `meter_provider` (the global one if None) and as events on the caller's current span,
    whichever provider made it; a `trace.NoOpTracerProvider()` as `tracer_provider` turns the
    span events off. `uninstrument()` on the result stops both."""
    spans = not isinstance(tracer_provider, trace.NoOpTracerProvider)
    recorder = OTelMetrics(
        metrics.get_meter(_SCOPE, __version__, meter_provider),
        default_registry() if shield_registry is None else shield_registry,
        ModelLabels(max_models),
        spans=spans,
    )
    recorder.shield_registry.add_listener(recorder)
    return recorder


class OTelMetrics(Recorder):
    """The shield's instruments on one meter; the listener that records to them and to spans."""

    def __init__(
        self, meter: metrics.Meter, shield_registry: Registry, labels: ModelLabels, *, spans: bool
    ) -> None:
        super().__init__(labels)
        self.shield_registry = shield_registry
        self.spans = spans
        self._observing = True
        self._calls = meter.create_counter(
            "rate_limit_shield.calls", "{call}", "Calls through a model key, by outcome."
        )
        self._attempts = meter.create_counter(
            "rate_limit_shield.attempts", "{attempt}", "Attempts made (each request sent)."
        )
        self._retries = meter.create_counter(
            "rate_limit_shield.retries", "{retry}", "Attempts that failed and were retried."
        )
        self._refusals = meter.create_counter(
            "rate_limit_shield.refusals", "{call}", "Calls refused before they went out, by kind."
        )
        self._throttles = meter.create_counter(
            "rate_limit_shield.throttles", "{throttle}", "Attempts the server throttled (429-like)."
        )
        self._fallbacks = meter.create_counter(
            "rate_limit_shield.fallbacks", "{call}", "Calls made again with a fallback model."
        )
        self._transitions = meter.create_counter(
            "rate_limit_shield.breaker.transitions",
            "{transition}",
            "Circuit breaker transitions, by the new state.",
        )
        self._durations = meter.create_histogram(
            "rate_limit_shield.call.duration",
            "s",
            "Seconds from a call's first attempt to its end.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._waits = meter.create_histogram(
            "rate_limit_shield.wait.duration",
            "s",
            "Seconds a call waited for a rate permit.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        gauges: list[tuple[str, str, str, Callable[[KeyState], Iterable[Observation]]]] = [
            ("breaker.state", "1", "1 for the breaker's current state, 0 for others.", _states),
            ("requests.available", "{request}", "Requests a model key may send now.", _requests),
            ("tokens.available", "{token}", "Tokens a model key may spend now.", _tokens),
            ("pause.remaining", "s", "Seconds left of a model key's pause.", _paused),
        ]
        for name, unit, description, observe in gauges:
            meter.create_observable_gauge(
                f"rate_limit_shield.{name}", [self._observer(observe)], unit, description
            )

    def uninstrument(self) -> None:
        """Stop recording; the gauges observe nothing from now on (OpenTelemetry's API cannot
        remove an instrument from its meter)."""
        self.shield_registry.remove_listener(self)
        self._observing = False

    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if self.spans:
            name = _SPAN_EVENTS.get(event.kind)
            if name is not None:
                span = trace.get_current_span()
                if span.is_recording():
                    span.add_event(name, span_attributes(event))

    def count_call(self, model: str, outcome: str) -> None:
        self._calls.add(1, {"model": model, "outcome": outcome})

    def count_attempt(self, model: str) -> None:
        self._attempts.add(1, {"model": model})

    def count_retry(self, model: str) -> None:
        self._retries.add(1, {"model": model})

    def count_refusal(self, model: str, kind: str) -> None:
        self._refusals.add(1, {"model": model, "kind": kind})

    def count_throttle(self, model: str) -> None:
        self._throttles.add(1, {"model": model})

    def count_transition(self, model: str, state: str) -> None:
        self._transitions.add(1, {"model": model, "state": state})

    def count_fallback(self, model: str, fallback: str) -> None:
        self._fallbacks.add(1, {"model": model, "fallback": fallback})

    def observe_duration(self, model: str, outcome: str, seconds: float) -> None:
        self._durations.record(seconds, {"model": model, "outcome": outcome})

    def observe_wait(self, model: str, seconds: float) -> None:
        self._waits.record(seconds, {"model": model})

    def _observer(
        self, observe: Callable[[KeyState], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """A gauge's callback: `observe` each key with a model label of its own."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if not self._observing:
                return []
            states = key_states(self.shield_registry, self.labels)
            return [observation for key in states for observation in observe(key)]

        return callback


def span_attributes(event: Event) -> dict[str, AttributeValue]:
    """What a span event tells of `event`: names, numbers and class names only (an error's
    message and a reason in words may carry a request's headers or a URL)."""
    attributes: dict[str, AttributeValue] = {"gen_ai.request.model": event.key}
    if event.attempt:  # 0: about no attempt (a transition, a fallback)
        attributes["rate_limit_shield.attempt"] = event.attempt
    if event.delay is not None:
        attributes["rate_limit_shield.delay"] = event.delay
    if event.outcome is not None:
        attributes["rate_limit_shield.outcome"] = event.outcome.value
    if event.error is not None:
        attributes["error.type"] = error_type(event.error)
    if event.fallback is not None:
        attributes["rate_limit_shield.fallback"] = event.fallback
    if event.duration is not None:
        attributes["rate_limit_shield.duration"] = event.duration
    if event.limit is not None:
        attributes["rate_limit_shield.limit"] = event.limit
    if event.transition is not None:
        attributes["rate_limit_shield.breaker.from"] = event.transition[0]
        attributes["rate_limit_shield.breaker.to"] = event.transition[1]
    return attributes


def error_type(error: BaseException) -> str:
    """The error's fully qualified class name, as the semantic conventions' `error.type`."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _states(key: KeyState) -> Iterable[Observation]:
    if key.breaker_state is None:
        return ()
    return (
        Observation(float(state == key.breaker_state), {"model": key.model, "state": state})
        for state in BREAKER_STATES
    )


def _levels(levels: dict[str, float], model: str) -> Iterable[Observation]:
    return (Observation(level, {"model": model, "limit": limit}) for limit, level in levels.items())


def _requests(key: KeyState) -> Iterable[Observation]:
    return _levels(key.requests, key.model)


def _tokens(key: KeyState) -> Iterable[Observation]:
    return _levels(key.tokens, key.model)


def _paused(key: KeyState) -> Iterable[Observation]:
    return (Observation(key.paused_for, {"model": key.model}),)

