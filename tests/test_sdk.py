"""The real OpenAI and Anthropic SDKs, sync and async, through `@shielded` against FakeProvider.

Every test runs once per flavour (OpenAI or Anthropic, sync or async client, `max_retries=0`)
inside `rls.testing.isolated()`, with the provider on the shield's own FakeClock: backoff and
Retry-After sleeps take no real time, and the provider's buckets refill exactly as far as the
virtual time moves. "method" wraps the SDK's create method itself (the model read from each
call's `model=`); "function" is a function of the caller's decorated `@rls.shielded(model=...)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from sdk_helpers import (
    ANSWER,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    Session,
)

import rate_limit_shield as rls
from rate_limit_shield.events import RETRY, THROTTLED, Event
from rate_limit_shield.llm import estimate_cost

STYLES = ["method", "function"]


def ask(session: Session, create: Callable[..., Any], model: str, **options: Any) -> Any:
    """Call a shielded create with the flavour's request for `model`."""
    return session.caller.call(create, session.flavour.request(model, **options))


# --- 1. throttling: Retry-After, shared pause, the provider's own bucket --------------------------


@pytest.mark.parametrize("style", STYLES)
def test_a_429_is_retried_after_its_retry_after_and_succeeds(session: Session, style: str) -> None:
    model = session.flavour.models[0]
    create = session.caller.shielded(style, model)
    session.provider.throttle(2.0)

    reply = ask(session, create, model)

    assert session.flavour.text_of(reply) == ANSWER
    assert len(session.clock.sleeps) == 1
    assert session.clock.sleeps[0] >= 2.0
    assert session.provider.statuses == {429: 1, 200: 1}
    assert session.breaker(model)["consecutive_failures"] == 0


def test_a_retry_after_holds_back_a_second_caller_of_the_model(session: Session) -> None:
    """The second caller starts (on its own client and thread) while the first caller's 429
    pause runs, before the first caller's own wait: it waits out the pause before sending."""
    model = session.flavour.models[0]
    seen: dict[str, Any] = {}

    def second_caller_starts_now(event: Event) -> None:
        if event.kind != THROTTLED or seen:
            return
        seen["paused_for"] = session.key(model).limiter.paused_for
        seen["received_before"] = session.provider.received
        sleeps_before = len(session.clock.sleeps)
        try:
            seen["reply"] = session.call_from_another_thread(model)
        except Exception as error:  # a listener's errors are only logged: raise it below
            seen["error"] = error
        seen["received_after"] = session.provider.received
        seen["second_caller_sleeps"] = session.clock.sleeps[sleeps_before:]

    rls.configure({}, on_event=second_caller_starts_now)
    create = session.caller.shielded("method", model)
    session.provider.throttle(2.0)

    reply = ask(session, create, model)

    if "error" in seen:
        raise seen["error"]
    assert session.flavour.text_of(reply) == ANSWER
    assert session.flavour.text_of(seen["reply"]) == ANSWER
    assert seen["paused_for"] == pytest.approx(2.0)
    assert (seen["received_before"], seen["received_after"]) == (1, 2)
    # The second caller's only wait is the whole pause, and it comes before its only request.
    assert seen["second_caller_sleeps"] == [pytest.approx(2.0)]
    assert session.provider.statuses == {429: 1, 200: 2}
    assert session.clock.sleeps[-1] >= 2.0  # the first caller's own backoff


def test_a_429_from_the_providers_bucket_is_retried_after_its_hint_and_opens_no_breaker(
    start: Callable[..., Session],
) -> None:
    session = start(requests=2)  # two a minute: the third call waits 30 s for a refill
    model = session.flavour.models[0]
    retries: list[Event] = []
    rls.configure({model: {"breaker": {"failure_threshold": 1}}}, on_event=retries.append)
    create = session.caller.shielded("method", model)

    replies = [ask(session, create, model) for _ in range(3)]

    assert [session.flavour.text_of(reply) for reply in replies] == [ANSWER] * 3
    assert session.provider.statuses == {200: 3, 429: 1}
    (retry,) = [event for event in retries if event.kind == RETRY]
    assert isinstance(retry.error, session.flavour.sdk.RateLimitError)
    hint = float(retry.error.response.headers["retry-after-ms"]) / 1000
    assert hint == pytest.approx(30.0)
    assert session.clock.sleeps == [retry.delay]
    assert retry.delay is not None and retry.delay >= hint
    assert session.breaker(model)["state"] == rls.State.CLOSED


# --- 2, 3. errors retrying cannot help ------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_a_context_length_error_is_raised_at_once(session: Session, style: str) -> None:
    model = session.flavour.models[0]
    create = session.caller.shielded(style, model)
    session.provider.context_length()

    with pytest.raises(session.flavour.sdk.BadRequestError):
        ask(session, create, model)

    assert session.provider.received == 1
    assert session.clock.sleeps == []
    assert session.breaker(model)["consecutive_failures"] == 0


@pytest.mark.parametrize("style", STYLES)
def test_a_quota_gone_raises_quota_exhausted_after_one_request(
    session: Session, style: str
) -> None:
    model = session.flavour.models[0]
    create = session.caller.shielded(style, model)
    session.provider.insufficient_quota()

    with pytest.raises(rls.QuotaExhausted) as refused:
        ask(session, create, model)

    assert isinstance(refused.value.__cause__, session.flavour.quota_error)
    assert session.provider.received == 1
    assert session.clock.sleeps == []
    assert session.breaker(model)["consecutive_failures"] == 0


# --- 4. the breaker: outages open it, throttles do not --------------------------------------------

ONE_ATTEMPT_THREE_FAILURES = {"retry": {"attempts": 1}, "breaker": {"failure_threshold": 3}}


def test_outages_open_the_breaker_and_then_nothing_is_sent(session: Session) -> None:
    model = session.flavour.models[0]
    rls.configure({model: ONE_ATTEMPT_THREE_FAILURES})
    create = session.caller.shielded("method", model)
    session.provider.fail(session.flavour.outage, times=3)

    states = []
    for _ in range(3):
        with pytest.raises(session.flavour.sdk.APIStatusError) as failed:
            ask(session, create, model)
        assert failed.value.status_code == session.flavour.outage
        states.append(session.breaker(model)["state"])
    with pytest.raises(rls.CircuitOpen):
        ask(session, create, model)

    assert states == [rls.State.CLOSED, rls.State.CLOSED, rls.State.OPEN]
    assert session.provider.received == 3


def test_throttles_never_open_the_breaker(session: Session) -> None:
    model = session.flavour.models[0]
    rls.configure({model: ONE_ATTEMPT_THREE_FAILURES})
    create = session.caller.shielded("method", model)
    session.provider.throttle(1.0, times=5)

    for _ in range(5):
        with pytest.raises(session.flavour.sdk.RateLimitError):
            ask(session, create, model)
    reply = ask(session, create, model)

    assert session.flavour.text_of(reply) == ANSWER
    assert session.breaker(model)["state"] == rls.State.CLOSED
    assert session.breaker(model)["consecutive_failures"] == 0
    assert session.provider.statuses == {429: 5, 200: 1}


# --- 5. tokens: estimated up front, settled from the reply's usage --------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_tokens_settle_to_the_replys_usage_not_the_estimate(session: Session, style: str) -> None:
    model = session.flavour.models[0]
    rls.configure({model: session.flavour.token_policy})
    create = session.caller.shielded(style, model)
    estimate = estimate_cost(**session.flavour.request(model))

    reply = ask(session, create, model)

    usage = session.flavour.usage_of(reply)
    assert usage == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert usage != (estimate["input_tokens"], estimate["output_tokens"])  # so the test tells
    assert session.clock.monotonic() == 0.0  # nothing refilled meanwhile
    assert session.levels(model) == pytest.approx(session.flavour.levels_after(*usage))


def test_a_call_retried_after_a_429_is_charged_only_its_replys_usage(session: Session) -> None:
    """The provider charged the refused attempt nothing, so neither may the key: the call as a
    whole costs what its reply's usage says, as a call that went through at once does."""
    model = session.flavour.models[0]
    rls.configure({model: session.flavour.token_policy})
    create = session.caller.shielded("method", model)
    session.provider.throttle(2.0)

    reply = ask(session, create, model)

    assert session.provider.statuses == {429: 1, 200: 1}
    assert session.levels(model) == pytest.approx(
        session.flavour.levels_after(*session.flavour.usage_of(reply))
    )


def test_a_request_larger_than_a_token_limit_is_refused_unsent(session: Session) -> None:
    model = session.flavour.models[0]
    rls.configure({model: session.flavour.token_policy})
    create = session.caller.shielded("method", model)

    with pytest.raises(ValueError, match="capacity"):
        ask(session, create, model, max_tokens=2000)

    assert session.provider.received == 0
    assert session.levels(model) == session.flavour.levels_after(0, 0)


def test_a_request_larger_than_a_token_limit_keeps_no_half_open_probe(session: Session) -> None:
    """Refused before it is sent, the call must give back the probe the half-open breaker lent
    it: the next call is then the probe, and its success closes the breaker."""
    model = session.flavour.models[0]
    breaker = {"failure_threshold": 1, "recovery_timeout": 10}
    rls.configure(
        {model: {**session.flavour.token_policy, "retry": {"attempts": 1}, "breaker": breaker}}
    )
    create = session.caller.shielded("method", model)
    session.provider.fail(session.flavour.outage)
    with pytest.raises(session.flavour.sdk.APIStatusError):
        ask(session, create, model)
    session.clock.advance(10)
    assert session.breaker(model)["state"] == rls.State.HALF_OPEN

    with pytest.raises(ValueError, match="capacity"):
        ask(session, create, model, max_tokens=2000)
    reply = ask(session, create, model)

    assert session.flavour.text_of(reply) == ANSWER
    assert session.breaker(model)["state"] == rls.State.CLOSED
    assert session.provider.received == 2


# --- 6. streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_a_stream_delivers_its_items_and_settles_its_usage_at_the_end(
    session: Session, style: str
) -> None:
    model = session.flavour.models[0]
    rls.configure({model: session.flavour.token_policy})
    create = session.caller.shielded(style, model)
    estimate = estimate_cost(**session.flavour.request(model, stream=True))

    stream = ask(session, create, model, stream=True)
    held = session.levels(model)  # the first item has come: the estimate is still charged
    items, error = session.caller.drain(stream)

    assert error is None
    assert session.flavour.text_of_stream(items) == ANSWER
    assert held == pytest.approx(
        session.flavour.levels_after(estimate["input_tokens"], estimate["output_tokens"])
    )
    usage = session.flavour.usage_of_stream(items)
    assert usage == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert session.levels(model) == pytest.approx(session.flavour.levels_after(*usage))
    assert session.provider.received == 1


def test_a_stream_failing_midway_reaches_the_caller_and_the_breaker(session: Session) -> None:
    model = session.flavour.models[0]
    create = session.caller.shielded("method", model)
    session.provider.stream_error()

    items, error = session.caller.drain(ask(session, create, model, stream=True))

    assert len(items) == 1  # the provider breaks the stream after its first event
    assert isinstance(error, session.flavour.sdk.APIError)
    assert session.breaker(model)["consecutive_failures"] == 1
    assert session.provider.received == 1  # items reached the caller: never restarted
    assert session.clock.sleeps == []


def test_a_stream_failing_before_its_first_item_is_retried(session: Session) -> None:
    model = session.flavour.models[0]
    create = session.caller.shielded("method", model)
    session.provider.fail(session.flavour.outage)

    items, error = session.caller.drain(ask(session, create, model, stream=True))

    assert error is None
    assert session.flavour.text_of_stream(items) == ANSWER
    assert session.provider.statuses == {session.flavour.outage: 1, 200: 1}
    assert len(session.clock.sleeps) == 1  # one backoff
    assert session.breaker(model)["consecutive_failures"] == 0


# --- 7. fallbacks ---------------------------------------------------------------------------------


def test_a_model_whose_quota_is_gone_falls_back_to_the_next(session: Session) -> None:
    first, second = session.flavour.models
    rls.configure({first: {"fallbacks": [second]}})
    create = session.caller.shielded("method", first)
    session.provider.insufficient_quota(model=first)

    reply = ask(session, create, first)

    assert reply.model == second
    assert session.flavour.text_of(reply) == ANSWER
    assert session.provider.received_by_model() == {first: 1, second: 1}


def test_a_model_whose_breaker_is_open_falls_back_to_the_next(session: Session) -> None:
    first, second = session.flavour.models
    rls.configure({first: {"fallbacks": [second]}})
    create = session.caller.shielded("method", first)
    breaker = session.key(first).breaker
    assert breaker is not None
    breaker.force_open()

    reply = ask(session, create, first)

    assert reply.model == second
    assert session.provider.received_by_model() == {second: 1}


# --- 8. the provider's own remaining quota --------------------------------------------------------

CALLS_PAST_THE_PROVIDERS_BURST = 8  # the provider takes 5 at once, then one every 12 s


def test_raw_responses_hold_the_key_to_what_the_provider_says_remains(
    start: Callable[..., Session],
) -> None:
    """The provider allows 5 requests a minute, the policy 60: after the first answer the key
    holds at most the provider's remaining count, and later calls wait here, not for a 429."""
    session = start(requests=5)
    model = session.flavour.models[0]
    rls.configure({model: {"rpm": 60}})
    create = session.caller.shielded("method", model, raw=True)

    first = ask(session, create, model)
    remaining = float(first.headers[session.flavour.remaining_requests_header])
    held = session.levels(model)["60/60s requests"]
    replies = [ask(session, create, model) for _ in range(CALLS_PAST_THE_PROVIDERS_BURST - 1)]

    assert remaining == 4
    assert held <= remaining
    texts = [session.flavour.text_of(session.caller.parse(reply)) for reply in replies]
    assert texts == [ANSWER] * len(replies)
    assert session.provider.statuses == {200: CALLS_PAST_THE_PROVIDERS_BURST}
    assert session.clock.monotonic() >= 12.0 * (CALLS_PAST_THE_PROVIDERS_BURST - 5)  # waited here


@pytest.mark.parametrize("adaptive", [False, True])
def test_plain_replies_draw_at_most_one_429_from_a_smaller_provider(
    start: Callable[..., Session], adaptive: bool
) -> None:
    """A plain SDK reply carries no headers: the key learns the provider's limit from the
    first 429's headers, and from then on waits here."""
    session = start(requests=5)
    model = session.flavour.models[0]
    rls.configure({model: {"rpm": 60, "adaptive": adaptive}})
    create = session.caller.shielded("method", model)

    replies = [ask(session, create, model) for _ in range(CALLS_PAST_THE_PROVIDERS_BURST)]

    assert [session.flavour.text_of(reply) for reply in replies] == [ANSWER] * len(replies)
    assert session.provider.statuses[200] == CALLS_PAST_THE_PROVIDERS_BURST
    assert session.provider.statuses[429] <= 1


# --- 9. malformed headers -------------------------------------------------------------------------


def test_malformed_rate_limit_headers_on_a_reply_are_ignored(session: Session) -> None:
    model = session.flavour.models[0]
    rls.configure({model: {"rpm": 60, **session.flavour.token_policy}})
    create = session.caller.shielded("method", model, raw=True)  # raw: the shield reads its headers
    session.provider.malformed_headers()

    reply = ask(session, create, model)

    assert reply.headers[session.flavour.remaining_requests_header] == "-1"  # garbled indeed
    assert session.flavour.text_of(session.caller.parse(reply)) == ANSWER
    assert all(math.isfinite(level) for level in session.levels(model).values())
    assert session.levels(model)["60/60s requests"] == 59


def test_a_429_with_malformed_headers_is_retried_with_plain_backoff(session: Session) -> None:
    model = session.flavour.models[0]
    rls.configure({model: {"rpm": 60, **session.flavour.token_policy}})
    create = session.caller.shielded("method", model)
    session.provider.throttle(30.0)
    session.provider.malformed_headers()  # retry-after "soon", retry-after-ms "NaN"

    reply = ask(session, create, model)

    assert session.flavour.text_of(reply) == ANSWER
    assert session.provider.statuses == {429: 1, 200: 1}
    assert len(session.clock.sleeps) == 1
    # The default backoff (full jitter from base_delay), not the garbled 30 s hint.
    assert session.clock.sleeps[0] <= rls.RetryPolicy().base_delay
    assert all(math.isfinite(level) for level in session.levels(model).values())
