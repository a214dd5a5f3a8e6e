"""FakeProvider: the real OpenAI and Anthropic SDKs parse its answers and raise the expected
errors; its buckets, scripts, streams, counters and shutdown do what its docstring says."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import anthropic
import openai
import pytest

import rate_limit_shield as rls
from rate_limit_shield.llm.headers import parse_duration
from rate_limit_shield.testing import FakeClock, FakeProvider, isolated
from rate_limit_shield.testing.provider import main
from rate_limit_shield.testing.provider.wire import go_duration

OPENAI = FakeProvider.OPENAI_PATH
ANTHROPIC = FakeProvider.ANTHROPIC_PATH
HELLO: Any = [{"role": "user", "content": "hello world!"}]  # 12 bytes: 3 + 4 = 7 prompt tokens
WALL = 1_700_000_000.0  # FakeClock's wall time at monotonic 0: 2023-11-14T22:13:20Z


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Clients(NamedTuple):
    """One sync client of each SDK, made once (each costs an SSL context) and pointed at each
    test's provider with `with_options`, which keeps the connection pool."""

    openai: openai.OpenAI
    anthropic: anthropic.Anthropic

    def of(self, provider: FakeProvider) -> Clients:
        return Clients(
            self.openai.with_options(base_url=provider.url + "/v1"),
            self.anthropic.with_options(base_url=provider.url),
        )


@pytest.fixture(scope="module")
def sdk() -> Iterator[Clients]:
    with (
        openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="test", max_retries=0) as oa,
        anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="test", max_retries=0) as an,
    ):
        yield Clients(oa, an)


def async_clients(provider: FakeProvider) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    return (
        openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test", max_retries=0),
        anthropic.AsyncAnthropic(base_url=provider.url, api_key="test", max_retries=0),
    )


def chat(client: openai.OpenAI, model: str = "gpt-4o", **options: Any) -> Any:
    """A raw chat completion response (headers + parse())."""
    return client.chat.completions.with_raw_response.create(
        model=model, messages=options.pop("messages", HELLO), **options
    )


def message(client: anthropic.Anthropic, model: str = "claude-x", **options: Any) -> Any:
    """A raw Anthropic message response (headers + parse())."""
    options.setdefault("max_tokens", 100)
    return client.messages.with_raw_response.create(
        model=model, messages=options.pop("messages", HELLO), **options
    )


def port_of(provider: FakeProvider) -> int:
    return int(provider.url.rsplit(":", 1)[1])


def post(provider: FakeProvider, path: str, body: bytes, method: str = "POST") -> tuple[int, Any]:
    """A plain HTTP request: the status and the JSON body of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port_of(provider))
    try:
        connection.request(method, path, body)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


# --- answers --------------------------------------------------------------------------------


def test_openai_completion_parses_with_the_documented_usage(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=5) as provider:
        raw = chat(sdk.of(provider).openai, max_tokens=10)
    completion = raw.parse()
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert (completion.object, completion.model) == ("chat.completion", "gpt-4o")
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "ok ok ok ok ok"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 5)
    assert completion.usage.total_tokens == 12
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["content-length"] == str(len(raw.http_response.content))


def test_openai_max_tokens_cuts_the_answer_and_n_multiplies_it(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=16) as provider:
        completion = chat(sdk.of(provider).openai, max_completion_tokens=3, n=2).parse()
    assert [choice.finish_reason for choice in completion.choices] == ["length", "length"]
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.usage.completion_tokens == 6


def test_answer_lengths_are_drawn_per_request_from_a_seeded_range(sdk: Clients) -> None:
    def lengths(seed: int, completion_tokens: tuple[int, int]) -> list[int]:
        with FakeProvider(completion_tokens=completion_tokens, seed=seed) as provider:
            client = sdk.of(provider).openai
            completions = [chat(client).parse() for _ in range(12)]
        for completion in completions:
            assert completion.choices[0].finish_reason == "stop"
            words = completion.choices[0].message.content.split()
            assert len(words) == completion.usage.completion_tokens
        return [completion.usage.completion_tokens for completion in completions]

    drawn = lengths(1, (10, 500))
    assert all(10 <= length <= 500 for length in drawn)
    assert len(set(drawn)) > 1
    assert lengths(1, (10, 500)) == drawn
    assert lengths(2, (10, 500)) != drawn
    assert set(lengths(1, (2, 3))) == {2, 3}  # both ends included


def test_max_tokens_cuts_a_drawn_length(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=(20, 30), seed=5) as provider:
        client = sdk.of(provider).openai
        cut = chat(client, max_tokens=5).parse()
        whole = chat(client, max_tokens=100).parse()
    assert (cut.choices[0].finish_reason, cut.usage.completion_tokens) == ("length", 5)
    assert whole.choices[0].finish_reason == "stop"
    assert 20 <= whole.usage.completion_tokens <= 30


def test_anthropic_message_parses_with_the_documented_usage(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=4) as provider:
        client = sdk.of(provider).anthropic
        raw = message(client, system="be brief")  # 12 + 8 bytes, two messages: 5 + 8
        cut = message(client, max_tokens=2).parse()
    reply = raw.parse()
    assert isinstance(reply, anthropic.types.Message)
    assert (reply.type, reply.role, reply.model) == ("message", "assistant", "claude-x")
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "ok ok ok ok"
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (13, 4)
    assert raw.headers["request-id"].startswith("req_")
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", 2)


def test_async_clients_parse_too() -> None:
    async def both(provider: FakeProvider) -> tuple[Any, Any]:
        oa, an = async_clients(provider)
        async with oa, an:
            return await asyncio.gather(
                oa.chat.completions.create(model="gpt-4o", messages=HELLO),
                an.messages.create(model="claude-x", max_tokens=8, messages=HELLO),
            )

    with FakeProvider(completion_tokens=3) as provider:
        completion, reply = asyncio.run(both(provider))
    assert completion.usage.completion_tokens == 3
    assert reply.usage.output_tokens == 3
    assert provider.received_by_model() == {"gpt-4o": 1, "claude-x": 1}


@pytest.mark.parametrize(
    ("messages", "system", "expected"),
    [
        ([], None, 0),
        ([{"role": "user", "content": "abcd"}], None, 1 + 4),
        ([{"role": "user", "content": "abcde"}], None, 2 + 4),
        ([{"role": "user", "content": "é"}], None, 1 + 4),  # 2 bytes
        (
            [{"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "image"}]}],
            [{"type": "text", "text": "cdefg"}],
            2 + 8,
        ),
        ([{"role": "user", "content": "ab"}, {"role": "assistant", "content": "cd"}], "", 1 + 12),
    ],
)
def test_prompt_tokens_follow_the_fixed_rule(
    messages: list[Any], system: object, expected: int
) -> None:
    assert FakeProvider.prompt_tokens(messages, system=system) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.02, "20ms"), (0.0004, "1ms"), (1.5, "1.5s"), (0.3 * 3, "900ms"),
     (360, "6m0s"), (179.56, "2m59.56s"), (3600, "1h0m0s")],
)  # fmt: skip
def test_reset_durations_are_written_as_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# --- buckets --------------------------------------------------------------------------------


def test_openai_requests_bucket_answers_429_with_the_headers_and_refills(
    sdk: Clients, clock: FakeClock
) -> None:
    with FakeProvider(requests=2, clock=clock) as provider:
        client = sdk.of(provider).openai
        first = chat(client)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-reset-requests"] == "30s"
        chat(client)
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
        headers = refused.value.response.headers
        assert headers["retry-after"] == "30"
        assert headers["retry-after-ms"] == "30000"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"] == "1m0s"
        assert "x-ratelimit-limit-tokens" not in headers  # no token bucket configured
        assert refused.value.code == "rate_limit_exceeded"
        assert refused.value.type == "requests"
        clock.advance(29.9)
        with pytest.raises(openai.RateLimitError) as again:
            chat(client)
        assert again.value.response.headers["retry-after-ms"] == "100"
        assert again.value.response.headers["retry-after"] == "1"  # rounded up
        clock.advance(0.1)
        assert chat(client).headers["x-ratelimit-remaining-requests"] == "0"
    assert provider.statuses == {200: 3, 429: 2}


def test_openai_tokens_are_charged_up_front_and_settled_to_usage(
    sdk: Clients, clock: FakeClock
) -> None:
    with FakeProvider(tokens=100, clock=clock) as provider:  # 100 a minute: 5/3 a second
        client = sdk.of(provider).openai
        # 7 prompt + 50 max_tokens must fit; the answer uses 16, so 23 stay charged.
        assert chat(client, max_tokens=50).headers["x-ratelimit-remaining-tokens"] == "77"
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client, max_tokens=80)  # 87 > 77: 10 tokens short, 6 s at 5/3 a second
        assert refused.value.type == "tokens"
        assert refused.value.response.headers["retry-after"] == "6"
        assert refused.value.response.headers["retry-after-ms"] == "6000"
        assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "77"
        assert refused.value.response.headers["x-ratelimit-reset-tokens"] == "13.8s"
        clock.advance(6)
        assert chat(client, max_tokens=80).parse().usage.total_tokens == 23
    assert provider.tokens_charged == 46


def test_a_request_without_max_tokens_is_charged_its_real_answer(
    sdk: Clients, clock: FakeClock
) -> None:
    with FakeProvider(tokens=10_000, completion_tokens=(10, 500), seed=3, clock=clock) as provider:
        client = sdk.of(provider).openai
        plain = chat(client)
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        after = chat(client)
    first = plain.parse().usage.total_tokens
    streamed = chunks[-1].usage.total_tokens
    last = after.parse().usage.total_tokens
    assert first != streamed
    assert plain.headers["x-ratelimit-remaining-tokens"] == str(10_000 - first)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(10_000 - first - streamed - last)
    assert provider.tokens_charged == first + streamed + last


def test_a_request_without_max_tokens_is_admitted_on_its_prompt_and_owes_its_answer(
    sdk: Clients, clock: FakeClock
) -> None:
    with FakeProvider(tokens=100, completion_tokens=200, clock=clock) as provider:
        client = sdk.of(provider).openai  # 100 tokens a minute: 5/3 a second
        first = chat(client)  # 7 fit; the 200-token answer leaves the bucket 107 in debt
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)  # 114 short: 68.4 s
    assert first.parse().usage.total_tokens == 207
    assert first.headers["x-ratelimit-remaining-tokens"] == "0"
    assert first.headers["x-ratelimit-reset-tokens"] == "2m4.2s"
    assert refused.value.response.headers["retry-after-ms"] == "68400"
    assert provider.tokens_charged == 207


def test_answer_lengths_are_drawn_in_the_order_requests_are_admitted(
    sdk: Clients, clock: FakeClock
) -> None:
    def length(client: openai.OpenAI) -> int:
        return int(chat(client).parse().usage.completion_tokens)

    with FakeProvider(completion_tokens=(10, 500), seed=4) as provider:
        client = sdk.of(provider).openai
        expected = [length(client) for _ in range(3)]
    with FakeProvider(requests=1, completion_tokens=(10, 500), seed=4, clock=clock) as provider:
        client = sdk.of(provider).openai
        answered = []
        for _ in range(3):
            answered.append(length(client))
            with pytest.raises(openai.RateLimitError):
                chat(client)  # refused: it draws nothing
            clock.advance(60)
    assert answered == expected


def test_a_request_larger_than_a_bucket_gets_no_retry_hint(sdk: Clients, clock: FakeClock) -> None:
    with (
        FakeProvider(tokens=50, clock=clock) as provider,
        pytest.raises(openai.RateLimitError) as refused,
    ):
        chat(sdk.of(provider).openai, max_tokens=100)
    assert "retry-after" not in refused.value.response.headers
    assert "Request too large" in refused.value.message
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "50"


def test_anthropic_buckets_report_every_unit_and_refuse_with_429(
    sdk: Clients, clock: FakeClock
) -> None:
    limits = {"requests": 2, "tokens": 1000, "input_tokens": 100, "output_tokens": 50}
    with FakeProvider(**limits, clock=clock) as provider:
        client = sdk.of(provider).anthropic
        headers = message(client, max_tokens=40).headers  # 7 in, 16 out after settlement
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert headers["anthropic-ratelimit-requests-reset"] == "2023-11-14T22:13:50Z"
        assert headers["anthropic-ratelimit-tokens-remaining"] == "977"
        assert headers["anthropic-ratelimit-input-tokens-remaining"] == "93"
        assert headers["anthropic-ratelimit-output-tokens-limit"] == "50"
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == "34"
        assert headers["anthropic-ratelimit-output-tokens-reset"] == "2023-11-14T22:13:40Z"
        message(client, max_tokens=10)
        with pytest.raises(anthropic.RateLimitError) as refused:
            message(client, max_tokens=10)
    assert refused.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": refused.value.api_message},
    }
    assert refused.value.response.headers["retry-after"] == "30"
    assert refused.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_a_one_second_bucket_is_stated_per_minute_in_openai_headers(
    sdk: Clients, clock: FakeClock
) -> None:
    """OpenAI's limit headers are per minute (RPM, TPM): a bucket of 20 requests and 5,000
    tokens a second is OpenAI's 1,200 RPM and 300,000 TPM enforced a second at a time. They
    used to say "20", which a client reads as 20 a minute."""
    with FakeProvider(requests=20, tokens=5000, per_seconds=1, clock=clock) as provider:
        client = sdk.of(provider).openai
        first = chat(client)  # 7 + 16 tokens
        for _ in range(19):
            chat(client)
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
    assert first.headers["x-ratelimit-limit-requests"] == "1200"
    assert first.headers["x-ratelimit-remaining-requests"] == "1199"  # one used of 1,200
    assert first.headers["x-ratelimit-reset-requests"] == "50ms"  # one back at 20 a second
    assert first.headers["x-ratelimit-limit-tokens"] == "300000"
    assert first.headers["x-ratelimit-remaining-tokens"] == "299977"
    assert first.headers["x-ratelimit-reset-tokens"] == "5ms"  # 23 at 5,000 a second
    headers = refused.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "1180"
    assert headers["x-ratelimit-reset-requests"] == "1s"
    assert headers["retry-after-ms"] == "50"
    assert refused.value.body["message"] == (
        "Rate limit reached for gpt-4o in organization org-fake on requests per min (RPM): "
        "Limit 1200, Used 20, Requested 1. Please try again in 50ms. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )


def test_a_one_second_bucket_is_stated_per_minute_in_anthropic_headers(
    sdk: Clients, clock: FakeClock
) -> None:
    limits = {"requests": 2, "input_tokens": 100, "output_tokens": 50}
    with FakeProvider(**limits, per_seconds=1, clock=clock) as provider:
        client = sdk.of(provider).anthropic
        headers = message(client, max_tokens=40).headers  # 7 in, 16 out
        message(client, max_tokens=10)
        with pytest.raises(anthropic.RateLimitError) as refused:
            message(client, max_tokens=10)
    assert headers["anthropic-ratelimit-requests-limit"] == "120"
    assert headers["anthropic-ratelimit-requests-remaining"] == "119"
    assert headers["anthropic-ratelimit-requests-reset"] == "2023-11-14T22:13:21Z"  # in 0.5 s
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "6000"
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "5993"
    assert headers["anthropic-ratelimit-output-tokens-limit"] == "3000"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "2984"
    assert refused.value.response.headers["anthropic-ratelimit-requests-remaining"] == "118"
    assert refused.value.body["error"]["message"].startswith(
        "This request would exceed the rate limit for your organization of 120 requests per "
        "minute. "
    )


@pytest.mark.parametrize("per_seconds", [1, 2, 5, 10, 30, 60])
def test_remaining_and_reset_agree_with_the_per_minute_limit(
    sdk: Clients, clock: FakeClock, per_seconds: int
) -> None:
    """remaining + what refills until the reset == the per-minute limit: the headers describe
    one bucket of the stated limit, refilled at its rate, whatever slice enforces it."""
    with FakeProvider(tokens=per_seconds * 100, per_seconds=per_seconds, clock=clock) as provider:
        client = sdk.of(provider).openai
        chat(client, max_tokens=40)
        clock.advance(0.2)
        headers = chat(client, max_tokens=30).headers
    limit = float(headers["x-ratelimit-limit-tokens"])
    remaining = float(headers["x-ratelimit-remaining-tokens"])
    reset = parse_duration(headers["x-ratelimit-reset-tokens"])
    assert limit == 6000
    assert reset is not None
    assert remaining + limit / 60 * reset == pytest.approx(limit, abs=1 + limit / 60 * 0.001)


def test_a_configured_rate_is_not_cut_by_a_one_second_bucket_of_the_same_rate(
    sdk: Clients,
) -> None:
    """`rpm=1200` against a provider allowing 20 requests a second: the same rate, so the
    shield keeps it. When the headers said "limit 20", the shield adopted 20 a minute and 60
    calls took two minutes instead of two seconds."""
    with isolated() as clock, FakeProvider(requests=20, per_seconds=1, clock=clock) as provider:
        rls.configure({"gpt-4o": {"rpm": 1200, "retry": {"attempts": 10}}})
        create = rls.shielded(sdk.of(provider).openai.chat.completions.with_raw_response.create)
        for _ in range(60):
            create(model="gpt-4o", messages=HELLO)
    assert provider.statuses[200] == 60
    assert clock.monotonic() < 4


def test_buckets_are_per_model(sdk: Clients, clock: FakeClock) -> None:
    with FakeProvider(requests=1, clock=clock) as provider:
        client = sdk.of(provider).openai
        chat(client, model="gpt-4o")
        with pytest.raises(openai.RateLimitError):
            chat(client, model="gpt-4o")
        assert chat(client, model="gpt-4o-mini").headers["x-ratelimit-remaining-requests"] == "0"
    assert provider.received_by_model() == {"gpt-4o": 2, "gpt-4o-mini": 1}


def test_concurrent_clients_share_the_bucket_atomically(clock: FakeClock) -> None:
    async def burst(provider: FakeProvider) -> list[Any]:
        client, _ = async_clients(provider)
        async with client:
            calls = [client.chat.completions.create(model="m", messages=HELLO) for _ in range(50)]
            return await asyncio.gather(*calls, return_exceptions=True)

    with FakeProvider(requests=20, clock=clock) as provider:
        results = asyncio.run(burst(provider))
    assert sum(isinstance(result, openai.RateLimitError) for result in results) == 30
    assert provider.statuses == {200: 20, 429: 30}
    assert provider.tokens_charged == 20 * (7 + 16)


# --- models ---------------------------------------------------------------------------------


def test_openai_answers_another_providers_model_with_its_404(
    sdk: Clients, clock: FakeClock
) -> None:
    with FakeProvider(requests=5, clock=clock) as provider:
        client = sdk.of(provider).openai
        provider.fail(503)  # the model is looked up first: the script waits for a known one
        with pytest.raises(openai.NotFoundError) as missing:
            chat(client, model="claude-3-5-haiku")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="claude-x", messages=HELLO, stream=True)
        with pytest.raises(openai.InternalServerError):
            chat(client)
        assert chat(client).headers["x-ratelimit-remaining-requests"] == "4"  # 404s cost nothing
    assert missing.value.status_code == 404
    assert missing.value.body == {
        "message": "The model `claude-3-5-haiku` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    assert provider.statuses == {404: 2, 503: 1, 200: 1}
    assert provider.received_by_model() == {"claude-3-5-haiku": 1, "claude-x": 1, "gpt-4o": 2}


@pytest.mark.parametrize(
    "model", ["gpt-4o", "o3-mini", "o1", "text-embedding-3-small", "ft:gpt-4o-mini:org::abc"]
)
def test_anthropic_answers_openais_models_with_its_404(sdk: Clients, model: str) -> None:
    with FakeProvider() as provider, pytest.raises(anthropic.NotFoundError) as missing:
        message(sdk.of(provider).anthropic, model=model)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": f"model: {model}"},
    }


def test_models_of_no_provider_are_served_by_both_unless_models_are_named(sdk: Clients) -> None:
    """Without `models`, a name that is no provider's (a benchmark's "bench-model", a local
    model behind an OpenAI-compatible gateway) is served; with it, only the dialect's own
    models and the ones named are."""
    with FakeProvider() as provider:
        oa, an = sdk.of(provider)
        chat(oa, model="bench-model")
        message(an, model="bench-model")
    with FakeProvider(models=["my-*", "claude-3-5-haiku"]) as provider:
        oa, an = sdk.of(provider)
        chat(oa, model="my-finetune")
        message(an, model="my-finetune")
        chat(oa, model="claude-3-5-haiku")  # named: a gateway serving it in OpenAI's dialect
        chat(oa, model="gpt-4o-mini")
        message(an, model="claude-x")
        with pytest.raises(openai.NotFoundError):
            chat(oa, model="bench-model")
        with pytest.raises(anthropic.NotFoundError):
            message(an, model="bench-model")
        with pytest.raises(openai.NotFoundError):
            chat(oa, model="claude-x")
    assert provider.statuses == {200: 5, 404: 3}


# --- scripted answers -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_openai_outages_are_internal_server_errors(sdk: Clients, status: int) -> None:
    with FakeProvider() as provider:
        client = sdk.of(provider).openai
        provider.fail(status)
        with pytest.raises(openai.InternalServerError) as failed:
            chat(client)
        assert chat(client).parse().usage.completion_tokens == 16  # once only
    assert failed.value.status_code == status
    assert failed.value.type == "server_error"


@pytest.mark.parametrize(
    ("status", "error_class", "kind"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "api_error"),
        (504, anthropic.GatewayTimeoutError, "timeout_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_anthropic_outages_raise_their_sdk_classes(
    sdk: Clients, status: int, error_class: type[anthropic.APIStatusError], kind: str
) -> None:
    with FakeProvider() as provider:
        provider.fail(status)
        with pytest.raises(error_class) as failed:
            message(sdk.of(provider).anthropic)
    assert failed.value.status_code == status
    assert failed.value.type == kind


def test_scripted_answers_charge_nothing_and_run_in_order(sdk: Clients, clock: FakeClock) -> None:
    with FakeProvider(requests=1, clock=clock) as provider:
        client = sdk.of(provider).openai
        provider.fail(500, times=2)
        provider.throttle(1)
        provider.fail(502)
        statuses = []
        for _ in range(5):
            try:
                chat(client)
                statuses.append(200)
            except openai.APIStatusError as error:
                statuses.append(error.status_code)
    assert statuses == [500, 500, 429, 502, 200]


def test_scripts_only_touch_the_path_and_model_they_name(sdk: Clients) -> None:
    with FakeProvider() as provider:
        oa, an = sdk.of(provider)
        provider.fail(529, path=ANTHROPIC)
        provider.fail(503, model="gpt-4o")
        chat(oa, model="gpt-4o-mini")
        with pytest.raises(anthropic.OverloadedError):
            message(an)
        with pytest.raises(openai.InternalServerError):
            chat(oa, model="gpt-4o")
        chat(oa, model="gpt-4o")
    assert provider.statuses == {200: 2, 503: 1, 529: 1}


def test_insufficient_quota_is_a_429_without_retry_hint_on_openai(sdk: Clients) -> None:
    with FakeProvider() as provider:
        provider.insufficient_quota()
        with pytest.raises(openai.RateLimitError) as gone:
            chat(sdk.of(provider).openai)
    assert gone.value.code == "insufficient_quota"
    assert gone.value.type == "insufficient_quota"
    assert "retry-after" not in gone.value.response.headers
    assert "retry-after-ms" not in gone.value.response.headers


def test_insufficient_quota_is_the_credit_balance_error_on_anthropic(sdk: Clients) -> None:
    with FakeProvider() as provider:
        provider.insufficient_quota()
        with pytest.raises(anthropic.BadRequestError) as gone:
            message(sdk.of(provider).anthropic)
    assert gone.value.type == "invalid_request_error"
    assert gone.value.api_message is not None
    assert "credit balance is too low" in gone.value.api_message


def test_context_length_is_a_400_in_both_dialects(sdk: Clients) -> None:
    with FakeProvider() as provider:
        oa, an = sdk.of(provider)
        provider.context_length(times=2)
        with pytest.raises(openai.BadRequestError) as too_long:
            chat(oa)
        with pytest.raises(anthropic.BadRequestError) as too_long_too:
            message(an)
    assert too_long.value.code == "context_length_exceeded"
    assert too_long.value.param == "messages"
    assert too_long_too.value.api_message is not None
    assert too_long_too.value.api_message.startswith("prompt is too long")


def test_throttle_sends_its_retry_after_whatever_the_buckets(sdk: Clients) -> None:
    with FakeProvider() as provider:
        oa, an = sdk.of(provider)
        provider.throttle(2.5, times=2)
        with pytest.raises(openai.RateLimitError) as throttled:
            chat(oa)
        with pytest.raises(anthropic.RateLimitError) as throttled_too:
            message(an)
    for error in (throttled.value, throttled_too.value):
        assert error.response.headers["retry-after"] == "3"
        assert error.response.headers["retry-after-ms"] == "2500"
    assert throttled.value.code == "rate_limit_exceeded"
    assert throttled_too.value.type == "rate_limit_error"


def test_slow_answers_arrive_after_a_real_delay(sdk: Clients) -> None:
    with FakeProvider() as provider:
        client = sdk.of(provider).openai
        provider.slow(0.2)
        started = time.monotonic()
        chat(client)
        slow_one = time.monotonic() - started
        started = time.monotonic()
        chat(client)
        next_one = time.monotonic() - started
    assert slow_one >= 0.2
    assert next_one < 0.2


def test_slow_answers_time_the_sdk_out_and_do_not_hold_up_stop(sdk: Clients) -> None:
    provider = FakeProvider().start()
    provider.slow(30)
    with pytest.raises(openai.APITimeoutError):
        chat(sdk.of(provider).openai.with_options(timeout=0.1))
    started = time.monotonic()
    provider.stop()
    assert time.monotonic() - started < 5


def test_malformed_headers_are_garbage_but_the_body_still_parses(
    sdk: Clients, clock: FakeClock
) -> None:
    with FakeProvider(requests=1, tokens=1000, clock=clock) as provider:
        client = sdk.of(provider).openai
        provider.malformed_headers(times=2)
        raw = chat(client)
        with pytest.raises(openai.RateLimitError) as refused:  # the bucket is empty
            chat(client)
        with pytest.raises(openai.RateLimitError) as plain:  # the script has run out
            chat(client)
    assert raw.parse().usage.total_tokens == 23
    for unit in ("requests", "tokens"):
        assert raw.headers[f"x-ratelimit-limit-{unit}"] == "1e400"
        assert raw.headers[f"x-ratelimit-remaining-{unit}"] == "-1"
        assert raw.headers[f"x-ratelimit-reset-{unit}"] == "whenever"
    assert raw.headers["retry-after"] == "soon"
    assert refused.value.response.headers["retry-after"] == "soon"
    assert refused.value.response.headers["retry-after-ms"] == "NaN"
    assert refused.value.code == "rate_limit_exceeded"
    assert plain.value.response.headers["retry-after"] == "60"


def test_malformed_anthropic_headers(sdk: Clients) -> None:
    with FakeProvider() as provider:
        provider.malformed_headers()
        raw = message(sdk.of(provider).anthropic)
    assert raw.parse().usage.output_tokens == 16
    for unit in ("requests", "tokens", "input-tokens", "output-tokens"):
        assert raw.headers[f"anthropic-ratelimit-{unit}-reset"] == "whenever"
        assert raw.headers[f"anthropic-ratelimit-{unit}-remaining"] == "-1"
    assert raw.headers["request-id"].startswith("req_")


# --- streams --------------------------------------------------------------------------------


def test_openai_streams_parse_with_a_final_usage_chunk(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=3) as provider:
        client = sdk.of(provider).openai
        options: dict[str, Any] = {"model": "gpt-4o", "messages": HELLO, "stream": True}
        chunks = list(
            client.chat.completions.create(**options, stream_options={"include_usage": True})
        )
        plain = list(client.chat.completions.create(**options))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "ok ok ok"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 3)
    assert all(chunk.usage is None for chunk in plain)
    assert len(plain) == len(chunks) - 1
    assert provider.tokens_charged == 2 * (7 + 3)


def test_anthropic_streams_send_the_real_event_sequence(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=2) as provider:
        client = sdk.of(provider).anthropic
        events = list(message(client, stream=True).parse())
        with client.messages.stream(model="claude-x", max_tokens=9, messages=HELLO) as stream:
            final = stream.get_final_message()
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.input_tokens == 7
    assert events[5].usage.output_tokens == 2
    assert events[5].delta.stop_reason == "end_turn"
    assert [b.text for b in final.content if isinstance(b, anthropic.types.TextBlock)] == ["ok ok"]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 2)


def test_async_streams_parse_in_both_sdks() -> None:
    async def read(provider: FakeProvider) -> tuple[str, str]:
        oa, an = async_clients(provider)
        async with oa, an:
            stream = await oa.chat.completions.create(model="m", messages=HELLO, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            events = await an.messages.create(model="c", max_tokens=5, messages=HELLO, stream=True)
            deltas = [
                e.delta.text
                async for e in events
                if e.type == "content_block_delta" and e.delta.type == "text_delta"
            ]
            return text, "".join(deltas)

    with FakeProvider(completion_tokens=2) as provider:
        assert asyncio.run(read(provider)) == ("ok ok", "ok ok")


class GatedClock(FakeClock):
    """A FakeClock whose every sleep first waits for the test to open the gate once: what the
    server writes before a sleep is all a client can have read."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Semaphore(0)

    def sleep(self, seconds: float) -> None:
        if not self.gate.acquire(timeout=10):
            raise TimeoutError("the test never opened the gate")
        super().sleep(seconds)


def test_a_paced_stream_is_written_a_token_at_a_time_on_the_clock(sdk: Clients) -> None:
    clock = GatedClock()
    with FakeProvider(completion_tokens=3, stream_pace=20, clock=clock) as provider:
        stream = sdk.of(provider).openai.chat.completions.create(
            model="m", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        first = next(stream)  # sent before the first pause
        assert first.choices[0].delta.role == "assistant"
        clock.gate.release()
        assert next(stream).choices[0].delta.content == "ok"
        assert clock.sleeps == [pytest.approx(0.05)]
        clock.gate.release(2)
        rest = list(stream)
    assert [chunk.choices[0].delta.content for chunk in rest[:2]] == [" ok", " ok"]
    assert rest[-2].choices[0].finish_reason == "stop"
    assert rest[-1].usage.completion_tokens == 3
    assert clock.sleeps == pytest.approx([0.05] * 3)
    assert clock.monotonic() == pytest.approx(0.15)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_paced_stream_reads_as_the_whole_one_does(sdk: Clients, api: str) -> None:
    def read(pace: float | None) -> tuple[list[Any], list[float]]:
        clock = FakeClock()
        with FakeProvider(completion_tokens=4, stream_pace=pace, clock=clock) as provider:
            client = sdk.of(provider)
            stream: Any = (
                client.openai.chat.completions.create(
                    model="m",
                    messages=HELLO,
                    n=2,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                if api == "openai"
                else client.anthropic.messages.create(
                    model="c", max_tokens=9, messages=HELLO, stream=True
                )
            )
            return [event.model_dump() for event in stream], clock.sleeps

    whole, no_sleeps = read(None)
    paced, sleeps = read(10)
    assert paced == whole
    assert no_sleeps == []
    tokens = 2 * 4 if api == "openai" else 4
    assert sleeps == pytest.approx([0.1] * tokens)


def test_stop_cuts_a_paced_stream_short(sdk: Clients) -> None:
    provider = FakeProvider(completion_tokens=1000, stream_pace=5).start()  # 200 s at 5/s
    stream = sdk.of(provider).openai.chat.completions.create(
        model="m", messages=HELLO, stream=True
    )
    next(stream)
    started = time.monotonic()
    provider.stop()
    assert time.monotonic() - started < 5  # one 0.2 s pause at most, with room to spare
    with pytest.raises(openai.APIConnectionError):  # the body ended before its length
        list(stream)


def test_openai_stream_error_fails_after_the_first_chunk(sdk: Clients) -> None:
    with FakeProvider() as provider:
        client = sdk.of(provider).openai
        provider.stream_error()
        chat(client)  # not a stream: the script waits for one
        received: list[Any] = []
        with pytest.raises(openai.APIError) as broken:
            for chunk in client.chat.completions.create(model="m", messages=HELLO, stream=True):
                received.append(chunk)
        after = list(client.chat.completions.create(model="m", messages=HELLO, stream=True))
    assert len(received) == 1
    assert broken.value.body == {
        "message": broken.value.message,
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert after[-1].choices[0].finish_reason == "stop"
    assert provider.tokens_charged == 2 * (7 + 16)  # the broken stream is not counted


def test_anthropic_stream_error_is_an_overloaded_error_event_mid_stream(sdk: Clients) -> None:
    with FakeProvider() as provider:
        provider.stream_error()
        received = []
        with pytest.raises(anthropic.APIStatusError) as broken:
            for event in message(sdk.of(provider).anthropic, stream=True).parse():
                received.append(event.type)
    assert received == ["message_start"]
    assert broken.value.status_code == 200  # the stream had begun
    assert broken.value.type == "overloaded_error"
    assert provider.statuses == {200: 1}


def test_a_broken_stream_is_charged_its_prompt_only(sdk: Clients, clock: FakeClock) -> None:
    with FakeProvider(tokens=100, clock=clock) as provider:
        client = sdk.of(provider).openai
        provider.stream_error()
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="m", messages=HELLO, stream=True))
        assert chat(client, model="m").headers["x-ratelimit-remaining-tokens"] == str(100 - 7 - 23)


def openai_stream(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )


def drain(stream: Any) -> tuple[list[Any], Exception | None]:
    """The items a stream yields, and the error that ended it early (None if it did not)."""
    items: list[Any] = []
    try:
        for item in stream:
            items.append(item)
    except Exception as error:
        return items, error
    return items, None


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize(("pace", "sleeps"), [(None, [1.5]), (20, [1.5, 0.05, 0.05])])
def test_first_token_delay_is_the_time_to_the_first_token(
    sdk: Clients, api: str, pace: float | None, sleeps: list[float]
) -> None:
    clock = FakeClock()
    with FakeProvider(
        completion_tokens=3, stream_pace=pace, first_token_delay=1.5, clock=clock
    ) as provider:
        client = sdk.of(provider)
        if api == "openai":
            text = "".join(
                c.choices[0].delta.content or "" for c in openai_stream(client.openai) if c.choices
            )
        else:
            events = message(client.anthropic, stream=True).parse()
            text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "ok ok ok"
    assert clock.sleeps == pytest.approx(sleeps)


def test_the_first_token_waits_while_the_head_is_already_read(sdk: Clients) -> None:
    """The head (the role chunk) comes at once; the first token `first_token_delay` later; the
    stream's charge is settled once its last token is written, not before."""
    clock = GatedClock()
    with FakeProvider(
        tokens=600, completion_tokens=2, stream_pace=10, first_token_delay=1, clock=clock
    ) as provider:
        client = sdk.of(provider).openai
        stream = client.chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=50, stream=True
        )
        assert next(stream).choices[0].delta.role == "assistant"
        clock.gate.release()
        assert next(stream).choices[0].delta.content == "ok"
        assert clock.monotonic() == 1
        during = chat(client).headers["x-ratelimit-remaining-tokens"]  # 7 + 50 still held
        clock.gate.release()
        list(stream)
        assert clock.monotonic() == pytest.approx(1.1)
        after = chat(client).headers["x-ratelimit-remaining-tokens"]
    assert during == str(600 - 57 - 9 + 10)  # 10 refilled in the second
    assert int(after) == 600 - 57 - 9 + 10 - 9 + 1 + 48  # 1 refilled, 48 of 57 given back


def test_openai_stream_error_after_n_events(sdk: Clients, clock: FakeClock) -> None:
    with FakeProvider(tokens=100, completion_tokens=5, clock=clock) as provider:
        client = sdk.of(provider).openai
        provider.stream_error(after=3)
        received, broken = drain(openai_stream(client))
        remaining = chat(client).headers["x-ratelimit-remaining-tokens"]
    assert [c.choices[0].delta.content for c in received] == ["", "ok", " ok"]
    assert isinstance(broken, openai.APIError)
    assert remaining == str(100 - (7 + 2) - (7 + 5))  # charged the two tokens it sent
    assert provider.tokens_charged == 7 + 5  # only the answer that succeeded


def test_anthropic_stream_error_after_n_events(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=5) as provider:
        provider.stream_error(after=3)
        received, broken = drain(message(sdk.of(provider).anthropic, stream=True).parse())
    assert [event.type for event in received] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert isinstance(broken, anthropic.APIStatusError)
    assert broken.type == "overloaded_error"


def test_a_stream_error_after_every_event_comes_before_the_last(sdk: Clients) -> None:
    """`after` beyond the stream's length breaks it at its very end: the answer and its usage
    arrive, then the error instead of `data: [DONE]`."""
    with FakeProvider(completion_tokens=2) as provider:
        provider.stream_error(after=1000)
        received, broken = drain(openai_stream(sdk.of(provider).openai))
    assert received[-1].usage.completion_tokens == 2
    assert isinstance(broken, openai.APIError)


def test_a_paced_stream_breaks_when_its_next_event_was_due(sdk: Clients) -> None:
    clock = FakeClock()
    with FakeProvider(completion_tokens=5, stream_pace=10, clock=clock) as provider:
        provider.stream_error(after=2)  # the role chunk and one token
        received, broken = drain(openai_stream(sdk.of(provider).openai))
    assert len(received) == 2
    assert isinstance(broken, openai.APIError)
    assert clock.sleeps == pytest.approx([0.1, 0.1])  # the error came with the second token


# --- protocol, counters, lifecycle -----------------------------------------------------------


def test_unknown_paths_and_methods_are_404_json() -> None:
    with FakeProvider() as provider:
        missing = post(provider, "/v1/embeddings", b"{}")
        wrong_method = post(provider, OPENAI, b"", method="GET")
    assert missing[0] == wrong_method[0] == 404
    assert missing[1]["error"]["type"] == "not_found_error"
    assert provider.received == 2
    assert provider.statuses == {404: 2}
    assert provider.received_by_model() == {}


@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_bad_json_is_a_400_invalid_request(path: str, body: bytes) -> None:
    with FakeProvider() as provider:
        status, answer = post(provider, path, body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"


def test_missing_or_bad_fields_are_400_naming_them(sdk: Clients) -> None:
    with FakeProvider() as provider:
        oa, an = sdk.of(provider)
        no_model = post(provider, OPENAI, json.dumps({"messages": []}).encode())
        with pytest.raises(openai.BadRequestError) as zero:
            chat(oa, max_tokens=0)
        no_max_tokens = post(provider, ANTHROPIC, b'{"model": "c", "messages": []}')
        with pytest.raises(anthropic.BadRequestError):
            an.messages.create(model="c", max_tokens=1, messages="hi")  # type: ignore[arg-type]
    assert no_model[0] == 400
    assert no_model[1]["error"]["param"] == "model"
    assert zero.value.param == "max_tokens"
    assert no_max_tokens[0] == 400
    assert "max_tokens" in no_max_tokens[1]["error"]["message"]
    assert provider.received_by_model() == {"gpt-4o": 1, "c": 2}


def test_counters_count_and_reset(sdk: Clients) -> None:
    with FakeProvider(completion_tokens=1) as provider:
        client = sdk.of(provider).openai
        provider.fail(503)
        with pytest.raises(openai.InternalServerError):
            chat(client, model="a")
        chat(client, model="a")
        chat(client, model="b")
        post(provider, "/nowhere", b"")
        assert provider.received == 4
        assert provider.statuses == {503: 1, 200: 2, 404: 1}
        assert provider.tokens_charged == 2 * (7 + 1)
        assert provider.received_by_model() == {"a": 2, "b": 1}
        provider.reset_counts()
    assert (provider.received, provider.tokens_charged) == (0, 0)
    assert provider.statuses == {}
    assert provider.received_by_model() == {}


def test_counters_are_thread_safe() -> None:
    body = json.dumps({"model": "m", "messages": HELLO})

    def hammer(port: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(25):
            connection.request("POST", OPENAI, body)
            connection.getresponse().read()
        connection.close()

    with FakeProvider() as provider:
        threads = [threading.Thread(target=hammer, args=(port_of(provider),)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert provider.received == 200
    assert provider.statuses == {200: 200}
    assert provider.tokens_charged == 200 * (7 + 16)


def test_one_connection_serves_many_requests() -> None:
    body = json.dumps({"model": "m", "messages": HELLO})
    with FakeProvider() as provider:
        connection = http.client.HTTPConnection("127.0.0.1", port_of(provider))
        for _ in range(3):
            connection.request("POST", OPENAI, body)
            answer = connection.getresponse()
            assert json.loads(answer.read())["object"] == "chat.completion"
            assert not answer.will_close
        connection.close()


def test_a_body_of_unknown_length_ends_the_connection() -> None:
    request = (
        f"POST {OPENAI} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2\r\n{}\r\n0\r\n\r\n"
    ).encode()
    with (
        FakeProvider() as provider,
        socket.create_connection(("127.0.0.1", port_of(provider))) as sock,
    ):
        sock.sendall(request)  # all at once: the server answers before reading a body it can't size
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        answer.read()
    assert answer.status == 400
    assert answer.will_close


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_stop_frees_the_port_closes_connections_and_joins_the_threads(sdk: Clients) -> None:
    provider = FakeProvider().start()
    port = port_of(provider)
    chat(sdk.of(provider).openai)  # leaves a kept-alive connection and its handler thread
    served = [t for t in threading.enumerate() if t.name == f"FakeProvider:{port}"]
    before = threading.active_count()
    assert not port_is_free(port)
    provider.stop()
    assert not served[0].is_alive()
    assert threading.active_count() == before - 2  # the server's and the connection's
    assert port_is_free(port)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    with pytest.raises(RuntimeError, match="start"):
        provider.url  # noqa: B018
    provider.stop()  # a second stop does nothing


def test_a_stopped_provider_can_start_again_and_not_twice(sdk: Clients) -> None:
    provider = FakeProvider()
    with provider:
        chat(sdk.of(provider).openai)
        with pytest.raises(RuntimeError, match="already running"):
            provider.start()
    with provider:
        chat(sdk.of(provider).openai)
    assert provider.received == 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_provider_listens_on_the_port_it_is_given(sdk: Clients) -> None:
    port = free_port()
    with FakeProvider(port=port) as provider:
        assert provider.url == f"http://127.0.0.1:{port}"
        chat(sdk.of(provider).openai)


def test_the_module_runs_a_provider_until_interrupted(sdk: Clients) -> None:
    """`python -m rate_limit_shield.testing.provider` prints its URL, serves the limits it is
    given, and Ctrl-C (SIGINT) stops it cleanly. A real process: generous bounds."""
    command = [sys.executable, "-m", "rate_limit_shield.testing.provider", "--port", "0"]
    command += ["--requests", "60", "--tokens", "100000"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url is not None, first
        client = sdk.openai.with_options(base_url=url.group() + "/v1")
        headers = chat(client).headers
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert headers["x-ratelimit-limit-tokens"] == "100000"
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0
    assert errors == ""  # no traceback


def test_main_refuses_bad_settings_without_serving(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--per-seconds", "7"], ["--requests", "0"], ["--port", "70000"]):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2
    errors = capsys.readouterr().err
    assert "per-seconds" in errors
    assert "requests: 0.0 must be a positive amount" in errors
    assert "port: 70000" in errors


def test_main_says_when_its_port_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)], prog="rate-limit-shield fake-provider") == 1
    assert capsys.readouterr().err.startswith(
        f"rate-limit-shield fake-provider: cannot listen on 127.0.0.1:{port}: "
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"requests": 0}, "requests"),
        ({"tokens": -5}, "tokens"),
        ({"input_tokens": float("nan")}, "input_tokens"),
        ({"per_seconds": 0}, "per_seconds"),
        ({"port": -1}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "8080"}, "port"),
        ({"models": "gpt-4o"}, "models"),  # a name, not a list of them
        ({"models": ["gpt-4o", ""]}, "models"),
        ({"models": [None]}, "models"),
        ({"per_seconds": 3600}, "per_seconds"),  # no provider states an hourly limit
        ({"per_seconds": 7}, "per_seconds"),  # a slice that does not divide a minute
        ({"per_seconds": 0.5}, "per_seconds"),
        ({"per_seconds": 120}, "per_seconds"),
        ({"completion_tokens": 0}, "completion_tokens"),
        ({"completion_tokens": (0, 5)}, "completion_tokens"),
        ({"completion_tokens": (5, 4)}, "completion_tokens"),
        ({"completion_tokens": (1, 2, 3)}, "completion_tokens"),
        ({"completion_tokens": (1.5, 3)}, "completion_tokens"),
        ({"completion_tokens": True}, "completion_tokens"),
        ({"stream_pace": 0}, "stream_pace"),
        ({"stream_pace": float("inf")}, "stream_pace"),
        ({"stream_pace": float("nan")}, "stream_pace"),
        ({"first_token_delay": -1}, "first_token_delay"),
        ({"first_token_delay": float("inf")}, "first_token_delay"),
        ({"first_token_delay": float("nan")}, "first_token_delay"),
    ],
)
def test_bad_settings_are_value_errors_naming_them(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        FakeProvider(**options)


def test_bad_scripts_are_value_errors_naming_them() -> None:
    provider = FakeProvider()
    with pytest.raises(ValueError, match="status"):
        provider.fail(429)
    with pytest.raises(ValueError, match="times"):
        provider.throttle(1, times=0)
    with pytest.raises(ValueError, match="path"):
        provider.context_length(path="/v1/completions")
    with pytest.raises(ValueError, match="seconds"):
        provider.slow(-1)
    with pytest.raises(ValueError, match="retry_after"):
        provider.throttle(float("nan"))
    with pytest.raises(ValueError, match="after"):
        provider.stream_error(after=0)
    with pytest.raises(ValueError, match="after"):
        provider.stream_error(after=1.5)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_provider_thread_left() -> Iterator[None]:
    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("FakeProvider:")]
    assert leftover == []


def test_a_paced_stream_is_settled_when_its_last_token_is_written(sdk: Clients) -> None:
    """7 prompt tokens and max_tokens 50 are charged at admission; the 3-token answer written at
    10 tokens a second settles the charge to 10 only 0.3 s later, when its last part is
    written, as the providers settle an answer once it is complete. (A bucket of 600 a minute:
    this test used 6,000 an hour, a window no provider has, which is refused now.)"""
    clock = GatedClock()
    # 600 a minute: the 0.3 s refill 3 tokens
    with FakeProvider(tokens=600, completion_tokens=3, stream_pace=10, clock=clock) as provider:
        client = sdk.of(provider).openai
        stream = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HELLO, max_tokens=50, stream=True
        )
        assert stream.headers["x-ratelimit-remaining-tokens"] == "543"
        during = chat(client).headers["x-ratelimit-remaining-tokens"]  # the stream waits
        clock.gate.release(3)
        chunks = list(stream.parse())
        assert clock.monotonic() == pytest.approx(0.3)  # written at its pace
        after = chat(client).headers["x-ratelimit-remaining-tokens"]
    assert during == "533"  # the stream still holds its admission charge
    assert after == "573"  # 533 + 3 refilled + 47 settled - 10
    assert chunks[-1].choices[0].finish_reason == "stop"
