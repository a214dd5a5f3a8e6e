"""Registry: resolution, per-model state, configure, fallbacks, snapshots, TOML files and the
environment variable, `testing.isolated` and the `shield_clock` fixture."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rate_limit_shield as rls
from rate_limit_shield.breaker import State
from rate_limit_shield.errors import (
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    QuotaExhausted,
    RateLimited,
)
from rate_limit_shield.events import FALLBACK, Event
from rate_limit_shield.policy import Policy
from rate_limit_shield.registry import Key, Registry
from rate_limit_shield.testing import FakeClock, isolated

ENV = "RATE_LIMIT_SHIELD_CONFIG"
ONE_RPM = {"rpm": 1, "max_wait": 0, "retry": None}
"""One request a minute, refused at once (no wait, no retry) when used up."""


def make_registry(
    policies: dict[str, Any], *, clock: FakeClock | None = None, **options: Any
) -> Registry:
    registry = Registry()
    registry.configure(policies, clock=clock if clock is not None else FakeClock(), **options)
    return registry


def echo_model(*, model: str = "gpt-4o") -> str:
    return model


# -- resolution ----------------------------------------------------------------------------------

RESOLUTION_POLICIES = {
    "default": {"rpm": 1},
    "gpt-*": {"rpm": 2},  # declared before the more specific patterns on purpose
    "gpt-4o*": {"rpm": 3},
    "gpt-4o": {"rpm": 4},
    "claude-?": {"rpm": 5},
}


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o*"),
        ("gpt-4", "gpt-*"),
        ("claude-3", "claude-?"),
        ("claude-3-haiku", "default"),
        ("llama-3", "default"),
    ],
)
def test_model_resolves_to_exact_name_then_most_specific_glob_then_default(
    model: str, pattern: str
) -> None:
    registry = make_registry(RESOLUTION_POLICIES)
    key = registry.key(model)
    assert (key.name, key.pattern) == (model, pattern)
    assert key.policy == Policy.from_mapping(RESOLUTION_POLICIES[pattern])


def test_matching_globs_come_in_the_order_resolution_tries_them() -> None:
    registry = make_registry(RESOLUTION_POLICIES)
    assert registry.matching_globs("gpt-4o-mini") == ["gpt-4o*", "gpt-*"]
    assert registry.matching_globs("gpt-4o") == ["gpt-4o*", "gpt-*"]  # the exact name wins
    assert registry.matching_globs("llama-3") == []


def test_star_glob_is_preferred_to_default() -> None:
    registry = make_registry({"default": {"rpm": 1}, "*": {"rpm": 2}})
    assert registry.key("anything").pattern == "*"


def test_equally_literal_globs_prefer_the_longer_pattern() -> None:
    registry = make_registry({"gpt-4*": {"rpm": 1}, "gpt-4?*": {"rpm": 2}})
    assert registry.key("gpt-4o").pattern == "gpt-4?*"


@pytest.mark.parametrize("first", ["gpt-*o", "gpt-4*"])
def test_equally_specific_globs_of_equal_length_prefer_the_first_declared(first: str) -> None:
    second = "gpt-4*" if first == "gpt-*o" else "gpt-*o"
    registry = make_registry({first: {"rpm": 1}, second: {"rpm": 2}})
    assert registry.key("gpt-4o").pattern == first


def test_unmatched_model_without_default_gets_the_built_in_policy() -> None:
    key = make_registry({"gpt-4o": {"rpm": 1}}).key("llama-3")
    assert key.pattern == "(built-in)"
    assert key.policy == Policy()


def test_unconfigured_registry_gives_the_built_in_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    key = Registry().key("gpt-4o")
    assert (key.pattern, key.policy) == ("(built-in)", Policy())


_NAMES = st.text(alphabet="ab-4*?", min_size=1, max_size=6)


@given(
    patterns=st.lists(_NAMES, min_size=1, max_size=6, unique=True),
    model=st.text(alphabet="ab-4", min_size=1, max_size=6),
)
def test_a_model_gets_the_most_specific_of_the_patterns_it_matches(
    patterns: list[str], model: str
) -> None:
    """Property: the chosen policy is the exact name if configured, else a matching pattern with
    no other match more literal (or as literal and longer); else the default."""
    registry = make_registry({**{name: {"rpm": 1} for name in patterns}, "default": {}})
    chosen = registry.key(model).pattern
    matching = [name for name in patterns if fnmatch.fnmatchcase(model, name)]
    if model in patterns:
        assert chosen == model
    elif not matching:
        assert chosen == "default"
    else:

        def rank(name: str) -> tuple[int, int]:
            return (sum(char not in "*?[]" for char in name), len(name))

        assert chosen in matching
        assert rank(chosen) == max(rank(name) for name in matching)
        assert chosen == next(
            name for name in patterns if name in matching and rank(name) == rank(chosen)
        )


def test_strict_registry_refuses_an_unknown_model_naming_it() -> None:
    registry = make_registry({"gpt-4o*": {"rpm": 1}}, strict=True)
    assert registry.key("gpt-4o-mini").pattern == "gpt-4o*"
    with pytest.raises(ConfigError, match="llama-3"):
        registry.key("llama-3")


def test_strict_registry_with_a_default_resolves_unknown_models_to_it() -> None:
    registry = make_registry({"default": {"rpm": 1}}, strict=True)
    assert registry.key("llama-3").pattern == "default"


def test_policy_objects_are_accepted_as_they_are() -> None:
    policy = Policy(rpm=7)
    registry = make_registry({"gpt-4o": policy})
    assert registry.key("gpt-4o").policy is policy


@pytest.mark.parametrize("model", ["", None, 4])
def test_key_refuses_what_is_not_a_model_name(model: Any) -> None:
    with pytest.raises(ConfigError, match="model"):
        make_registry({}).key(model)


# -- per-model state -----------------------------------------------------------------------------

ISOLATION_POLICIES = {"gpt-4o*": ONE_RPM, "claude-*": ONE_RPM}


def test_exhausting_one_models_rate_leaves_the_others_untouched() -> None:
    registry = make_registry(ISOLATION_POLICIES)
    complete = rls.shielded(registry=registry)(echo_model)
    complete(model="gpt-4o")
    with pytest.raises(RateLimited):
        complete(model="gpt-4o")
    assert complete(model="gpt-4o-mini") == "gpt-4o-mini"  # same pattern, its own bucket
    assert complete(model="claude-3") == "claude-3"


def test_opening_one_models_breaker_leaves_the_others_closed() -> None:
    registry = make_registry(ISOLATION_POLICIES)
    complete = rls.shielded(registry=registry)(echo_model)
    registry.key("gpt-4o").breaker.force_open()
    with pytest.raises(CircuitOpen):
        complete(model="gpt-4o")
    assert complete(model="gpt-4o-mini") == "gpt-4o-mini"
    assert complete(model="claude-3") == "claude-3"
    assert registry.key("gpt-4o-mini").breaker.state is State.CLOSED
    assert registry.key("claude-3").breaker.state is State.CLOSED


def test_models_sharing_a_pattern_have_separate_primitives() -> None:
    registry = make_registry({"gpt-4o*": {"rpm": 1, "bulkhead": {"max_concurrent": 1}}})
    big, mini = registry.key("gpt-4o"), registry.key("gpt-4o-mini")
    assert big.pattern == mini.pattern == "gpt-4o*"
    for part in ("limiter", "breaker", "budget", "bulkhead", "shield"):
        assert getattr(big, part) is not getattr(mini, part)


def test_key_is_the_same_object_with_the_same_primitives_on_every_lookup() -> None:
    registry = make_registry({"gpt-4o": {"rpm": 1, "bulkhead": {"max_concurrent": 1}}})
    key = registry.key("gpt-4o")
    again = registry.key("gpt-4o")
    assert again is key
    for part in ("limiter", "breaker", "retry", "budget", "bulkhead", "shield"):
        assert getattr(again, part) is getattr(key, part) is not None


def test_every_function_decorated_for_a_model_shares_its_limiter() -> None:
    registry = make_registry({"gpt-4o": {**ONE_RPM, "rpm": 2}})
    first = rls.shielded(model="gpt-4o", registry=registry)(echo_model)
    second = rls.shielded(model="gpt-4o", registry=registry)(echo_model)
    limited = rls.rate_limited(model="gpt-4o", registry=registry)(echo_model)
    first()
    second()
    with pytest.raises(RateLimited):
        limited()
    assert registry.key("gpt-4o").limiter.available == 0


def test_every_function_decorated_for_a_model_shares_its_breaker() -> None:
    registry = make_registry({"gpt-4o": {"retry": None, "breaker": {"failure_threshold": 2}}})

    def fail() -> None:
        raise ConnectionError("provider down")

    first = rls.shielded(model="gpt-4o", registry=registry)(fail)
    second = rls.breaker(model="gpt-4o", registry=registry)(fail)
    for decorated in (first, second):
        with pytest.raises(ConnectionError):
            decorated()
    assert registry.key("gpt-4o").breaker.state is State.OPEN
    with pytest.raises(CircuitOpen):
        first()


def test_every_function_decorated_for_a_model_shares_its_bulkhead() -> None:
    registry = make_registry({"gpt-4o": {"bulkhead": {"max_concurrent": 1, "max_wait": 0}}})
    inner = rls.bulkhead(model="gpt-4o", registry=registry)(echo_model)

    @rls.shielded(model="gpt-4o", registry=registry)
    def outer() -> object:
        assert registry.key("gpt-4o").bulkhead.snapshot()["in_flight"] == 1
        with pytest.raises(BulkheadFull):
            inner()
        return "done"

    assert outer() == "done"


def test_every_function_decorated_for_a_model_shares_its_retry_budget() -> None:
    registry = make_registry({"gpt-4o": {}})
    first = rls.shielded(model="gpt-4o", registry=registry)(echo_model)
    second = rls.shielded(model="gpt-4o", registry=registry)(echo_model)
    first()
    second()
    assert registry.key("gpt-4o").budget.snapshot()["calls"] == 2


@pytest.mark.parametrize("round_", range(5))
def test_threads_asking_for_a_new_key_at_once_get_the_same_object(round_: int) -> None:
    registry = make_registry({"default": {"rpm": 10, "bulkhead": {"max_concurrent": 2}}})
    barrier = threading.Barrier(16)
    keys: list[Key] = []

    def look_up() -> None:
        barrier.wait(timeout=10)
        keys.append(registry.key("m"))

    threads = [threading.Thread(target=look_up) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(keys) == 16
    assert all(key is keys[0] for key in keys)
    assert registry.key("m") is keys[0]


DECORATIONS_BY_SOURCE: dict[str, Callable[[Registry], Callable[..., Any]]] = {
    "model from the call": lambda registry: rls.shielded(registry=registry),
    "model from a function": lambda registry: rls.shielded(
        model=lambda **kwargs: kwargs["model"], registry=registry
    ),
}


def test_calls_from_threads_while_configure_runs_all_complete() -> None:
    """Readers never lock: a configure swapping the state under 8 calling threads loses no call
    and raises nothing; every call goes through one of the configurations."""
    registry = make_registry({"gpt-*": {"rpm": 1e9}})
    decorated = {
        name: decorate(registry)(echo_model) for name, decorate in DECORATIONS_BY_SOURCE.items()
    }
    stop = threading.Event()
    results: list[str] = []
    errors: list[BaseException] = []

    def call(function: Callable[..., str], model: str) -> None:
        while not stop.is_set():
            try:
                results.append(function(model=model))
            except BaseException as exc:  # any error at all fails the test
                errors.append(exc)

    threads = [
        threading.Thread(target=call, args=(function, f"gpt-{n % 2}"))
        for n, function in enumerate(list(decorated.values()) * 4)
    ]
    for thread in threads:
        thread.start()
    for n in range(200):
        registry.configure({"gpt-*": {"rpm": 1e9 + n % 2}, "default": {}})
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    assert len(results) > 8
    assert set(results) <= {"gpt-0", "gpt-1"}
    assert registry.key("gpt-0").policy.rpm == 1e9 + 1


# -- configure -----------------------------------------------------------------------------------

DECORATIONS: dict[str, Callable[[Registry], Callable[..., Any]]] = {
    "fixed model": lambda registry: rls.shielded(model="gpt-4o", registry=registry),
    "model from the call": lambda registry: rls.shielded(registry=registry),
}


@pytest.mark.parametrize("decoration", DECORATIONS.values(), ids=DECORATIONS.keys())
def test_decorating_before_configure_resolves_the_policy_at_call_time(
    decoration: Callable[[Registry], Callable[..., Any]],
) -> None:
    registry = Registry()
    complete = decoration(registry)(echo_model)
    registry.configure({"gpt-4o": ONE_RPM}, clock=FakeClock())
    assert complete(model="gpt-4o") == "gpt-4o"
    with pytest.raises(RateLimited):
        complete(model="gpt-4o")


@pytest.mark.parametrize("decoration", DECORATIONS.values(), ids=DECORATIONS.keys())
def test_configure_again_applies_new_limits_on_the_next_call(
    decoration: Callable[[Registry], Callable[..., Any]],
) -> None:
    clock = FakeClock()
    registry = make_registry({"gpt-4o": ONE_RPM}, clock=clock)
    complete = decoration(registry)(echo_model)
    complete(model="gpt-4o")
    with pytest.raises(RateLimited):
        complete(model="gpt-4o")
    registry.configure({"gpt-4o": {**ONE_RPM, "rpm": 3}}, clock=clock)
    for _ in range(3):
        complete(model="gpt-4o")
    with pytest.raises(RateLimited):
        complete(model="gpt-4o")


def test_configure_again_moves_a_model_to_a_newly_matching_pattern() -> None:
    clock = FakeClock()
    registry = make_registry({"gpt-*": {"rpm": 1}}, clock=clock)
    assert registry.key("gpt-4o").pattern == "gpt-*"
    registry.configure({"gpt-*": {"rpm": 1}, "gpt-4o*": {"rpm": 2}}, clock=clock)
    assert registry.key("gpt-4o").pattern == "gpt-4o*"
    assert registry.key("gpt-4o").limiter.available == 2


@pytest.mark.parametrize(
    "policy",
    [
        {"rpm": 2},
        {
            "rpm": 2,
            "retry": {"attempts": 2},
            "breaker": {"failure_threshold": 1},
            "bulkhead": {"max_concurrent": 2},
            "fallbacks": ["claude-3"],
        },
    ],
    ids=["rate only", "every section"],
)
def test_configure_keeps_the_live_state_of_keys_whose_policy_did_not_change(
    policy: dict[str, Any],
) -> None:
    clock = FakeClock()
    registry = make_registry({"gpt-4o": policy, "claude-3": {"rpm": 2}}, clock=clock)
    kept, changed = registry.key("gpt-4o"), registry.key("claude-3")
    assert kept.limiter.try_acquire()
    assert changed.limiter.try_acquire()
    registry.configure({"gpt-4o": dict(policy), "claude-3": {"rpm": 3}}, clock=clock)
    assert registry.key("gpt-4o") is kept
    assert kept.limiter.available == 1  # still half drained
    fresh = registry.key("claude-3")
    assert fresh is not changed
    assert fresh.limiter.available == 3


def test_configure_keeps_an_open_breaker_whose_policy_did_not_change() -> None:
    clock = FakeClock()
    policies = {"gpt-4o": {"breaker": {"failure_threshold": 1}}}
    registry = make_registry(policies, clock=clock)
    registry.key("gpt-4o").breaker.force_open()
    registry.configure(policies, clock=clock)
    assert registry.key("gpt-4o").breaker.state is State.OPEN


def test_configure_with_an_equal_event_listener_keeps_unchanged_keys() -> None:
    clock = FakeClock()
    events: list[Event] = []
    registry = make_registry({"gpt-4o": {"rpm": 2}}, clock=clock, on_event=events.append)
    key = registry.key("gpt-4o")
    assert key.limiter.try_acquire()
    # The same listener, reloaded configuration: `events.append` is a new but equal bound method.
    registry.configure({"gpt-4o": {"rpm": 2}}, clock=clock, on_event=events.append)
    assert registry.key("gpt-4o") is key
    assert key.limiter.available == 1


def test_strict_configure_drops_a_live_key_it_no_longer_resolves() -> None:
    clock = FakeClock()
    registry = make_registry({"default": {"rpm": 1}}, clock=clock)
    registry.key("llama-3")
    registry.configure({"gpt-4o": {"rpm": 1}}, clock=clock, strict=True)
    with pytest.raises(ConfigError, match="llama-3"):
        registry.key("llama-3")


def test_reset_forgets_live_state_and_keeps_the_policies() -> None:
    registry = make_registry({"gpt-4o": ONE_RPM})
    complete = rls.shielded(model="gpt-4o", registry=registry)(echo_model)
    complete()
    old = registry.key("gpt-4o")
    old.breaker.force_open()
    registry.reset()
    assert registry.snapshot() == {}
    assert registry.policies == {"gpt-4o": Policy.from_mapping(ONE_RPM)}
    assert complete() == "gpt-4o"  # a fresh bucket and a closed breaker
    assert registry.key("gpt-4o") is not old


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        ("memcached://localhost", "is neither 'memory' nor a redis:// or rediss:// URL"),
        (object(), "is not a backend"),
        (42, "is not a backend"),
    ],
)
def test_configure_refuses_what_is_not_a_backend(backend: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"backend: .* {re.escape(problem)}"):
        Registry().configure({}, backend=backend)


def test_a_backend_object_makes_every_keys_limiter() -> None:
    made = []

    class Recording:
        def limiter(self, limits: Any, *, clock: Any, name: str) -> rls.Limiter:
            made.append((name, tuple(limits)))
            return rls.Limiter(limits, clock=clock, name=name)

    registry = Registry()
    registry.configure({"gpt-4o": {"rpm": 5}}, backend=Recording(), clock=FakeClock())
    registry.key("gpt-4o")
    registry.key("llama-3")  # no limits: a pause-only limiter, on the backend too
    assert made == [("gpt-4o", (rls.Limit(5, 60),)), ("llama-3", ())]


@pytest.mark.parametrize("strict", ["yes", 1, None])
def test_configure_refuses_a_strict_that_is_not_a_bool(strict: object) -> None:
    with pytest.raises(ConfigError, match="strict"):
        Registry().configure({}, strict=strict)  # type: ignore[arg-type]


P = 'policies["gpt-4o"]'


@pytest.mark.parametrize(
    ("policies", "path"),
    [
        ({"gpt-4o": {"rpm": 0}}, f"{P}.rpm"),
        ({"gpt-4o": {"breaker": {"failure_rate": 1.5}}}, f"{P}.breaker.failure_rate"),
        ({"gpt-4o": {"retry": {"attemps": 3}}}, f"{P}.retry: unknown key 'attemps'"),
        ({"gpt-4o": {"fallbacks": "claude-3"}}, f"{P}.fallbacks"),
        ({"gpt-4o": "fast"}, P),
    ],
)
def test_bad_policy_raises_config_error_naming_its_path(
    policies: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Registry().configure(policies)
    assert path in str(excinfo.value)


@pytest.mark.parametrize(
    ("policies", "options"),
    [
        ({"gpt-4o": {"rpm": -1}}, {}),
        ({"gpt-4o": {"rpm": 5}}, {"strict": "yes"}),
        ({"gpt-4o": {"rpm": 5}}, {"backend": "memcached://localhost"}),
    ],
    ids=["bad policy", "bad strict", "backend"],
)
def test_failed_configure_leaves_the_previous_configuration_in_force(
    policies: dict[str, Any], options: dict[str, Any]
) -> None:
    clock = FakeClock()
    registry = make_registry({"gpt-4o": ONE_RPM}, clock=clock, strict=True)
    key = registry.key("gpt-4o")
    assert key.limiter.try_acquire()
    with pytest.raises(ConfigError):
        registry.configure(policies, clock=clock, **options)
    assert registry.policies == {"gpt-4o": Policy.from_mapping(ONE_RPM)}
    assert registry.key("gpt-4o") is key
    assert key.limiter.available == 0
    with pytest.raises(ConfigError):  # still strict
        registry.key("llama-3")


# -- fallbacks -----------------------------------------------------------------------------------

FALLBACK_POLICIES = {
    "gpt-4o": {**ONE_RPM, "fallbacks": ["gpt-4o-mini", "claude-3"]},
    "gpt-4o-mini": ONE_RPM,
    "claude-3": ONE_RPM,
}


class Provider:
    """A fake LLM endpoint: records the model of each call, raises what it is told to."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.errors: dict[str, Exception] = {}

    def answer(self, model: str) -> str:
        self.seen.append(model)
        error = self.errors.get(model)
        if error is not None:
            raise error
        return f"answer from {model}"


def open_breaker(model: str, provider: Provider) -> None:
    rls.default_registry().key(model).breaker.force_open()


def quota_gone(model: str, provider: Provider) -> None:
    provider.errors[model] = QuotaExhausted("monthly quota gone", key=model)


def rate_used_up(model: str, provider: Provider) -> None:
    assert rls.default_registry().key(model).limiter.try_acquire()  # max_wait=0: RateLimited


REFUSALS = {
    "circuit open": (open_breaker, CircuitOpen),
    "quota exhausted": (quota_gone, QuotaExhausted),
    "rate limited": (rate_used_up, RateLimited),
}


@pytest.fixture(params=REFUSALS.values(), ids=REFUSALS.keys())
def refusal(request: pytest.FixtureRequest) -> tuple[Callable[[str, Provider], None], type]:
    return request.param


@pytest.fixture
def events(shield_clock: FakeClock) -> list[Event]:
    """Every event of the default registry, configured with `FALLBACK_POLICIES` for this test."""
    received: list[Event] = []
    rls.configure(FALLBACK_POLICIES, on_event=received.append)
    return received


def fallbacks_in(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(event.key, event.fallback) for event in events if event.kind == FALLBACK]


@pytest.fixture(params=["sync", "async"])
def shielded_call(request: pytest.FixtureRequest) -> Callable[..., Callable[..., str]]:
    """`make(provider, **shielded_options)` -> a plain function calling the decorated one."""

    def make(provider: Provider, **options: Any) -> Callable[..., str]:
        if request.param == "sync":

            @rls.shielded(**options)
            def complete(*, model: str) -> str:
                return provider.answer(model)

            return complete

        @rls.shielded(**options)
        async def acomplete(*, model: str) -> str:
            return provider.answer(model)

        return lambda **kwargs: asyncio.run(acomplete(**kwargs))

    return make


def test_refused_call_is_made_again_with_the_first_fallback(
    events: list[Event], refusal: tuple[Callable[[str, Provider], None], type], shielded_call: Any
) -> None:
    refuse, error_type = refusal
    provider = Provider()
    refuse("gpt-4o", provider)
    assert shielded_call(provider)(model="gpt-4o") == "answer from gpt-4o-mini"
    assert provider.seen[-1] == "gpt-4o-mini"
    assert "claude-3" not in provider.seen
    assert fallbacks_in(events) == [("gpt-4o", "gpt-4o-mini")]
    (event,) = (event for event in events if event.kind == FALLBACK)
    assert isinstance(event.error, error_type)


def test_second_fallback_is_tried_when_the_first_is_refused_too(
    events: list[Event], refusal: tuple[Callable[[str, Provider], None], type], shielded_call: Any
) -> None:
    refuse, error_type = refusal
    provider = Provider()
    refuse("gpt-4o", provider)
    refuse("gpt-4o-mini", provider)
    assert shielded_call(provider)(model="gpt-4o") == "answer from claude-3"
    assert provider.seen[-1] == "claude-3"
    assert fallbacks_in(events) == [("gpt-4o", "gpt-4o-mini"), ("gpt-4o-mini", "claude-3")]
    first, second = (event for event in events if event.kind == FALLBACK)
    assert isinstance(first.error, error_type)
    assert isinstance(second.error, error_type)
    assert second.error is not first.error  # each event carries its own model's refusal


def test_when_every_fallback_is_refused_the_original_error_is_raised_with_a_note(
    events: list[Event], refusal: tuple[Callable[[str, Provider], None], type], shielded_call: Any
) -> None:
    refuse, error_type = refusal
    provider = Provider()
    for model in ("gpt-4o", "gpt-4o-mini", "claude-3"):
        refuse(model, provider)
    with pytest.raises(error_type) as excinfo:
        shielded_call(provider)(model="gpt-4o")
    assert excinfo.value.key == "gpt-4o"
    notes = [note for note in getattr(excinfo.value, "__notes__", []) if "fallback" in note]
    assert len(notes) == 1
    assert notes[0].index("gpt-4o-mini") < notes[0].index("claude-3")


def test_a_model_fixed_by_the_decorator_falls_back_too(
    events: list[Event], refusal: tuple[Callable[[str, Provider], None], type], shielded_call: Any
) -> None:
    refuse, error_type = refusal
    provider = Provider()
    refuse("gpt-4o", provider)
    assert shielded_call(provider, model="gpt-4o")(model="gpt-4o") == "answer from gpt-4o-mini"
    assert fallbacks_in(events) == [("gpt-4o", "gpt-4o-mini")]
    (event,) = (event for event in events if event.kind == FALLBACK)
    assert isinstance(event.error, error_type)


class BadRequest(ValueError):
    """A 400: the caller's fault, which any other model would refuse too."""

    status_code = 400


def test_no_fallback_for_an_error_the_classifier_ignores(
    events: list[Event], shielded_call: Any
) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = BadRequest("bad prompt")
    with pytest.raises(BadRequest, match="bad prompt"):
        shielded_call(provider)(model="gpt-4o")
    assert provider.seen == ["gpt-4o"]
    assert fallbacks_in(events) == []


# -- snapshots -----------------------------------------------------------------------------------


def test_snapshot_lists_only_the_keys_used_with_their_pattern() -> None:
    registry = make_registry({"gpt-4o*": {"rpm": 2}, "default": {"rpm": 1}})
    assert registry.snapshot() == {}
    registry.key("gpt-4o-mini")
    registry.key("llama-3")
    snapshot = registry.snapshot()
    assert set(snapshot) == {"gpt-4o-mini", "llama-3"}
    assert snapshot["gpt-4o-mini"]["pattern"] == "gpt-4o*"
    assert snapshot["llama-3"]["pattern"] == "default"


def test_snapshot_shows_rate_levels_breaker_bulkhead_and_budget() -> None:
    registry = make_registry(
        {
            "gpt-4o": {
                "rpm": 2,
                "retry": None,
                "breaker": {"failure_threshold": 3},
                "bulkhead": {"max_concurrent": 2},
            },
            "claude-3": {"rpm": 5},
        }
    )

    @rls.shielded(model="gpt-4o", registry=registry)
    def fail() -> None:
        in_flight.append(registry.snapshot()["gpt-4o"]["bulkhead"]["in_flight"])
        raise ConnectionError("provider down")

    in_flight: list[Any] = []
    with pytest.raises(ConnectionError):
        fail()
    registry.key("claude-3").breaker.force_open()
    snapshot = registry.snapshot()
    gpt = snapshot["gpt-4o"]
    assert in_flight == [1]
    assert gpt["limiter"]["levels"] == {"2/60s requests": 1.0}
    assert gpt["breaker"]["state"] == "closed"
    assert gpt["breaker"]["consecutive_failures"] == 1
    assert gpt["bulkhead"] == {"max_concurrent": 2, "in_flight": 0, "waiting": 0}
    assert gpt["budget"] is None  # retry: None
    claude = snapshot["claude-3"]
    assert claude["breaker"]["state"] == "open"
    assert claude["bulkhead"] is None
    assert claude["budget"]["calls"] == 0


def test_default_registry_snapshot_shows_the_keys_used_in_the_test(
    shield_clock: FakeClock,
) -> None:
    rls.configure({"gpt-4o": {"rpm": 3}})
    rls.shielded(model="gpt-4o")(echo_model)()
    snapshot = rls.default_registry().snapshot()
    assert set(snapshot) == {"gpt-4o"}
    assert snapshot["gpt-4o"]["pattern"] == "gpt-4o"
    assert snapshot["gpt-4o"]["limiter"]["levels"] == {"3/60s requests": 2.0}
    assert snapshot["gpt-4o"]["budget"]["calls"] == 1


# -- configuration files and the environment variable -------------------------------------------

CONFIG_TOML = """\
[policies.default]
rpm = 60

[policies."gpt-4o*"]
rpm = 500
tpm = 30000
fallbacks = ["claude-3"]

[policies."gpt-4o*".breaker]
failure_rate = 0.5

[policies."claude-*".bulkhead]
max_concurrent = 8
"""

CONFIG_POLICIES = {
    "default": {"rpm": 60},
    "gpt-4o*": {
        "rpm": 500,
        "tpm": 30000,
        "fallbacks": ["claude-3"],
        "breaker": {"failure_rate": 0.5},
    },
    "claude-*": {"bulkhead": {"max_concurrent": 8}},
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_configure_from_file_reads_a_policy_table_per_pattern(tmp_path: Path) -> None:
    registry = Registry()
    registry.configure_from_file(write(tmp_path, CONFIG_TOML))
    assert registry.policies == {
        name: Policy.from_mapping(policy) for name, policy in CONFIG_POLICIES.items()
    }
    assert registry.key("gpt-4o-mini").pattern == "gpt-4o*"
    assert registry.key("claude-3").bulkhead.snapshot()["max_concurrent"] == 8
    assert registry.key("llama-3").pattern == "default"


def test_configure_from_file_reads_strict(tmp_path: Path) -> None:
    registry = Registry()
    registry.configure_from_file(write(tmp_path, 'strict = true\n[policies."gpt-4o"]\nrpm = 1\n'))
    with pytest.raises(ConfigError, match="llama-3"):
        registry.key("llama-3")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("polices = {}\n", "polices"),
        ("strict = false\n", "policies"),
        ('[policies."gpt-4o"]\nrpm = -1\n', 'policies["gpt-4o"].rpm'),
        ('strict = "yes"\n[policies."gpt-4o"]\nrpm = 1\n', "strict"),
        ('backend = "memcached://localhost"\n[policies."gpt-4o"]\nrpm = 1\n', "backend"),
        ("[policies\n", "TOML"),
    ],
    ids=["unknown key", "no policies", "bad policy", "bad strict", "backend", "bad TOML"],
)
def test_bad_configuration_file_raises_config_error_naming_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    registry = make_registry({"gpt-4o": {"rpm": 3}})
    with pytest.raises(ConfigError) as excinfo:
        registry.configure_from_file(path)
    assert str(path) in str(excinfo.value)
    assert problem in str(excinfo.value)
    assert registry.policies == {"gpt-4o": Policy(rpm=3)}


def test_missing_configuration_file_raises_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        Registry().configure_from_file(path)


def test_module_configure_from_file_is_undone_at_the_end_of_isolated(
    tmp_path: Path, shield_clock: FakeClock
) -> None:
    with isolated():
        rls.configure_from_file(write(tmp_path, CONFIG_TOML))
        assert rls.default_registry().key("gpt-4o").pattern == "gpt-4o*"
    assert "gpt-4o*" not in rls.default_registry().policies


def test_environment_file_is_read_at_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()  # created before the variable is set: read at first use, not here
    monkeypatch.setenv(ENV, str(write(tmp_path, CONFIG_TOML)))
    assert registry.key("gpt-4o-mini").pattern == "gpt-4o*"
    assert set(registry.policies) == set(CONFIG_POLICIES)


def test_environment_file_is_read_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    registry = Registry()
    assert registry.key("gpt-4o").pattern == "(built-in)"
    monkeypatch.setenv(ENV, str(write(tmp_path, CONFIG_TOML)))
    assert registry.key("gpt-4o-mini").pattern == "(built-in)"


def test_environment_file_is_ignored_after_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(write(tmp_path, CONFIG_TOML)))
    registry = make_registry({"gpt-4o": {"rpm": 1}})
    assert registry.key("gpt-4o-mini").pattern == "(built-in)"
    assert set(registry.policies) == {"gpt-4o"}


@pytest.mark.parametrize("text", ["polices = {}\n", '[policies."gpt-4o"]\nrpm = 0\n', None])
def test_bad_environment_file_raises_config_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None
) -> None:
    path = tmp_path / "x.toml" if text is None else write(tmp_path, text)
    monkeypatch.setenv(ENV, str(path))
    registry = Registry()
    with pytest.raises(ConfigError) as excinfo:
        registry.key("gpt-4o")
    assert ENV in str(excinfo.value)
    assert str(path) in str(excinfo.value)
    assert registry.policies == {}


# -- testing.isolated and the shield_clock fixture -----------------------------------------------


@rls.shielded(model="isolated-model")
def decorated_at_import() -> str:
    return "ok"


@rls.retry(attempts=3, backoff="constant", base_delay=5)
def retried_at_import(outcomes: list[Exception | str]) -> str:
    outcome = outcomes.pop(0)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def test_isolated_gives_fresh_keys_on_its_fake_clock_and_restores_them_after() -> None:
    with isolated():  # the "before" state, itself isolated so that nothing leaks
        rls.configure({"gpt-4o": {"rpm": 1}})
        before = rls.default_registry().key("gpt-4o")
        assert before.limiter.try_acquire()
        with isolated() as clock:
            inside = rls.default_registry().key("gpt-4o")
            assert inside is not before
            assert inside.clock is clock
            assert rls.default_registry().clock is clock
            assert inside.policy == before.policy  # the policies stay
            assert inside.limiter.try_acquire()
        after = rls.default_registry().key("gpt-4o")
        assert after is before
        assert not after.limiter.try_acquire()  # still drained


def test_isolated_uses_the_clock_it_is_given() -> None:
    clock = FakeClock(100.0)
    with isolated(clock) as given:
        assert given is clock
        assert rls.default_registry().key("gpt-4o").clock is clock


def test_isolated_breaker_recovers_when_the_fake_clock_advances() -> None:
    with isolated() as clock:
        rls.configure(
            {"isolated-model": {"breaker": {"failure_threshold": 1, "recovery_timeout": 30}}}
        )
        breaker = rls.default_registry().key("isolated-model").breaker
        breaker.record_failure()
        with pytest.raises(CircuitOpen):
            decorated_at_import()
        clock.advance(29)
        assert breaker.state is State.OPEN
        clock.advance(1)
        assert breaker.state is State.HALF_OPEN
        assert decorated_at_import() == "ok"
        assert breaker.state is State.CLOSED


def test_configure_inside_isolated_is_undone_at_its_end() -> None:
    with isolated():
        rls.configure({"outer": {"rpm": 1}})
        with isolated():
            rls.configure({"inner": {"rpm": 5}}, strict=True)
            assert set(rls.default_registry().policies) == {"inner"}
        assert set(rls.default_registry().policies) == {"outer"}
        assert rls.default_registry().key("llama-3").pattern == "(built-in)"  # not strict


def test_model_decorator_built_outside_isolated_waits_on_its_fake_clock() -> None:
    with isolated() as clock:
        rls.configure({"isolated-model": {"rpm": 1}})
        decorated_at_import()
        decorated_at_import()
        assert clock.sleeps == [pytest.approx(60.0)]


def test_own_primitives_of_a_decorator_built_outside_isolated_use_its_fake_clock() -> None:
    with isolated() as clock:
        assert retried_at_import([ConnectionError("down"), ConnectionError("down"), "ok"]) == "ok"
        assert clock.sleeps == [5, 5]


def test_own_limiter_state_from_before_isolated_is_back_after_it() -> None:
    limited = rls.rate_limited(rpm=1, max_wait=0)(echo_model)  # its own limiter: nothing shared
    limited()
    with pytest.raises(RateLimited):
        limited()
    with isolated():
        assert limited() == "gpt-4o"  # fresh inside
    with pytest.raises(RateLimited):  # drained again, as before the block
        limited()


@pytest.mark.parametrize("run", ["first", "second"])
def test_shield_clock_gives_each_test_fresh_state(shield_clock: FakeClock, run: str) -> None:
    registry = rls.default_registry()
    assert registry.clock is shield_clock
    assert "fixture-model" not in registry.policies
    assert "fixture-model" not in registry.snapshot()
    rls.configure({"fixture-model": {"rpm": 1}})
    key = registry.key("fixture-model")
    assert key.clock is shield_clock
    assert key.limiter.try_acquire()
    assert not key.limiter.try_acquire()


def test_shared_breakers_and_budgets_come_from_a_backend_that_shares_them() -> None:
    asked: list[tuple[str, dict[str, Any]]] = []

    class Sharing:
        def limiter(self, limits: Any, *, clock: Any, name: str) -> rls.Limiter:
            return rls.Limiter(limits, clock=clock, name=name)

        def shared_breaker(self, options: Any, *, clock: Any, name: str) -> rls.CircuitBreaker:
            asked.append(("breaker", dict(options)))
            return rls.CircuitBreaker(**options, clock=clock, name=name)

        def shared_budget(self, options: Any, *, clock: Any, name: str) -> rls.RetryBudget:
            asked.append(("budget", dict(options)))
            return rls.RetryBudget(**options, clock=clock)

    policies = {
        "shared": {"breaker": {"shared": True, "failure_threshold": 2},
                   "retry": {"budget": {"shared": True, "ratio": 0.5}}},
        "local": {"breaker": {"failure_threshold": 2}},
    }  # fmt: skip
    registry = Registry()
    registry.configure(policies, backend=Sharing(), clock=FakeClock())
    registry.key("shared")
    registry.key("local")
    assert asked == [("breaker", {"failure_threshold": 2}), ("budget", {"ratio": 0.5})]
    # In memory (no backend that shares), `shared` is simply this process's own state.
    registry.configure(policies, backend="memory", clock=FakeClock())
    assert registry.key("shared").breaker is not None
    assert registry.key("shared").budget is not None
    assert len(asked) == 2
