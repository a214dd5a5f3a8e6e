"""OpenTelemetry metrics and span events: read with the SDK's InMemoryMetricReader and
InMemorySpanExporter; gauges observed at collection time; model attributes bounded; no secret
in any attribute; exporters that block or fail never hold a call back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from metrics_scenario import SECRET, new_registry, run_paced, run_scenario, secret_error
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import rate_limit_shield as rls
from rate_limit_shield import CircuitOpen, Outcome, RateLimited, Registry
from rate_limit_shield._metrics import DURATION_BUCKETS
from rate_limit_shield.events import (
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
from rate_limit_shield.otel import OTelMetrics, instrument
from rate_limit_shield.testing import FakeClock, isolated


@pytest.fixture
def shield_registry() -> Registry:
    return new_registry()[0]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider
    provider.shutdown()


@pytest.fixture
def metrics(
    reader: InMemoryMetricReader, tracer_provider: TracerProvider, shield_registry: Registry
) -> Iterator[OTelMetrics]:
    metrics = instrument(
        MeterProvider(metric_readers=[reader]), tracer_provider, shield_registry=shield_registry
    )
    yield metrics
    metrics.uninstrument()


def collected(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Each metric of the shield's scope, by name, as the reader collects it now."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == "rate_limit_shield"
        for metric in scope.metrics
    }


def point(reader: InMemoryMetricReader, name: str, **attributes: str) -> Any:
    """The data point of metric `name` with exactly these attributes, or None."""
    metric = collected(reader).get(name)
    if metric is None:
        return None
    for data_point in metric.data.data_points:
        if dict(data_point.attributes) == attributes:
            return data_point
    return None


def value(reader: InMemoryMetricReader, name: str, **attributes: str) -> float | None:
    found = point(reader, name, **attributes)
    return None if found is None else found.value


def span_events(spans: InMemorySpanExporter) -> list[tuple[str, dict[str, Any]]]:
    return [
        (event.name, dict(event.attributes or {}))
        for span in spans.get_finished_spans()
        for event in span.events
    ]


# -- metrics, from events fed directly -----------------------------------------------------------


def test_calls_are_counted_by_how_they_ended(reader, metrics):
    metrics(Event(SUCCEEDED, "gpt-4o", 1, outcome=Outcome.SUCCESS, duration=0.3))
    metrics(Event(GAVE_UP, "gpt-4o", 3, outcome=Outcome.FAILURE, error=OSError()))
    metrics(Event(GAVE_UP, "gpt-4o", 2, outcome=Outcome.THROTTLED, error=OSError()))
    metrics(Event(GAVE_UP, "gpt-4o", 1, outcome=Outcome.IGNORED, error=ValueError()))
    metrics(Event(GAVE_UP, "gpt-4o", 1, outcome=None, error=TimeoutError()))
    metrics(Event(REJECTED, "gpt-4o", 1, error=CircuitOpen("open")))
    for outcome in ("success", "failure", "throttled", "ignored", "timeout", "rejected"):
        assert value(reader, "rate_limit_shield.calls", model="gpt-4o", outcome=outcome) == 1
    assert value(reader, "rate_limit_shield.attempts", model="gpt-4o") == 5
    kind = {"model": "gpt-4o", "kind": "circuit_open"}
    assert value(reader, "rate_limit_shield.refusals", **kind) == 1


def test_retries_throttles_fallbacks_and_transitions_are_counted(reader, metrics):
    metrics(Event(THROTTLED, "gpt-4o", 1, delay=2.0, outcome=Outcome.THROTTLED))
    metrics(Event(RETRY, "gpt-4o", 1, delay=2.0, outcome=Outcome.THROTTLED))
    metrics(Event(BREAKER, "gpt-4o", 1, transition=("closed", "open")))
    metrics(Event(FALLBACK, "gpt-4o", 0, fallback="claude-3", error=OSError()))
    assert value(reader, "rate_limit_shield.retries", model="gpt-4o") == 1
    assert value(reader, "rate_limit_shield.throttles", model="gpt-4o") == 1
    transition = {"model": "gpt-4o", "state": "open"}
    assert value(reader, "rate_limit_shield.breaker.transitions", **transition) == 1
    fallback = {"model": "gpt-4o", "fallback": "claude-3"}
    assert value(reader, "rate_limit_shield.fallbacks", **fallback) == 1


def test_durations_are_histograms_in_seconds(reader, metrics):
    metrics(Event(SUCCEEDED, "gpt-4o", 1, outcome=Outcome.SUCCESS, duration=0.3))
    metrics(Event(SUCCEEDED, "gpt-4o", 2, outcome=Outcome.SUCCESS, duration=3.0))
    metrics(Event(WAITED, "gpt-4o", 1, delay=1.5, limit="60/60s requests"))
    durations = collected(reader)["rate_limit_shield.call.duration"]
    assert durations.unit == "s"
    (success,) = durations.data.data_points
    assert dict(success.attributes) == {"model": "gpt-4o", "outcome": "success"}
    assert (success.count, success.sum) == (2, pytest.approx(3.3))
    assert tuple(success.explicit_bounds) == DURATION_BUCKETS
    wait = point(reader, "rate_limit_shield.wait.duration", model="gpt-4o")
    assert (wait.count, wait.sum) == (1, 1.5)


def test_past_max_models_the_rest_are_counted_under_one_attribute(reader, shield_registry):
    metrics = instrument(
        MeterProvider(metric_readers=[reader]), shield_registry=shield_registry, max_models=2
    )
    for model in ("a", "b", "c", "d", "a"):
        metrics(Event(REJECTED, model, 1, error=RateLimited("no")))
    calls = collected(reader)["rate_limit_shield.calls"].data.data_points
    assert {point.attributes["model"]: point.value for point in calls} == {
        "a": 2, "b": 1, "_other": 2,
    }  # fmt: skip


# -- gauges, observed at collection time ---------------------------------------------------------


def test_gauges_observe_the_keys_state_at_collection_time(reader, metrics, shield_registry):
    key = shield_registry.key("gpt-4o")
    assert key.limiter.try_acquire(5)  # no event: only an observation can see this
    key.breaker.force_open()
    key.limiter.pause(7.0)
    model = {"model": "gpt-4o"}
    limit = {"limit": "600/60s requests", **model}
    assert value(reader, "rate_limit_shield.requests.available", **limit) == 595.0
    assert value(reader, "rate_limit_shield.breaker.state", state="open", **model) == 1.0
    assert value(reader, "rate_limit_shield.breaker.state", state="closed", **model) == 0.0
    assert value(reader, "rate_limit_shield.pause.remaining", **model) == 7.0
    key.breaker.reset()
    assert value(reader, "rate_limit_shield.breaker.state", state="closed", **model) == 1.0


def test_tokens_available_per_limit(reader):
    registry = Registry()
    registry.configure({"default": {"rpm": 10, "tpm": 1000}}, clock=FakeClock())
    instrument(MeterProvider(metric_readers=[reader]), shield_registry=registry)
    registry.key("gpt-4o").limiter.try_acquire({"requests": 1, "tokens": 400})
    tokens = {"model": "gpt-4o", "limit": "1000/60s tokens"}
    assert value(reader, "rate_limit_shield.tokens.available", **tokens) == pytest.approx(600.0)


# -- span events ---------------------------------------------------------------------------------


def test_events_go_to_the_caller_s_current_span(metrics, tracer_provider, spans):
    with tracer_provider.get_tracer("app").start_as_current_span("summarize"):
        metrics(Event(WAITED, "gpt-4o", 1, delay=1.5, limit="60/60s requests"))
        metrics(Event(THROTTLED, "gpt-4o", 1, delay=2.0, outcome=Outcome.THROTTLED))
        metrics(Event(RETRY, "gpt-4o", 1, delay=2.0, outcome=Outcome.THROTTLED, error=OSError()))
        metrics(Event(BREAKER, "gpt-4o", 0, transition=("closed", "open")))
        metrics(Event(FALLBACK, "gpt-4o", 0, fallback="claude-3", error=CircuitOpen("open")))
        metrics(Event(SUCCEEDED, "claude-3", 1, outcome=Outcome.SUCCESS, duration=0.2))
    model = {"gen_ai.request.model": "gpt-4o"}
    assert span_events(spans) == [
        ("rate_limit_shield.wait", {**model, "rate_limit_shield.attempt": 1,
         "rate_limit_shield.delay": 1.5, "rate_limit_shield.limit": "60/60s requests"}),
        ("rate_limit_shield.throttle", {**model, "rate_limit_shield.attempt": 1,
         "rate_limit_shield.delay": 2.0, "rate_limit_shield.outcome": "throttled"}),
        ("rate_limit_shield.retry", {**model, "rate_limit_shield.attempt": 1,
         "rate_limit_shield.delay": 2.0, "rate_limit_shield.outcome": "throttled",
         "error.type": "OSError"}),
        ("rate_limit_shield.breaker", {**model,
         "rate_limit_shield.breaker.from": "closed", "rate_limit_shield.breaker.to": "open"}),
        ("rate_limit_shield.fallback", {**model, "rate_limit_shield.fallback": "claude-3",
         "error.type": "rate_limit_shield.errors.CircuitOpen"}),
    ]  # fmt: skip


def test_without_a_current_span_events_only_count(reader, metrics, spans):
    metrics(Event(RETRY, "gpt-4o", 1, delay=2.0, outcome=Outcome.FAILURE))
    assert value(reader, "rate_limit_shield.retries", model="gpt-4o") == 1
    assert spans.get_finished_spans() == ()


def test_a_no_op_tracer_provider_turns_span_events_off(reader, tracer_provider, spans):
    registry = new_registry()[0]
    metrics = instrument(
        MeterProvider(metric_readers=[reader]), trace.NoOpTracerProvider(),
        shield_registry=registry,
    )  # fmt: skip
    with tracer_provider.get_tracer("app").start_as_current_span("summarize"):
        metrics(Event(RETRY, "gpt-4o", 1, delay=2.0, outcome=Outcome.FAILURE))
    assert span_events(spans) == []
    assert value(reader, "rate_limit_shield.retries", model="gpt-4o") == 1


# -- end to end ----------------------------------------------------------------------------------


def test_a_shielded_function_s_events_end_to_end(
    reader, metrics, tracer_provider, spans, shield_registry
):
    with tracer_provider.get_tracer("app").start_as_current_span("job"):
        run_scenario(shield_registry)
    mini, gpt = {"model": "gpt-4o-mini"}, {"model": "gpt-4o"}
    assert value(reader, "rate_limit_shield.throttles", **mini) == 1
    assert value(reader, "rate_limit_shield.retries", **mini) == 1
    assert value(reader, "rate_limit_shield.calls", outcome="success", **mini) == 1
    assert value(reader, "rate_limit_shield.attempts", **gpt) == 3
    assert value(reader, "rate_limit_shield.calls", outcome="failure", **gpt) == 1
    assert value(reader, "rate_limit_shield.calls", outcome="rejected", **gpt) == 1
    assert value(reader, "rate_limit_shield.refusals", kind="circuit_open", **gpt) == 1
    assert value(reader, "rate_limit_shield.fallbacks", fallback="claude-3", **gpt) == 2
    assert value(reader, "rate_limit_shield.breaker.state", state="open", **gpt) == 1.0
    names = [
        (name, attributes["gen_ai.request.model"])
        for name, attributes in span_events(spans)
        if name != "rate_limit_shield.breaker"  # see the next test
    ]
    assert names == [
        ("rate_limit_shield.throttle", "gpt-4o-mini"),
        ("rate_limit_shield.retry", "gpt-4o-mini"),
        ("rate_limit_shield.retry", "gpt-4o"),
        ("rate_limit_shield.retry", "gpt-4o"),
        ("rate_limit_shield.gave_up", "gpt-4o"),
        ("rate_limit_shield.fallback", "gpt-4o"),
        ("rate_limit_shield.rejected", "gpt-4o"),
        ("rate_limit_shield.fallback", "gpt-4o"),
    ]
    (_, throttle), *_ = span_events(spans)
    assert throttle["error.type"] == "openai.RateLimitError"


def test_successes_waits_and_breaker_transitions_end_to_end(
    reader, metrics, tracer_provider, spans, shield_registry
):
    with tracer_provider.get_tracer("app").start_as_current_span("job"):
        run_scenario(shield_registry)
        run_paced(shield_registry)
    assert value(reader, "rate_limit_shield.calls", model="claude-3", outcome="success") == 2
    assert value(reader, "rate_limit_shield.calls", model="paced", outcome="success") == 2
    durations = point(
        reader, "rate_limit_shield.call.duration", model="gpt-4o-mini", outcome="success"
    )
    assert durations.count == 1
    assert durations.sum >= 2.0  # the 429 asked for 2 s
    wait = point(reader, "rate_limit_shield.wait.duration", model="paced")
    assert (wait.count, wait.sum) == (1, pytest.approx(1.0))
    transition = {"model": "gpt-4o", "state": "open"}
    assert value(reader, "rate_limit_shield.breaker.transitions", **transition) == 1
    events = span_events(spans)
    (breaker,) = (attributes for name, attributes in events if name == "rate_limit_shield.breaker")
    assert breaker["gen_ai.request.model"] == "gpt-4o"
    assert (breaker["rate_limit_shield.breaker.from"], breaker["rate_limit_shield.breaker.to"]) == (
        "closed", "open",
    )  # fmt: skip
    (wait_event,) = (attributes for name, attributes in events if name == "rate_limit_shield.wait")
    assert wait_event["gen_ai.request.model"] == "paced"
    assert wait_event["rate_limit_shield.delay"] == pytest.approx(1.0)
    assert wait_event["rate_limit_shield.limit"] == "60/60s requests burst 1"


def test_the_default_registry_by_default(reader, tracer_provider):
    with isolated():
        rls.configure({"default": {"retry": {"attempts": 2}}})
        metrics = instrument(MeterProvider(metric_readers=[reader]), tracer_provider)
        calls = iter([ConnectionError("reset"), None])

        @rls.shielded(model="gpt-4o")
        def complete() -> str:
            error = next(calls)
            if error is not None:
                raise error
            return "ok"

        assert complete() == "ok"
        assert value(reader, "rate_limit_shield.retries", model="gpt-4o") == 1
        metrics.uninstrument()


def test_uninstrument_stops_recording_and_observing(reader, metrics, shield_registry):
    shield_registry.key("gpt-4o")
    assert value(reader, "rate_limit_shield.breaker.state", model="gpt-4o", state="closed") == 1
    metrics.uninstrument()
    run_scenario(shield_registry)
    assert collected(reader) == {}


# -- safe to turn on -----------------------------------------------------------------------------


def test_no_secret_reaches_an_attribute(reader, metrics, tracer_provider, spans, shield_registry):
    error = secret_error()
    with tracer_provider.get_tracer("app").start_as_current_span("job"):
        run_scenario(shield_registry)
        metrics(Event(GAVE_UP, "gpt-4o", 1, outcome=Outcome.FAILURE, error=error,
                      reason=str(error)))  # fmt: skip
        metrics(Event(REJECTED, "gpt-4o", 1, error=RateLimited(str(error), cause=error)))
        metrics(Event(THROTTLED, "gpt-4o", 1, delay=1.0, error=error, reason=str(error)))
    data = reader.get_metrics_data()
    assert data is not None
    recorded = data.to_json() + repr(span_events(spans))
    assert "gpt-4o" in recorded
    assert SECRET not in recorded
    assert "redis://" not in recorded


class BlockingSpanExporter(SpanExporter):
    """Exports nothing until released: an exporter stuck on a network that does not answer."""

    def __init__(self) -> None:
        self.exporting = threading.Event()
        self.released = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.released.wait(60)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.released.set()


class FailingSpanExporter(BlockingSpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        raise ConnectionError(f"collector at https://{SECRET}@otel:4318 refused")


class BlockingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exporting = threading.Event()
        self.released = threading.Event()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exporting.set()
        self.released.wait(60)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.released.set()


@pytest.mark.parametrize("span_exporter", [BlockingSpanExporter, FailingSpanExporter])
def test_exporters_that_block_or_fail_never_hold_a_call_back(span_exporter, spans):
    """Real time: the exporters run on the SDK's own threads, blocked for up to 60 s, while 20
    scenarios (a few ms each on a FakeClock) record their events."""
    exporter, metric_exporter = span_exporter(), BlockingMetricExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metric_reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=1)
    meter_provider = MeterProvider(metric_readers=[metric_reader])
    registry = new_registry()[0]
    metrics = instrument(meter_provider, tracer_provider, shield_registry=registry)
    tracer = tracer_provider.get_tracer("app")
    try:
        with tracer.start_as_current_span("first"):  # something for each exporter to export
            metrics(Event(RETRY, "gpt-4o", 1, delay=1.0))
        assert exporter.exporting.wait(10) and metric_exporter.exporting.wait(10)
        started = time.monotonic()
        for _ in range(20):
            with tracer.start_as_current_span("job"):
                run_scenario(registry)
                registry.reset()
        assert time.monotonic() - started < 10.0
        retries = [name for name, _ in span_events(spans) if name == "rate_limit_shield.retry"]
        assert len(retries) == 1 + 20 * 3
    finally:
        metrics.uninstrument()
        exporter.released.set()
        metric_exporter.released.set()
        tracer_provider.shutdown()
        meter_provider.shutdown()
