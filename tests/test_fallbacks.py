"""Fallbacks: a model that refuses, or whose retries give up on failures or throttling, hands
the call to the next model of its policy's `fallbacks`; never after an error its classifier
ignores. The function must take `model=` to be called with a fallback, or the fallbacks are a
`ConfigError` at the earliest moment that is known. The caller can tell which model answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

import rate_limit_shield as rls
from rate_limit_shield import ConfigError, Registry
from rate_limit_shield.events import FALLBACK, FELL_BACK, Event
from rate_limit_shield.testing import FakeClock

POLICIES = {
    "gpt-4o": {"retry": {"attempts": 3}, "fallbacks": ["gpt-4o-mini", "claude-3"]},
    "gpt-4o-mini": {"retry": {"attempts": 2}},
    "claude-3": {"retry": None},
}


class HTTPError(Exception):
    """An SDK-like error: the classifier reads its `status_code`."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class Reply:
    """A result an attribute can be set on."""

    def __init__(self, model: str) -> None:
        self.text = f"answer from {model}"


class Provider:
    """Records the model of each call; raises what it is told to for a model, else replies."""

    def __init__(self, reply: Callable[[str], object] = Reply) -> None:
        self.seen: list[str] = []
        self.errors: dict[str, Exception] = {}
        self.reply = reply

    def answer(self, model: str) -> Any:
        self.seen.append(model)
        error = self.errors.get(model)
        if error is not None:
            raise error
        return self.reply(model)


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.configure(POLICIES, clock=FakeClock())
    return registry


@pytest.fixture
def events(registry: Registry) -> list[Event]:
    received: list[Event] = []
    registry.configure(POLICIES, on_event=received.append)
    return received


def kinds(events: list[Event], kind: str) -> list[tuple[str, str | None]]:
    return [(event.key, event.fallback) for event in events if event.kind == kind]


Make = Callable[..., Callable[..., Any]]


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest, registry: Registry) -> Make:
    """`make(provider, **shielded_options)`: a plain function calling a shielded one that takes
    `model=` (a keyword, with a default, as a function decorated for one model would)."""

    def build(provider: Provider, **options: Any) -> Callable[..., Any]:
        if request.param == "sync":

            @rls.shielded(registry=registry, **options)
            def complete(prompt: str = "hi", *, model: str = "gpt-4o") -> Any:
                return provider.answer(model)

            return complete

        @rls.shielded(registry=registry, **options)
        async def acomplete(prompt: str = "hi", *, model: str = "gpt-4o") -> Any:
            return provider.answer(model)

        return lambda *args, **kwargs: asyncio.run(acomplete(*args, **kwargs))

    return build


# -- when a call falls back ---------------------------------------------------------------------


def test_retries_given_up_on_failures_fall_back(make: Make, events: list[Event]) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("connection reset")
    reply = make(provider)(model="gpt-4o")
    assert reply.text == "answer from gpt-4o-mini"
    assert provider.seen == ["gpt-4o"] * 3 + ["gpt-4o-mini"]
    assert kinds(events, FALLBACK) == [("gpt-4o", "gpt-4o-mini")]
    (step,) = (event for event in events if event.kind == FALLBACK)
    assert isinstance(step.error, ConnectionError)


def test_retries_given_up_on_throttling_fall_back(make: Make, events: list[Event]) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = HTTPError(429)
    assert make(provider)(model="gpt-4o").text == "answer from gpt-4o-mini"
    assert provider.seen == ["gpt-4o"] * 3 + ["gpt-4o-mini"]


def test_an_ignored_error_such_as_a_bad_request_never_falls_back(
    make: Make, events: list[Event]
) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = bad_request = HTTPError(400)
    with pytest.raises(HTTPError) as raised:
        make(provider)(model="gpt-4o")
    assert raised.value is bad_request
    assert provider.seen == ["gpt-4o"]
    assert kinds(events, FALLBACK) == []


def test_a_failing_fallback_hands_on_to_the_next(make: Make, events: list[Event]) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("reset")
    provider.errors["gpt-4o-mini"] = HTTPError(503)
    assert make(provider)(model="gpt-4o").text == "answer from claude-3"
    assert provider.seen == ["gpt-4o"] * 3 + ["gpt-4o-mini"] * 2 + ["claude-3"]
    assert kinds(events, FALLBACK) == [("gpt-4o", "gpt-4o-mini"), ("gpt-4o-mini", "claude-3")]
    assert kinds(events, FELL_BACK) == [("gpt-4o", "claude-3")]


def test_a_fallbacks_ignored_error_is_raised_and_ends_the_walk(
    make: Make, events: list[Event]
) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("reset")
    provider.errors["gpt-4o-mini"] = bad_request = HTTPError(400)
    with pytest.raises(HTTPError) as raised:
        make(provider)(model="gpt-4o")
    assert raised.value is bad_request
    assert "claude-3" not in provider.seen


def test_when_every_model_fails_the_first_models_error_is_raised_with_a_note(
    make: Make, events: list[Event]
) -> None:
    provider = Provider()
    provider.errors = {model: ConnectionError(model) for model in POLICIES}
    with pytest.raises(ConnectionError) as raised:
        make(provider)(model="gpt-4o")
    assert raised.value is provider.errors["gpt-4o"]
    (note,) = [note for note in raised.value.__notes__ if "fallbacks tried" in note]
    assert note.index("gpt-4o-mini (ConnectionError from gpt-4o)") < note.index("claude-3")
    assert kinds(events, FELL_BACK) == []


# -- a model fixed by the decorator -------------------------------------------------------------


def test_a_fixed_model_falls_back_by_calling_again_with_model(make: Make) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("reset")
    complete = make(provider, model="gpt-4o")
    assert complete("hi").text == "answer from gpt-4o-mini"
    assert provider.seen == ["gpt-4o"] * 3 + ["gpt-4o-mini"]


def test_a_model_picked_by_a_function_falls_back_too(make: Make) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("reset")
    complete = make(provider, model=lambda prompt="hi", **kwargs: "gpt-4o")
    assert complete("hi").text == "answer from gpt-4o-mini"
    assert provider.seen[-1] == "gpt-4o-mini"


def test_a_function_taking_any_keyword_can_fall_back(registry: Registry) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("reset")

    @rls.shielded(model="gpt-4o", registry=registry)
    def complete(prompt: str, **options: Any) -> Any:
        return provider.answer(options.get("model", "gpt-4o"))

    assert complete("hi").text == "answer from gpt-4o-mini"


def summarize(prompt: str) -> str:
    return "summary"


def test_fallbacks_a_function_cannot_take_are_refused_when_decorating(registry: Registry) -> None:
    with pytest.raises(ConfigError) as raised:
        rls.shielded(model="gpt-4o", registry=registry)(summarize)
    message = str(raised.value)
    assert message.startswith("@shielded(model='gpt-4o') on summarize: ")
    assert "fallbacks ('gpt-4o-mini', 'claude-3')" in message
    assert "takes no model= argument" in message
    assert "add a model parameter (or **kwargs)" in message


def test_a_function_without_model_is_fine_while_its_policy_has_no_fallbacks(
    registry: Registry,
) -> None:
    assert rls.shielded(model="claude-3", registry=registry)(summarize)("hi") == "summary"


def test_fallbacks_configured_later_are_refused_at_the_first_call_after(
    registry: Registry,
) -> None:
    registry.configure({})
    calls: list[str] = []

    @rls.shielded(model="gpt-4o", registry=registry)
    def complete(prompt: str) -> str:
        calls.append(prompt)
        return "summary"

    assert complete("a") == "summary"
    registry.configure(POLICIES)
    for _ in range(2):  # every call, until the configuration changes: never silently skipped
        with pytest.raises(ConfigError, match="takes no model= argument"):
            complete("b")
    registry.configure({"gpt-4o": {"retry": None}})
    assert complete("c") == "summary"
    assert calls == ["a", "c"]


def test_fallbacks_a_function_cannot_take_are_refused_at_the_first_call_of_a_picked_model(
    registry: Registry,
) -> None:
    calls: list[str] = []

    @rls.shielded(model=lambda prompt: "gpt-4o", registry=registry)
    def complete(prompt: str) -> str:
        calls.append(prompt)
        return "summary"

    with pytest.raises(ConfigError, match=r"on .*complete: .* takes no model= argument"):
        complete("a")
    assert calls == []


def test_async_fallbacks_a_function_cannot_take_are_refused_at_the_first_call(
    registry: Registry,
) -> None:
    registry.configure({})

    @rls.shielded(model="gpt-4o", registry=registry)
    async def complete(prompt: str) -> str:
        return "summary"

    registry.configure(POLICIES)
    with pytest.raises(ConfigError, match="takes no model= argument"):
        asyncio.run(complete("a"))


# -- which model answered -----------------------------------------------------------------------


def test_the_result_says_which_model_answered(make: Make) -> None:
    provider = Provider()
    complete = make(provider)
    assert not hasattr(complete(model="gpt-4o"), "answered_by")  # only on the fallback path
    provider.errors["gpt-4o"] = ConnectionError("reset")
    assert complete(model="gpt-4o").answered_by == "gpt-4o-mini"


@pytest.mark.parametrize(
    "reply",
    [str, lambda model: (model,), lambda model: 7, lambda model: Slotted()],
    ids=["str", "tuple", "int", "slots"],
)
def test_a_result_that_takes_no_attribute_is_returned_as_it_is(
    make: Make, reply: Callable[[str], object]
) -> None:
    provider = Provider(reply)
    provider.errors["gpt-4o"] = ConnectionError("reset")
    assert make(provider)(model="gpt-4o") == reply("gpt-4o-mini")


class Slotted:
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Slotted)

    __hash__ = object.__hash__


def test_falling_back_is_an_event_and_an_info_log(
    make: Make, events: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("reset")
    with caplog.at_level(logging.INFO, logger="rate_limit_shield"):
        make(provider)(model="gpt-4o")
    (answered,) = (event for event in events if event.kind == FELL_BACK)
    assert (answered.key, answered.fallback) == ("gpt-4o", "gpt-4o-mini")
    assert isinstance(answered.error, ConnectionError)
    (record,) = [record for record in caplog.records if "answered" in record.getMessage()]
    assert record.levelno == logging.INFO
    assert record.name == "rate_limit_shield.shield"
    assert record.getMessage() == (
        "[gpt-4o] gpt-4o-mini answered the call made for gpt-4o "
        "(fallbacks tried: gpt-4o-mini (ConnectionError from gpt-4o))"
    )


def test_a_normal_call_neither_logs_nor_emits_a_fallback(
    make: Make, events: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="rate_limit_shield"):
        make(Provider())(model="gpt-4o")
    assert kinds(events, FELL_BACK) == []
    assert not [record for record in caplog.records if "answered" in record.getMessage()]


def test_the_decorators_own_listener_hears_of_the_fallback(registry: Registry) -> None:
    heard: list[Event] = []
    provider = Provider()
    provider.errors["gpt-4o"] = ConnectionError("reset")

    @rls.shielded(registry=registry, on_event=heard.append)
    def complete(*, model: str) -> Any:
        return provider.answer(model)

    complete(model="gpt-4o")
    assert kinds(heard, FELL_BACK) == [("gpt-4o", "gpt-4o-mini")]
