"""Usage read from every answer: plain HTTP responses whose JSON body is in memory (httpx,
httpx2, requests, aiohttp), Cohere's usage shapes (v1 and v2, JSON and SDK objects), and what a
stream that fails midway spent."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types.chat import ChatCompletionChunk

from rate_limit_shield import Shield
from rate_limit_shield.limiter import Limit, Limiter
from rate_limit_shield.llm.tokens import StreamTally, usage_of
from rate_limit_shield.stream import GuardedStream
from rate_limit_shield.testing import FakeClock

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


# -- a stream that fails midway -------------------------------------------------------------------

ESTIMATE = {"requests": 1, "input_tokens": 40, "output_tokens": 500}


def tally_of(items: Iterable[object]) -> StreamTally:
    """What a guard's track makes of `items`, as the shield folds a stream."""
    tally = StreamTally(usage_of)
    folded: object = None
    for item in items:
        folded = tally(folded, item)
    assert folded is tally
    return tally


def openai_chunk(delta: dict[str, Any], usage: dict[str, Any] | None = None) -> object:
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if delta else [],
            "usage": usage,
        }
    )


def anthropic_events() -> list[dict[str, Any]]:
    start = {
        "type": "message_start",
        "message": {
            **ANTHROPIC,
            "content": [],
            "usage": {"input_tokens": 30, "output_tokens": 1},
        },
    }
    text = {"type": "text_delta", "text": "Hello, wor"}  # 10 bytes
    tool = {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}  # 17 bytes
    return [
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": text},
        {"type": "content_block_delta", "index": 1, "delta": tool},
        {"type": "ping"},
    ]


def bedrock_chunk(event: dict[str, Any]) -> dict[str, Any]:
    """An `invoke_model_with_response_stream` event: the model's own event as JSON bytes."""
    return {"chunk": {"bytes": json.dumps(event).encode()}}


DELIVERED: dict[str, tuple[list[Any], dict[str, float]]] = {
    "openai chat chunks: the prompt estimated, the text seen": (
        [
            openai_chunk({"role": "assistant", "content": ""}),
            openai_chunk({"content": "Hello, "}),  # 7 bytes
            openai_chunk({"content": "wörld"}),  # 6 bytes
            openai_chunk(
                {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}  # 8 bytes
            ),
        ],
        {"input_tokens": 40, "output_tokens": math.ceil(21 / 4)},
    ),
    "anthropic: the input its start told, more output than its start's count": (
        anthropic_events(),
        {"input_tokens": 30, "output_tokens": math.ceil(27 / 4)},
    ),
    "openai responses: its text deltas": (
        [
            {"type": "response.created", "sequence_number": 0, "response": {"usage": None}},
            {"type": "response.output_text.delta", "delta": "Hi there", "item_id": "m"},
            {"type": "response.function_call_arguments.delta", "delta": "{}", "item_id": "f"},
            {"type": "response.audio.delta", "delta": "UklGRg" * 100},  # base64, not text
        ],
        {"input_tokens": 40, "output_tokens": math.ceil(10 / 4)},
    ),
    "bedrock converse_stream": (
        [
            {"messageStart": {"role": "assistant"}},
            {"contentBlockDelta": {"delta": {"text": "Hello"}, "contentBlockIndex": 0}},
            {"contentBlockDelta": {"delta": {"toolUse": {"input": '{"q"'}}}},
            {"contentBlockDelta": {"delta": {"reasoningContent": {"text": "hmm"}}}},
        ],
        {"input_tokens": 40, "output_tokens": math.ceil(12 / 4)},
    ),
    "bedrock invoke_model_with_response_stream: the model's events in its chunks": (
        [bedrock_chunk(event) for event in anthropic_events()],
        {"input_tokens": 40, "output_tokens": math.ceil(27 / 4)},
    ),
    "gemini: the text of its parts, over its running count": (
        [
            {
                "candidates": [{"content": {"parts": [{"text": "Hello there, "}]}}],
                "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 1},
            },
            {"candidates": [{"content": {"parts": [{"text": "friend"}, {"text": "!"}]}}]},
        ],
        {"input_tokens": 8, "output_tokens": math.ceil(20 / 4)},
    ),
    "cohere v2 and v1 text": (
        [
            {"type": "content-delta", "delta": {"message": {"content": {"text": "Hola"}}}},
            {"event_type": "text-generation", "text": "Hi"},
        ],
        {"input_tokens": 40, "output_tokens": math.ceil(6 / 4)},
    ),
    "nothing but framing: the prompt alone": (
        [{"type": "message_stop"}, openai_chunk({"role": "assistant"}), {"unknown": "x" * 99}],
        {"input_tokens": 40, "output_tokens": 0},
    ),
}


@pytest.mark.parametrize(("items", "spent"), DELIVERED.values(), ids=DELIVERED)
def test_a_stream_that_failed_midway_spent_its_prompt_and_what_it_delivered(
    items: list[object], spent: dict[str, float]
) -> None:
    assert tally_of(items).spent(ESTIMATE) == {"requests": 1, **spent}


def test_the_usage_a_stream_reports_is_merged_as_it_comes() -> None:
    """A later unit replaces an earlier one: Anthropic's message_delta counts output only."""
    items = [*anthropic_events(), {"type": "message_delta", "usage": {"output_tokens": 15}}]
    tally = tally_of(items)
    assert tally.usage == {"requests": 1, "input_tokens": 30, "output_tokens": 15}
    assert tally.spent(ESTIMATE) == {"requests": 1, "input_tokens": 30, "output_tokens": 15}
    assert tally_of([openai_chunk({"content": "Hi"})]).usage is None


def test_an_answer_longer_than_its_estimate_is_charged_whole() -> None:
    tally = tally_of([openai_chunk({"content": "x" * 4_000})])
    assert tally.spent(ESTIMATE) == {"requests": 1, "input_tokens": 40, "output_tokens": 1_000}


def test_an_estimate_that_does_not_tell_its_answer_apart_stays_whole() -> None:
    tally = tally_of([openai_chunk({"content": "Hi"})])
    assert tally.spent(3.0) == 3.0
    assert tally.spent({"requests": 1, "tokens": 900}) == {"requests": 1, "tokens": 900}
    assert tally.spent({"tokens": 900, "input_tokens": 40, "output_tokens": 500}) == {
        "tokens": 41,
        "input_tokens": 40,
        "output_tokens": 1,
    }


def test_a_usage_reader_that_gives_a_number_replaces_what_came_before() -> None:
    tally = StreamTally(lambda item: item if isinstance(item, float) else None)
    for item in (2.0, {"type": "x"}, 5.0):
        tally(tally, item)
    assert tally.usage == 5.0


def test_a_guarded_stream_that_fails_midway_settles_its_reservation_at_what_it_spent() -> None:
    """The tally as a stream guard's track, and the settle the stream's end makes with it."""
    limiter = Limiter(
        [Limit(10_000, 60, "input_tokens"), Limit(10_000, 60, "output_tokens")], clock=FakeClock()
    )
    reservation = limiter.reserve(ESTIMATE)

    def chunks() -> Iterator[object]:
        yield openai_chunk({"content": "Hello, wörld"})  # 13 bytes
        yield openai_chunk({"content": "!!!"})
        raise ConnectionResetError("the connection dropped")

    def on_end(error: BaseException | None, last: object) -> None:
        assert isinstance(error, ConnectionResetError) and isinstance(last, StreamTally)
        limiter.settle(reservation, last.spent(ESTIMATE))

    stream = chunks()
    guarded = GuardedStream(stream, next(stream), on_end, StreamTally(usage_of))
    with pytest.raises(ConnectionResetError):
        list(guarded)
    assert limiter.levels() == {
        "10000/60s input_tokens": 10_000 - 40,
        "10000/60s output_tokens": 10_000 - math.ceil(16 / 4),
    }


def _shielded_stream_levels(asynchronous: bool) -> dict[str, float]:
    """The levels of a token-limited key after a shielded stream failed midway."""
    clock = FakeClock()
    limiter = Limiter(
        [Limit(10_000, 60, "input_tokens"), Limit(10_000, 60, "output_tokens")], clock=clock
    )
    shield = Shield(limiter, cost=lambda *args, **kwargs: ESTIMATE, usage=usage_of, clock=clock)
    chunks = [openai_chunk({"content": "Hello, wörld"}), openai_chunk({"content": "!!!"})]
    dropped = ConnectionResetError("the connection dropped")

    def stream() -> Iterator[object]:
        yield from chunks
        raise dropped

    async def astream() -> AsyncIterator[object]:
        for chunk in chunks:
            yield chunk
        raise dropped

    async def start() -> AsyncIterator[object]:
        return astream()

    async def drain() -> list[object]:
        return [chunk async for chunk in await shield.acall(start)]

    with pytest.raises(ConnectionResetError):
        asyncio.run(drain()) if asynchronous else list(shield.call(stream))
    return limiter.levels()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_shielded_stream_that_fails_midway_settles_at_what_it_spent(asynchronous: bool) -> None:
    assert _shielded_stream_levels(asynchronous) == {
        "10000/60s input_tokens": 10_000 - 40,  # the prompt, as estimated
        "10000/60s output_tokens": 10_000 - math.ceil(16 / 4),  # the text it wrote
    }
