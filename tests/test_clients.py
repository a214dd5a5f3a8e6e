"""`rls.shield_client` with the real OpenAI and Anthropic SDKs, sync and async, on FakeProvider.

Every test runs once per flavour (OpenAI or Anthropic, sync or async client) inside
`rls.testing.isolated()`, with the provider on the shield's own FakeClock, as in test_sdk.py.
Each way of calling (a `Form`: create, a stream, parse, a stream helper, a raw or a streaming
response) is run through one function per client kind that returns the answer's text, so that
one test body checks every form.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import openai
import pytest
from sdk_helpers import (
    ANSWER,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    Flavour,
    Session,
)

import rate_limit_shield as rls
from rate_limit_shield.events import THROTTLED, Event


@pytest.fixture
def events(session: Session) -> list[Event]:
    """What the shield tells, from here on."""
    told: list[Event] = []
    rls.configure({}, on_event=told.append)
    return told


# --- the forms of a call, each run to the answer's text -------------------------------------------


@dataclass(frozen=True)
class Form:
    """One way to make an API call: the SDK method (`path` from the client), what it returns
    (`kind`), and what it adds to the flavour's request."""

    api: str
    path: str
    kind: str  # "reply", "stream", "raw", "streamed" (a streaming response) or "helper"
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.path + (" stream=True" if self.options.get("stream") else "")


USAGE_IN_THE_STREAM = {"include_usage": True}
FORMS = [
    Form("openai", "chat.completions.create", "reply"),
    Form("openai", "chat.completions.create", "stream", {"stream": True}),
    Form("openai", "chat.completions.parse", "reply"),
    Form("openai", "chat.completions.stream", "helper", {"stream_options": USAGE_IN_THE_STREAM}),
    Form("openai", "chat.completions.with_raw_response.create", "raw"),
    Form("openai", "chat.completions.with_streaming_response.create", "streamed"),
    Form("anthropic", "messages.create", "reply"),
    Form("anthropic", "messages.create", "stream", {"stream": True}),
    Form("anthropic", "messages.parse", "reply"),
    Form("anthropic", "messages.stream", "helper"),
    Form("anthropic", "messages.with_raw_response.create", "raw"),
    Form("anthropic", "messages.with_streaming_response.create", "streamed"),
]


def forms_of(flavour: Flavour) -> list[Form]:
    return [form for form in FORMS if form.api == flavour.api]


def form_of(flavour: Flavour, kind: str) -> Form:
    """The flavour's first form of this kind (of "reply": its create)."""
    return next(form for form in forms_of(flavour) if form.kind == kind)


def answer(session: Session, client: Any, form: Form, model: str) -> str:
    """Make the call `form` names on `client` for `model`, and read its answer to the end."""
    flavour = session.flavour
    method = attrgetter(form.path)(client)
    request = flavour.request(model, **form.options)
    if flavour.is_async:
        return str(session.caller.call(lambda: _aanswer(flavour, method, form.kind, request), {}))
    if form.kind == "reply":
        return flavour.text_of(method(**request))
    if form.kind == "stream":
        return flavour.text_of_stream(list(method(**request)))
    if form.kind == "raw":
        return flavour.text_of(method(**request).parse())
    if form.kind == "streamed":
        with method(**request) as response:
            return flavour.text_of(response.parse())
    with method(**request) as stream:
        if flavour.api == "openai":
            return flavour.text_of(stream.get_final_completion())
        return str(stream.get_final_text())


async def _aanswer(flavour: Flavour, method: Any, kind: str, request: dict[str, Any]) -> str:
    if kind == "reply":
        return flavour.text_of(await method(**request))
    if kind == "stream":
        return flavour.text_of_stream([item async for item in await method(**request)])
    if kind == "raw":  # an async client's raw response parses synchronously or not, by SDK
        parsed = (await method(**request)).parse()
        return flavour.text_of(await parsed if inspect.isawaitable(parsed) else parsed)
    if kind == "streamed":
        async with method(**request) as response:
            return flavour.text_of(await response.parse())
    async with method(**request) as stream:
        if flavour.api == "openai":
            return flavour.text_of(await stream.get_final_completion())
        return str(await stream.get_final_text())


def shielded(session: Session) -> Any:
    """The session's client (pointed at its provider), shielded."""
    return rls.shield_client(session.caller.client)


# --- 1. every form goes through the model's shield ------------------------------------------------


def test_every_form_is_refused_unsent_while_the_models_circuit_is_open(session: Session) -> None:
    model = session.flavour.models[0]
    client = shielded(session)
    breaker = session.key(model).breaker
    assert breaker is not None
    breaker.force_open()

    for form in forms_of(session.flavour):
        with pytest.raises(rls.CircuitOpen):
            answer(session, client, form, model)

    assert session.provider.received == 0


def test_every_form_retries_a_429_after_its_retry_after(
    session: Session, events: list[Event]
) -> None:
    """Stream helpers and streaming responses send their request when their context is entered:
    that request is inside the shield too."""
    model = session.flavour.models[0]
    client = shielded(session)

    for form in forms_of(session.flavour):
        session.provider.reset_counts()
        session.clock.sleeps.clear()
        events.clear()
        session.provider.throttle(2.0)

        assert answer(session, client, form, model) == ANSWER, form
        assert session.provider.statuses == {429: 1, 200: 1}, form
        assert len(session.clock.sleeps) == 1 and session.clock.sleeps[0] >= 2.0, form
        throttles = [event for event in events if event.kind == THROTTLED]
        assert [event.delay for event in throttles] == [pytest.approx(2.0)], form
    assert session.breaker(model)["consecutive_failures"] == 0


def test_the_sdks_own_retries_are_off(start: Callable[..., Session]) -> None:
    """The caller's client retries twice by itself (the SDKs' default): shielded, a call of three
    attempts sends three requests, not nine."""
    session = start()
    model = session.flavour.models[0]
    rls.configure({model: {"retry": {"attempts": 3}}})
    retrying = session.caller.client.with_options(max_retries=2)
    client = rls.shield_client(retrying)
    session.provider.fail(session.flavour.outage, times=10)

    with pytest.raises(session.flavour.sdk.APIStatusError):
        answer(session, client, form_of(session.flavour, "reply"), model)

    assert session.provider.received == 3
    assert client.max_retries == 0
    assert retrying.max_retries == 2  # the caller's client is left as it was


def test_a_stream_failing_midway_through_a_helper_reaches_the_breaker(session: Session) -> None:
    model = session.flavour.models[0]
    client = shielded(session)
    helper = form_of(session.flavour, "helper")
    session.provider.stream_error()

    with pytest.raises(session.flavour.sdk.APIError):
        answer(session, client, helper, model)

    assert session.breaker(model)["consecutive_failures"] == 1
    assert session.provider.received == 1  # items reached the caller: never restarted


def test_a_stream_helper_left_early_gives_back_its_slot_when_its_block_ends(
    session: Session,
) -> None:
    """OpenAI's helpers close only the stream's HTTP response when their block ends: that ends
    the stream for the shield too, or the next call would find the only slot taken."""
    model = session.flavour.models[0]
    rls.configure({model: {"bulkhead": {"max_concurrent": 1, "max_wait": 0}}})
    client = shielded(session)
    method = attrgetter(form_of(session.flavour, "helper").path)(client)
    request = session.flavour.request(model)

    def first_event() -> Any:
        with method(**request) as stream:
            return next(iter(stream))

    async def afirst_event() -> Any:
        async with method(**request) as stream:
            async for event in stream:
                return event

    for _ in range(2):
        session.caller.call(afirst_event if session.flavour.is_async else first_event, {})
        bulkhead = session.key(model).bulkhead
        assert bulkhead is not None and bulkhead.in_flight == 0
    assert session.provider.received == 2


def test_a_model_that_refuses_falls_back_with_the_request_made_for_the_next(
    session: Session,
) -> None:
    first, second = session.flavour.models
    rls.configure({first: {"fallbacks": [second]}})
    client = shielded(session)
    session.provider.insufficient_quota(model=first)

    text = answer(session, client, form_of(session.flavour, "reply"), first)

    assert text == ANSWER
    assert session.provider.received_by_model() == {first: 1, second: 1}


# --- 2. headers teach the key, whatever the answer's form -----------------------------------------

CALLS_PAST_THE_PROVIDERS_BURST = 8  # the provider takes 5 at once, then one every 12 s


def test_the_headers_of_a_parsed_reply_hold_the_key_to_what_the_provider_says_remains(
    start: Callable[..., Session],
) -> None:
    """A parsed reply carries no headers; the client's HTTP hook reads them: the policy allows
    60 requests a minute, the provider 5, and no call draws a 429."""
    session = start(requests=5)
    model = session.flavour.models[0]
    rls.configure({model: {"rpm": 60}})
    client = shielded(session)
    create = form_of(session.flavour, "reply")

    texts = [answer(session, client, create, model)]
    held = session.levels(model)["60/60s requests"]
    for _ in range(CALLS_PAST_THE_PROVIDERS_BURST - 1):
        texts.append(answer(session, client, create, model))

    assert held <= 4  # what the provider said remains
    assert texts == [ANSWER] * CALLS_PAST_THE_PROVIDERS_BURST
    assert session.provider.statuses == {200: CALLS_PAST_THE_PROVIDERS_BURST}
    assert session.clock.monotonic() >= 12.0 * (CALLS_PAST_THE_PROVIDERS_BURST - 5)  # waited here


def test_the_headers_of_a_reply_pace_a_key_with_no_limits_configured(
    start: Callable[..., Session],
) -> None:
    session = start(requests=5)
    model = session.flavour.models[0]
    client = shielded(session)
    create = form_of(session.flavour, "reply")

    texts = [answer(session, client, create, model) for _ in range(CALLS_PAST_THE_PROVIDERS_BURST)]

    assert texts == [ANSWER] * CALLS_PAST_THE_PROVIDERS_BURST
    assert session.provider.statuses == {200: CALLS_PAST_THE_PROVIDERS_BURST}


def test_the_caller_own_client_teaches_nothing(start: Callable[..., Session]) -> None:
    """The shielded copy shares the caller's HTTP client and its hook: a call the caller makes
    on its own client is none of the shield's business."""
    session = start(requests=5)
    model = session.flavour.models[0]
    rls.configure({model: {"rpm": 60}})
    shielded(session)

    answer(session, session.caller.client, form_of(session.flavour, "reply"), model)

    assert session.levels(model) == {"60/60s requests": 60}
    assert session.provider.received == 1


# --- 3. usage settles token reservations, whatever the answer's form ------------------------------


def test_every_form_settles_its_tokens_at_its_usage(session: Session) -> None:
    """A streaming response, whose body the caller reads after the shield has let it go, keeps
    its estimate; every other form settles at the usage the provider reports."""
    model = session.flavour.models[0]
    rls.configure({model: session.flavour.token_policy})
    client = shielded(session)

    for form in forms_of(session.flavour):
        if form.kind == "streamed":
            continue
        answer(session, client, form, model)

        assert session.clock.monotonic() == 0.0  # nothing refilled meanwhile
        assert session.levels(model) == pytest.approx(
            session.flavour.levels_after(PROMPT_TOKENS, COMPLETION_TOKENS)
        ), form
        rls.default_registry().reset()


# --- 4. the shielded client is the caller's, but for the shield -----------------------------------


def test_the_shielded_client_is_a_client_of_the_same_class(session: Session) -> None:
    original = session.caller.client
    client = shielded(session)

    assert type(client) is type(original)
    assert client is not original
    assert client.base_url == original.base_url
    assert client.api_key == original.api_key


def test_its_copies_are_shielded_too(session: Session) -> None:
    model = session.flavour.models[0]
    copy = shielded(session).with_options(timeout=5.0)
    breaker = session.key(model).breaker
    assert breaker is not None
    breaker.force_open()

    with pytest.raises(rls.CircuitOpen):
        answer(session, copy, form_of(session.flavour, "reply"), model)
    assert copy.timeout == 5.0
    assert session.provider.received == 0


def test_a_shielded_client_shielded_again_is_shielded_once(session: Session) -> None:
    """Shielding again makes a copy of the caller's client shielded once: a 429 is retried once,
    not by a shield within a shield."""
    model = session.flavour.models[0]
    rls.configure({model: {"retry": {"attempts": 2}}})
    client = rls.shield_client(shielded(session))
    session.provider.throttle(2.0, times=2)

    with pytest.raises(session.flavour.sdk.RateLimitError):
        answer(session, client, form_of(session.flavour, "reply"), model)

    assert session.provider.statuses == {429: 2}


def test_a_copy_that_would_retry_by_itself_is_refused(session: Session) -> None:
    client = shielded(session)

    with pytest.raises(rls.ConfigError, match="max_retries=3"):
        client.with_options(max_retries=3)
    with pytest.raises(rls.ConfigError, match="max_retries=1"):
        client.copy(max_retries=1)
    assert client.with_options(max_retries=0).max_retries == 0


def test_calls_naming_no_model_pass_through(session: Session) -> None:
    """Listing models names none: no key is made, the SDK's own call is made as it is."""
    client = shielded(session)

    with pytest.raises(session.flavour.sdk.NotFoundError):  # FakeProvider serves no listing
        session.caller.call(client.models.list, {})

    assert rls.default_registry().snapshot() == {}
    assert session.provider.received == 1


def test_a_client_of_an_unknown_sdk_is_refused() -> None:
    with pytest.raises(TypeError, match="anthropic, botocore, openai"):
        rls.shield_client(object())


# --- 5. a plain @shielded SDK method whose client retries by itself -------------------------------


def test_shielding_a_method_of_a_client_that_retries_warns_once() -> None:
    client = openai.OpenAI(base_url="http://127.0.0.1:9", api_key="test", max_retries=2)

    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        rls.shielded(client.chat.completions.create)
        rls.shielded(client.embeddings.with_raw_response.create)

    (warning,) = told
    assert warning.category is RuntimeWarning
    assert warning.filename == __file__  # it points at the decoration
    message = str(warning.message)
    assert "max_retries=2" in message
    assert "max_retries=0" in message and "rls.shield_client" in message


def test_shielding_a_method_of_a_client_that_does_not_retry_is_quiet() -> None:
    client = openai.OpenAI(base_url="http://127.0.0.1:9", api_key="test", max_retries=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rls.shielded(client.chat.completions.create)
        rls.shielded(rls.shield_client(client.with_options(max_retries=2)).chat.completions.create)
        rls.shielded(model="gpt-a")(lambda: None)


def test_shielding_the_raw_form_of_a_method_of_a_client_that_retries_warns() -> None:
    client = openai.OpenAI(base_url="http://127.0.0.1:9", api_key="test", max_retries=5)

    with pytest.warns(RuntimeWarning, match="max_retries=5"):
        rls.shielded(client.chat.completions.with_raw_response.create)
