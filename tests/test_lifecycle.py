"""Configuring more than once: what `configure` keeps, `update`, listeners added and removed, and
what is refused at `configure` rather than mid-outage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import rate_limit_shield as rls
from rate_limit_shield.breaker import State
from rate_limit_shield.errors import ConfigError
from rate_limit_shield.events import BREAKER, REJECTED, SUCCEEDED, Event
from rate_limit_shield.registry import Registry
from rate_limit_shield.testing import FakeClock

POLICIES = {"gpt-4o": {"rpm": 2, "max_wait": 0, "retry": None, "breaker": {"failure_threshold": 1}}}


class Recording:
    """A backend that records the keys whose limiter it makes."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def limiter(self, limits: Any, *, clock: Any, name: str) -> rls.Limiter:
        self.made.append(name)
        return rls.Limiter(limits, clock=clock, name=name)


def registry_on(clock: FakeClock, **options: Any) -> Registry:
    registry = Registry()
    registry.configure(POLICIES, clock=clock, **options)
    return registry


def drain(registry: Registry) -> rls.Key:
    key = registry.key("gpt-4o")
    assert key.limiter.try_acquire(2)
    key.breaker.force_open()
    return key


# -- configure again ------------------------------------------------------------------------------


def test_configure_again_without_backend_keeps_the_backend() -> None:
    backend = Recording()
    registry = registry_on(FakeClock(), backend=backend)
    registry.key("gpt-4o")
    registry.configure({"gpt-4o": {"rpm": 3}, "claude-3": {"rpm": 1}})
    registry.key("gpt-4o")
    registry.key("claude-3")
    assert backend.made == ["gpt-4o", "gpt-4o", "claude-3"]


def test_backend_memory_goes_back_to_memory_on_purpose() -> None:
    backend = Recording()
    registry = registry_on(FakeClock(), backend=backend)
    registry.configure(POLICIES, backend="memory")
    registry.key("gpt-4o")
    assert backend.made == []


@pytest.mark.parametrize(
    "change",
    [
        {"on_event": print},
        {"strict": True},
        {"on_event": None},
        {},
    ],
    ids=["a listener", "strict", "no listener", "nothing"],
)
def test_keys_whose_policy_did_not_change_keep_their_state(change: dict[str, Any]) -> None:
    clock = FakeClock()
    registry = registry_on(clock)
    key = drain(registry)
    registry.configure(POLICIES, **change)
    assert registry.key("gpt-4o") is key
    assert key.limiter.available == 0
    assert key.breaker.state is State.OPEN


def test_a_new_listener_hears_the_keys_it_kept() -> None:
    clock = FakeClock()
    heard: list[Event] = []
    registry = registry_on(clock)
    drain(registry)
    registry.configure(POLICIES, on_event=heard.append)
    call = rls.shielded(model="gpt-4o", registry=registry)(lambda: "answer")
    with pytest.raises(rls.CircuitOpen):
        call()
    assert [event.kind for event in heard] == [REJECTED]


def test_configure_on_event_replaces_its_own_listener_and_keeps_added_ones() -> None:
    clock = FakeClock()
    first: list[Event] = []
    second: list[Event] = []
    added: list[Event] = []
    registry = registry_on(clock, on_event=first.append)
    registry.add_listener(added.append)
    registry.configure(POLICIES, on_event=second.append)
    drain(registry)
    with pytest.raises(rls.CircuitOpen):
        rls.shielded(model="gpt-4o", registry=registry)(lambda: "answer")()
    assert first == []
    assert [event.kind for event in second] == [BREAKER, REJECTED]
    assert [event.kind for event in added] == [BREAKER, REJECTED]


# -- listeners ------------------------------------------------------------------------------------


def test_add_and_remove_listener_touch_nothing_else() -> None:
    clock = FakeClock()
    heard: list[Event] = []
    registry = registry_on(clock)
    key = drain(registry)
    call = rls.shielded(model="gpt-4o", registry=registry)(lambda: "answer")
    registry.add_listener(heard.append)
    assert registry.key("gpt-4o") is key and key.breaker.state is State.OPEN
    with pytest.raises(rls.CircuitOpen):
        call()
    registry.remove_listener(heard.append)
    registry.remove_listener(heard.append)  # one no longer there is ignored
    with pytest.raises(rls.CircuitOpen):
        call()
    assert [event.kind for event in heard] == [REJECTED]
    assert key.limiter.available == 0


def test_listeners_are_checked_when_given() -> None:
    with pytest.raises(ConfigError, match="add_listener: 5 is not callable"):
        Registry().add_listener(5)  # type: ignore[arg-type]


def test_a_listener_hears_a_configuration_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text('[policies."gpt-4o"]\nrpm = 1\nmax_wait = 0\nretry = {attempts = 1}\n')
    heard: list[Event] = []
    registry = Registry()
    registry.add_listener(heard.append)
    registry.configure_from_file(path)
    call = rls.shielded(model="gpt-4o", registry=registry)(lambda: "answer")
    call()
    with pytest.raises(rls.RateLimited):
        call()
    assert [event.kind for event in heard] == [SUCCEEDED, REJECTED]


def test_module_level_listeners_reach_the_default_registry(shield_clock: FakeClock) -> None:
    heard: list[Event] = []
    rls.configure({"gpt-4o": {"rpm": 1, "max_wait": 0, "retry": None}})
    rls.add_listener(heard.append)
    try:
        call = rls.shielded(model="gpt-4o")(lambda: "answer")
        call()
        with pytest.raises(rls.RateLimited):
            call()
    finally:
        rls.remove_listener(heard.append)
    assert [event.kind for event in heard] == [SUCCEEDED, REJECTED]


def test_a_breaker_listener_survives_a_change_of_policy() -> None:
    clock = FakeClock()
    changes: list[tuple[State, State]] = []
    registry = registry_on(clock)
    registry.key("gpt-4o").breaker.add_listener(lambda old, new: changes.append((old, new)))
    registry.configure({"gpt-4o": {**POLICIES["gpt-4o"], "rpm": 5}})
    fresh = registry.key("gpt-4o")
    assert fresh.limiter.available == 5  # the new policy: a key made anew
    fresh.breaker.force_open()
    assert changes == [(State.CLOSED, State.OPEN)]


# -- update -------------------------------------------------------------------------------------


def test_update_adds_a_modules_policies_and_keeps_the_others_and_their_state() -> None:
    clock = FakeClock()
    registry = registry_on(clock)
    key = drain(registry)
    registry.update({"claude-*": {"rpm": 7}})
    assert set(registry.policies) == {"gpt-4o", "claude-*"}
    assert registry.key("gpt-4o") is key and key.limiter.available == 0
    assert registry.key("claude-3").limiter.available == 7


def test_update_replaces_only_the_patterns_given() -> None:
    clock = FakeClock()
    registry = registry_on(clock)
    registry.update({"claude-*": {"rpm": 7}})
    claude = registry.key("claude-3")
    assert claude.limiter.try_acquire()
    registry.update({"gpt-4o": {"rpm": 9}})
    assert registry.key("gpt-4o").limiter.available == 9
    assert registry.key("claude-3") is claude and claude.limiter.available == 6


def test_update_keeps_the_backend_strict_and_listeners() -> None:
    backend = Recording()
    heard: list[Event] = []
    registry = registry_on(FakeClock(), backend=backend, strict=True, on_event=heard.append)
    registry.update({"claude-*": {"rpm": 1, "max_wait": 0, "retry": None}})
    with pytest.raises(ConfigError, match="llama"):
        registry.key("llama-3")
    call = rls.shielded(model="claude-3", registry=registry)(lambda: "answer")
    call()
    with pytest.raises(rls.RateLimited):
        call()
    assert backend.made == ["claude-3"]
    assert [event.kind for event in heard] == [SUCCEEDED, REJECTED]


def test_update_of_a_registry_never_configured_reads_the_environment_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shield.toml"
    path.write_text('[policies."gpt-4o"]\nrpm = 3\n')
    monkeypatch.setenv("RATE_LIMIT_SHIELD_CONFIG", str(path))
    registry = Registry()
    registry.update({"claude-*": {"rpm": 7}})
    assert set(registry.policies) == {"gpt-4o", "claude-*"}


def test_update_refuses_bad_policies_and_changes_nothing() -> None:
    registry = registry_on(FakeClock())
    with pytest.raises(ConfigError, match=r'policies\["claude-\*"\]'):
        registry.update({"claude-*": {"rpm": "fast"}})
    assert set(registry.policies) == {"gpt-4o"}


# -- refused at configure --------------------------------------------------------------------------


def test_strict_refuses_a_fallback_that_no_policy_resolves() -> None:
    policies = {"gpt-4o": {"fallbacks": ["gpt-4o-mini", "claude-3"]}, "gpt-4o-*": {}}
    with pytest.raises(
        ConfigError, match=r"policies\[\"gpt-4o\"\]\.fallbacks: 'claude-3' matches no policy"
    ):
        Registry().configure(policies, strict=True)
    Registry().configure(policies)  # without strict, claude-3 gets the built-in default
    Registry().configure({**policies, "default": {}}, strict=True)


def test_strict_refuses_an_update_that_leaves_a_fallback_unresolved() -> None:
    registry = Registry()
    registry.configure({"gpt-4o": {"fallbacks": ["claude-3"]}, "claude-*": {}}, strict=True)
    with pytest.raises(ConfigError, match="'gemini-2' matches no policy"):
        registry.update({"gpt-4o": {"fallbacks": ["gemini-2"]}})
    assert registry.policies["gpt-4o"].fallbacks == ("claude-3",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_event": 5}, "on_event: 5 is not callable"),
        ({"clock": "x"}, "clock: 'x' is not a Clock"),
        ({"clock": object}, "is not a Clock"),
    ],
)
def test_configure_refuses_what_is_no_listener_or_clock(
    options: dict[str, Any], message: str
) -> None:
    registry = registry_on(FakeClock())
    with pytest.raises(ConfigError, match=message):
        registry.configure(POLICIES, **options)
    assert registry.key("gpt-4o").limiter.available == 2  # nothing changed


def test_configure_again_keeps_a_redis_backend_and_its_count(redis_url: str) -> None:
    """The fleet's shared quota stays shared: a process reconfiguring without `backend=` does
    not fall back to a bucket of its own."""
    from rate_limit_shield.backends.redis import RedisLimiter

    registry = Registry()
    registry.configure({"gpt-4o": {"rpm": 2}}, backend=redis_url)
    assert registry.key("gpt-4o").limiter.try_acquire()
    registry.configure({"gpt-4o": {"rpm": 2}, "claude-3": {"rpm": 1}})
    limiter = registry.key("gpt-4o").limiter
    assert isinstance(limiter, RedisLimiter)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()  # the first permit is still counted, on the server
