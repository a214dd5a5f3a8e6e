"""Usage read from every answer: plain HTTP responses whose JSON body is in memory (httpx,
httpx2, requests, aiohttp), and Cohere's usage shapes (v1 and v2, JSON and SDK objects)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer

from rate_limit_shield.llm.tokens import usage_of

OPENAI = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}
ANTHROPIC = {
    "id": "msg_1",
    "type": "message",
    "content": [{"type": "text", "text": "Hi"}],
    "usage": {"input_tokens": 20, "cache_creation_input_tokens": 5, "output_tokens": 4},
}
GEMINI = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "thoughtsTokenCount": 6},
}
BODIES = {
    "openai": (OPENAI, {"requests": 1, "input_tokens": 12, "output_tokens": 3}),
    "anthropic": (ANTHROPIC, {"requests": 1, "input_tokens": 25, "output_tokens": 4}),
    "gemini": (GEMINI, {"requests": 1, "input_tokens": 8, "output_tokens": 8}),
}


def _answering(body: object) -> Callable[[Any], Any]:
    return lambda request: httpx.Response(200, json=body)


@pytest.mark.parametrize(("body", "expected"), BODIES.values(), ids=BODIES)
def test_the_usage_of_a_read_httpx_response_is_its_bodys(
    body: dict[str, Any], expected: dict[str, float]
) -> None:
    client = httpx.Client(transport=httpx.MockTransport(_answering(body)))
    assert usage_of(client.post("https://provider.test/v1/chat")) == expected


@pytest.mark.parametrize(("body", "expected"), BODIES.values(), ids=BODIES)
def test_the_usage_of_a_read_httpx2_response_is_its_bodys(
    body: dict[str, Any], expected: dict[str, float]
) -> None:
    respond = lambda request: httpx2.Response(200, json=body)  # noqa: E731
    client = httpx2.Client(transport=httpx2.MockTransport(respond))
    assert usage_of(client.post("https://provider.test/v1/chat")) == expected


def test_the_usage_of_a_read_requests_response_is_its_bodys() -> None:
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(OPENAI).encode()
    assert usage_of(response) == {"requests": 1, "input_tokens": 12, "output_tokens": 3}


def test_the_usage_of_an_aiohttp_response_is_its_bodys_once_it_is_read() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(ANTHROPIC)

    async def run() -> tuple[object, object]:
        app = web.Application()
        app.router.add_post("/v1/messages", answer)
        async with (
            TestServer(app) as server,
            aiohttp.ClientSession() as session,
            session.post(server.make_url("/v1/messages")) as response,
        ):
            unread = usage_of(response)
            await response.read()
            return unread, usage_of(response)

    unread, read = asyncio.run(run())
    assert unread is None  # never read here: the caller reads it
    assert read == {"requests": 1, "input_tokens": 25, "output_tokens": 4}


def test_a_streamed_body_is_never_read_for_its_usage() -> None:
    body = json.dumps(OPENAI).encode()
    respond = lambda request: httpx.Response(200, content=iter([body[:9], body[9:]]))  # noqa: E731
    client = httpx.Client(transport=httpx.MockTransport(respond))
    request = client.build_request("POST", "https://provider.test/v1/chat")
    response = client.send(request, stream=True)
    assert usage_of(response) is None
    assert json.loads(response.read()) == OPENAI  # still whole, for the caller


def test_a_long_body_is_read_whole() -> None:
    """An answer's body is no error body: its length is not capped."""
    long = {**OPENAI, "choices": [{"message": {"content": "x" * 200_000}}]}
    client = httpx.Client(transport=httpx.MockTransport(_answering(long)))
    assert usage_of(client.post("https://provider.test/v1/chat")) == {
        "requests": 1,
        "input_tokens": 12,
        "output_tokens": 3,
    }


@pytest.mark.parametrize(
    "content", [b"not json", b"[1, 2]", b'{"usage": "lots"}', b"", b'{"answer": 42}']
)
def test_a_body_without_usage_tells_none(content: bytes) -> None:
    respond = lambda request: httpx.Response(200, content=content)  # noqa: E731
    client = httpx.Client(transport=httpx.MockTransport(respond))
    assert usage_of(client.post("https://provider.test/v1/chat")) is None


# -- Cohere ---------------------------------------------------------------------------------------

V2 = {  # POST /v2/chat
    "id": "c-1",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
    "usage": {
        "billed_units": {"input_tokens": 5, "output_tokens": 7},
        "tokens": {"input_tokens": 70, "output_tokens": 7},
    },
}
V1 = {  # POST /v1/chat
    "response_id": "r-1",
    "text": "Hi",
    "generation_id": "g-1",
    "finish_reason": "COMPLETE",
    "meta": {
        "api_version": {"version": "1"},
        "billed_units": {"input_tokens": 6, "output_tokens": 8},
        "tokens": {"input_tokens": 71, "output_tokens": 8},
    },
}
BILLED_ONLY = {"meta": {"billed_units": {"input_tokens": 6, "output_tokens": 8}}}
EMBED = {"id": "e-1", "embeddings": [[0.1]], "meta": {"billed_units": {"input_tokens": 3}}}
V2_END = {  # the last event of a v2 stream
    "type": "message-end",
    "id": "c-1",
    "delta": {"finish_reason": "COMPLETE", "usage": V2["usage"]},
}
V1_END = {"event_type": "stream-end", "finish_reason": "COMPLETE", "response": V1}
COHERE = {
    "v2 chat: the tokens, not the billed units": (V2, {"input_tokens": 70, "output_tokens": 7}),
    "v1 chat: meta's tokens": (V1, {"input_tokens": 71, "output_tokens": 8}),
    "billed units when no tokens are told": (BILLED_ONLY, {"input_tokens": 6, "output_tokens": 8}),
    "an embedding's billed input": (EMBED, {"input_tokens": 3, "output_tokens": 0}),
    "v2 stream's message-end": (V2_END, {"input_tokens": 70, "output_tokens": 7}),
    "v1 stream's stream-end": (V1_END, {"input_tokens": 71, "output_tokens": 8}),
}


@pytest.mark.parametrize(("result", "counts"), COHERE.values(), ids=COHERE)
def test_cohere_usage(result: dict[str, Any], counts: dict[str, float]) -> None:
    assert usage_of(result) == {"requests": 1, **counts}


def test_cohere_sdk_objects() -> None:
    cohere = pytest.importorskip("cohere")
    from cohere.v2.types import MessageEndV2ChatStreamResponse, V2ChatResponse

    results = [
        V2ChatResponse.model_validate(V2),
        cohere.NonStreamedChatResponse.model_validate(V1),
        MessageEndV2ChatStreamResponse.model_validate(V2_END),
        cohere.StreamEndStreamedChatResponse.model_validate(V1_END),
    ]
    assert [usage_of(result) for result in results] == [
        {"requests": 1, "input_tokens": 70, "output_tokens": 7},
        {"requests": 1, "input_tokens": 71, "output_tokens": 8},
        {"requests": 1, "input_tokens": 70, "output_tokens": 7},
        {"requests": 1, "input_tokens": 71, "output_tokens": 8},
    ]


def test_cohere_stream_events_before_the_end_tell_none() -> None:
    events = [
        {"type": "message-start", "id": "c-1", "delta": {"message": {"role": "assistant"}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}},
        {"event_type": "text-generation", "text": "Hi"},
        {"meta": {"warnings": ["x"]}},
    ]
    assert [usage_of(event) for event in events] == [None] * 4
