"""litellm: its stream wrapper is a stream (sync or async, as it was made), and the headers it
keeps in `_hidden_params["additional_headers"]` teach the key its provider's limits. Real
litellm calls, through the OpenAI SDK on a scripted transport."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import openai
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
litellm = pytest.importorskip("litellm")

from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper  # noqa: E402
from litellm.types.utils import ModelResponse  # noqa: E402

from rate_limit_shield import Registry, State  # noqa: E402
from rate_limit_shield.llm import RateLimitInfo, headers_of  # noqa: E402
from rate_limit_shield.stream import ASYNC, BOTH, PLAIN, SYNC, kind_of  # noqa: E402
from rate_limit_shield.testing import FakeClock  # noqa: E402

MESSAGES = [{"role": "user", "content": "hi"}]
LIMITS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "3",
    "x-ratelimit-reset-requests": "120ms",
}
COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def chunk(text: str) -> dict[str, Any]:
    delta = {"content": text}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


def sse(*events: dict[str, Any]) -> bytes:
    lines = "".join(f"data: {json.dumps(event)}\n\n" for event in events)
    return (lines + "data: [DONE]\n\n").encode()


FAILED_MIDWAY = sse(chunk("a"), chunk("b"), {"error": {"message": "boom", "type": "server_error"}})
STREAMED = sse(chunk("a"), chunk("b"))


def answer(request: httpx.Request, streamed: bytes = STREAMED) -> httpx.Response:
    if json.loads(request.content).get("stream"):
        headers = {"content-type": "text/event-stream", **LIMITS}
        return httpx.Response(200, content=streamed, headers=headers)
    return httpx.Response(200, json=COMPLETION, headers=LIMITS)


def client(streamed: bytes = STREAMED, *, is_async: bool = False) -> Any:
    transport = httpx.MockTransport(lambda request: answer(request, streamed))
    options: dict[str, Any] = {"api_key": "test", "base_url": "http://p.test/v1", "max_retries": 0}
    if is_async:
        return openai.AsyncOpenAI(http_client=httpx.AsyncClient(transport=transport), **options)
    return openai.OpenAI(http_client=httpx.Client(transport=transport), **options)


def completion(**kwargs: Any) -> Any:
    return litellm.completion(model="openai/gpt-4o", messages=MESSAGES, **kwargs)


def test_the_stream_wrapper_is_a_stream_either_way():
    assert kind_of(CustomStreamWrapper) == BOTH
    assert BOTH & SYNC and BOTH & ASYNC and not PLAIN & (SYNC | ASYNC)
    assert type(completion(client=client(), stream=True)) is CustomStreamWrapper


def test_headers_of_a_model_response_are_its_providers():
    response = completion(client=client())
    assert isinstance(response, ModelResponse)
    info = RateLimitInfo.from_headers(headers_of(response))
    assert info.requests is not None
    assert (info.requests.limit, info.requests.remaining) == (500.0, 3.0)
    # The reset litellm keeps only under its raw, prefixed name is read too.
    assert info.requests.reset == pytest.approx(0.12)


def test_headers_of_the_stream_wrapper_are_its_providers():
    stream = completion(client=client(), stream=True)
    info = RateLimitInfo.from_headers(headers_of(stream))
    assert info.requests is not None and info.requests.remaining == 3.0


def test_provider_headers_litellm_keeps_only_prefixed_are_read():
    response = ModelResponse()
    response._hidden_params["additional_headers"] = {
        "llm_provider-anthropic-ratelimit-input-tokens-remaining": "1200",
        "llm_provider-retry-after": "2",
    }
    info = RateLimitInfo.from_headers(headers_of(response))
    assert info.input_tokens is not None and info.input_tokens.remaining == 1200.0
    assert info.retry_after == 2.0


def test_a_model_response_without_headers_teaches_nothing():
    assert RateLimitInfo.from_headers(headers_of(ModelResponse())) == RateLimitInfo()


def key(policy: dict[str, Any]) -> Any:
    registry = Registry()
    registry.configure({"default": policy}, clock=FakeClock())
    return registry.key("gpt-4o")


def test_a_successful_completion_teaches_the_key_its_providers_remaining_quota():
    gpt = key({"rpm": 500, "retry": None})
    gpt.shield.call(completion, client=client())
    assert gpt.limiter.available == pytest.approx(3)


def test_a_stream_failing_midway_reaches_the_breaker():
    gpt = key({"retry": None, "breaker": {"failure_threshold": 1}})
    stream = gpt.shield.call(completion, client=client(FAILED_MIDWAY), stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert gpt.breaker.state is State.OPEN


def test_an_async_stream_failing_midway_reaches_the_breaker():
    gpt = key({"retry": None, "breaker": {"failure_threshold": 1}})

    async def run() -> None:
        async def acompletion(**kwargs: Any) -> Any:
            return await litellm.acompletion(model="openai/gpt-4o", messages=MESSAGES, **kwargs)

        stream = await gpt.shield.acall(
            acompletion, client=client(FAILED_MIDWAY, is_async=True), stream=True
        )
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass

    asyncio.run(run())
    assert gpt.breaker.state is State.OPEN
