"""Prometheus metrics: events counted into a real prometheus_client registry, gauges read from
the registry's keys when scraped, model labels bounded, no secret in any label, and
`uninstrument` leaving the registry as it was."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from metrics_scenario import SECRET, new_registry, run_paced, run_scenario, secret_error
from prometheus_client import CollectorRegistry, Counter, generate_latest

import rate_limit_shield as rls
from rate_limit_shield import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    CostTooLarge,
    Outcome,
    QuotaExhausted,
    RateLimited,
    Registry,
)
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
from rate_limit_shield.prometheus import PrometheusMetrics, instrument
from rate_limit_shield.testing import FakeClock, isolated


@pytest.fixture
def shield_registry() -> Registry:
    return new_registry()[0]


@pytest.fixture
def prom() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(prom: CollectorRegistry, shield_registry: Registry) -> Iterator[PrometheusMetrics]:
    metrics = instrument(prom, shield_registry=shield_registry)
    yield metrics
    metrics.uninstrument()


def value(prom: CollectorRegistry, name: str, **labels: str) -> float | None:
    return prom.get_sample_value(f"rate_limit_shield_{name}", labels)


# -- events, fed directly ----------------------------------------------------------------------


def test_calls_are_counted_by_how_they_ended(prom, metrics):
    metrics(Event(SUCCEEDED, "gpt-4o", 1, outcome=Outcome.SUCCESS, duration=0.3))
    metrics(Event(GAVE_UP, "gpt-4o", 3, outcome=Outcome.FAILURE, error=OSError(), duration=4.0))
    metrics(Event(GAVE_UP, "gpt-4o", 2, outcome=Outcome.THROTTLED, error=OSError()))
    metrics(Event(GAVE_UP, "gpt-4o", 1, outcome=Outcome.IGNORED, error=ValueError()))
    metrics(Event(GAVE_UP, "gpt-4o", 1, outcome=None, error=TimeoutError()))  # the deadline
    metrics(Event(REJECTED, "gpt-4o", 1, error=CircuitOpen("open")))
    for outcome in ("success", "failure", "throttled", "ignored", "timeout", "rejected"):
        assert value(prom, "calls_total", model="gpt-4o", outcome=outcome) == 1.0, outcome
    # Each ending attempt counts; a refusal sent nothing.
    assert value(prom, "attempts_total", model="gpt-4o") == 5.0


def test_retries_throttles_fallbacks_and_transitions_are_counted(prom, metrics):
    metrics(Event(THROTTLED, "gpt-4o", 1, delay=2.0, outcome=Outcome.THROTTLED))
    metrics(Event(RETRY, "gpt-4o", 1, delay=2.0, outcome=Outcome.THROTTLED))
    metrics(Event(RETRY, "gpt-4o", 2, delay=1.0, outcome=Outcome.FAILURE))
    metrics(Event(BREAKER, "gpt-4o", 2, transition=("closed", "open")))
    metrics(Event(FALLBACK, "gpt-4o", 0, fallback="claude-3", error=OSError()))
    assert value(prom, "retries_total", model="gpt-4o") == 2.0
    assert value(prom, "attempts_total", model="gpt-4o") == 2.0
    assert value(prom, "throttles_total", model="gpt-4o") == 1.0
    assert value(prom, "breaker_transitions_total", model="gpt-4o", state="open") == 1.0
    assert value(prom, "fallbacks_total", model="gpt-4o", fallback="claude-3") == 1.0


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RateLimited("no permit"), "rate_limited"),
        (CircuitOpen("open"), "circuit_open"),
        (BulkheadFull("full"), "bulkhead_full"),
        (QuotaExhausted("gone"), "quota_exhausted"),
        (CostTooLarge("too big", limit="10/60s tokens"), "cost_too_large"),
        (RuntimeError("odd"), "other"),
    ],
)
def test_refusals_are_counted_by_kind(prom, metrics, error, kind):
    metrics(Event(REJECTED, "gpt-4o", 1, error=error))
    assert value(prom, "refusals_total", model="gpt-4o", kind=kind) == 1.0


def test_durations_and_waits_are_histograms_in_seconds(prom, metrics):
    metrics(Event(SUCCEEDED, "gpt-4o", 1, outcome=Outcome.SUCCESS, duration=0.3))
    metrics(Event(SUCCEEDED, "gpt-4o", 1, outcome=Outcome.SUCCESS, duration=3.0))
    metrics(Event(GAVE_UP, "gpt-4o", 3, outcome=Outcome.FAILURE, duration=12.0))
    metrics(Event(WAITED, "gpt-4o", 1, delay=1.5, limit="60/60s requests"))
    labels = {"model": "gpt-4o", "outcome": "success"}
    assert value(prom, "call_duration_seconds_count", **labels) == 2.0
    assert value(prom, "call_duration_seconds_sum", **labels) == pytest.approx(3.3)
    assert value(prom, "call_duration_seconds_bucket", le="0.32", **labels) == 1.0
    assert value(prom, "call_duration_seconds_sum", model="gpt-4o", outcome="failure") == 12.0
    assert value(prom, "wait_seconds_count", model="gpt-4o") == 1.0
    assert value(prom, "wait_seconds_bucket", model="gpt-4o", le="1.28") == 0.0
    assert value(prom, "wait_seconds_bucket", model="gpt-4o", le="2.56") == 1.0


def test_past_max_models_the_rest_are_counted_under_one_label(prom, shield_registry):
    metrics = instrument(prom, shield_registry=shield_registry, max_models=2)
    for model in ("a", "b", "c", "d", "a"):
        metrics(Event(REJECTED, model, 1, error=RateLimited("no")))
    metrics(Event(FALLBACK, "a", 0, fallback="e", error=OSError()))
    calls = {
        sample.labels["model"]: sample.value
        for family in prom.collect()
        if family.name == "rate_limit_shield_calls"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert calls == {"a": 2.0, "b": 1.0, "_other": 2.0}
    assert value(prom, "fallbacks_total", model="a", fallback="_other") == 1.0


@pytest.mark.parametrize("max_models", [0, -1, 1.5, True, "10"])
def test_max_models_must_be_a_positive_int(prom, shield_registry, max_models):
    with pytest.raises(ConfigError, match="max_models"):
        instrument(prom, shield_registry=shield_registry, max_models=max_models)
    assert list(prom.collect()) == []


# -- gauges, read when scraped ------------------------------------------------------------------


def test_gauges_read_the_keys_state_at_scrape_time(prom, metrics, shield_registry):
    key = shield_registry.key("gpt-4o")
    tokens = shield_registry.key("tokens")
    assert key.limiter.try_acquire(5)  # no event: only a read at scrape time can see this
    key.breaker.force_open()
    tokens.limiter.pause(7.0)
    model = {"model": "gpt-4o"}
    assert value(prom, "requests_available", limit="600/60s requests", **model) == 595.0
    assert value(prom, "breaker_state", state="open", **model) == 1.0
    assert value(prom, "breaker_state", state="closed", **model) == 0.0
    assert value(prom, "pause_remaining_seconds", model="tokens") == 7.0
    key.breaker.reset()
    assert value(prom, "breaker_state", state="closed", **model) == 1.0


def test_tokens_available_per_limit():
    registry = Registry()
    policy = {"rpm": 10, "tpm": 1000, "otpm": 300, "breaker": None}
    registry.configure({"default": policy}, clock=FakeClock())
    prom = CollectorRegistry()
    instrument(prom, shield_registry=registry)
    registry.key("gpt-4o").limiter.try_acquire({"requests": 1, "tokens": 400})
    labels = {"model": "gpt-4o"}
    assert value(prom, "tokens_available", limit="1000/60s tokens", **labels) == 600.0
    assert value(prom, "tokens_available", limit="300/60s output_tokens", **labels) == 300.0
    assert value(prom, "requests_available", limit="10/60s requests", **labels) == 9.0
    assert value(prom, "breaker_state", state="closed", **labels) is None  # no breaker


def test_an_overflowing_model_has_no_gauges(prom, shield_registry):
    instrument(prom, shield_registry=shield_registry, max_models=1)
    shield_registry.key("gpt-4o")
    shield_registry.key("gpt-4o-mini")
    scraped = generate_latest(prom).decode()
    assert 'model="gpt-4o"' in scraped
    assert "gpt-4o-mini" not in scraped
    assert 'model="_other"' not in scraped


class Unreadable(Registry):
    """A registry whose state cannot be read, as when its backend is down."""

    def snapshot(self) -> dict[str, dict[str, object]]:
        raise ConnectionError(f"redis://:{SECRET}@cache:6379 down")


def test_a_registry_that_cannot_be_read_scrapes_without_gauges(prom, caplog):
    registry = Unreadable()
    registry.configure({"default": {"rpm": 10}}, clock=FakeClock())
    metrics = instrument(prom, shield_registry=registry)
    registry.key("gpt-4o")
    metrics(Event(REJECTED, "gpt-4o", 1, error=RateLimited("no")))
    with caplog.at_level(logging.ERROR, "rate_limit_shield"):
        assert value(prom, "calls_total", model="gpt-4o", outcome="rejected") == 1.0
        assert value(prom, "breaker_state", model="gpt-4o", state="closed") is None
    assert "could not read the registry's state (ConnectionError)" in caplog.text
    assert SECRET not in caplog.text


# -- safe to turn on ----------------------------------------------------------------------------


def test_no_secret_reaches_a_label(prom, metrics, shield_registry):
    run_scenario(shield_registry)
    error = secret_error()
    metrics(Event(GAVE_UP, "gpt-4o", 1, outcome=Outcome.FAILURE, error=error, reason=str(error)))
    metrics(Event(REJECTED, "gpt-4o", 1, error=RateLimited(str(error), cause=error)))
    metrics(Event(FALLBACK, "gpt-4o", 0, fallback="claude-3", error=error))
    scraped = generate_latest(prom).decode()
    assert "gpt-4o" in scraped
    assert SECRET not in scraped
    assert "redis://" not in scraped


def test_a_listener_that_raises_never_breaks_a_call(prom, metrics, shield_registry, caplog):
    def broken(model: str, outcome: str) -> None:
        raise RuntimeError("instrument broken")

    metrics.count_call = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "rate_limit_shield"):
        run_scenario(shield_registry)
    assert "listener" in caplog.text
    assert value(prom, "retries_total", model="gpt-4o") == 2.0


def test_uninstrument_stops_counting_and_unregisters(prom, shield_registry):
    metrics = instrument(prom, shield_registry=shield_registry)
    shield_registry.key("gpt-4o")
    assert value(prom, "breaker_state", model="gpt-4o", state="closed") == 1.0
    metrics.uninstrument()
    run_scenario(shield_registry)
    assert generate_latest(prom) == b""
    again = instrument(prom, shield_registry=shield_registry)  # the names are free again
    again(Event(RETRY, "gpt-4o", 1, delay=1.0))
    assert value(prom, "retries_total", model="gpt-4o") == 1.0


def test_a_name_taken_already_is_an_error_leaving_the_registry_as_it_was(prom, shield_registry):
    Counter("rate_limit_shield_throttles", "someone else's", registry=prom)
    with pytest.raises(ValueError, match="rate_limit_shield_throttles"):
        instrument(prom, shield_registry=shield_registry)
    names = {family.name for family in prom.collect()}
    assert names == {"rate_limit_shield_throttles"}
    run_scenario(shield_registry)  # no listener was left behind either
    assert value(prom, "throttles_total") == 0.0


# -- end to end ----------------------------------------------------------------------------------


def test_a_shielded_function_s_events_end_to_end(prom, metrics, shield_registry):
    run_scenario(shield_registry)
    mini, gpt = {"model": "gpt-4o-mini"}, {"model": "gpt-4o"}
    assert value(prom, "throttles_total", **mini) == 1.0
    assert value(prom, "retries_total", **mini) == 1.0
    assert value(prom, "calls_total", outcome="success", **mini) == 1.0
    assert value(prom, "attempts_total", **mini) == 2.0
    assert value(prom, "retries_total", **gpt) == 2.0
    assert value(prom, "attempts_total", **gpt) == 3.0
    assert value(prom, "calls_total", outcome="failure", **gpt) == 1.0
    assert value(prom, "calls_total", outcome="rejected", **gpt) == 1.0
    assert value(prom, "refusals_total", kind="circuit_open", **gpt) == 1.0
    assert value(prom, "fallbacks_total", fallback="claude-3", **gpt) == 2.0
    assert value(prom, "breaker_state", state="open", **gpt) == 1.0
    assert value(prom, "requests_available", limit="600/60s requests", **gpt) < 600.0


def test_successes_waits_and_breaker_transitions_end_to_end(prom, metrics, shield_registry):
    run_scenario(shield_registry)
    run_paced(shield_registry)
    assert value(prom, "calls_total", model="claude-3", outcome="success") == 2.0  # fallbacks
    assert value(prom, "calls_total", model="paced", outcome="success") == 2.0
    assert value(prom, "attempts_total", model="paced") == 2.0
    mini = {"model": "gpt-4o-mini", "outcome": "success"}
    assert value(prom, "call_duration_seconds_count", **mini) == 1.0
    assert value(prom, "call_duration_seconds_sum", **mini) >= 2.0  # the 429 asked for 2 s
    assert value(prom, "wait_seconds_count", model="paced") == 1.0
    assert value(prom, "wait_seconds_sum", model="paced") == pytest.approx(1.0)
    assert value(prom, "breaker_transitions_total", model="gpt-4o", state="open") == 1.0


def test_the_default_registry_by_default():
    prom = CollectorRegistry()
    with isolated():
        rls.configure({"default": {"retry": {"attempts": 2}}})
        metrics = instrument(prom)
        calls = iter([ConnectionError("reset"), None])

        @rls.shielded(model="gpt-4o")
        def complete() -> str:
            error = next(calls)
            if error is not None:
                raise error
            return "ok"

        assert complete() == "ok"
        assert value(prom, "retries_total", model="gpt-4o") == 1.0
        metrics.uninstrument()


def test_the_core_imports_neither_metrics_library():
    """Both are optional extras: importing the package must not need them."""
    code = (
        "import sys, rate_limit_shield;"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus', 'opentelemetry'))))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert imported.strip() == "[]"
