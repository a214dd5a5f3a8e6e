"""`rls.shield_client` on the endpoints FakeProvider does not serve: OpenAI responses (and their
stream helper), completions and embeddings, Anthropic's token count, and Azure OpenAI's.

The real SDK clients, sync and async, send through their real HTTP client to a scripted
transport (`Endpoints`) that answers each endpoint as the API does, with its rate-limit headers;
the shield runs on a FakeClock (`rls.testing.isolated()`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import anthropic
import httpx2
import openai
import pytest

import rate_limit_shield as rls
from rate_limit_shield.events import THROTTLED, Event
from rate_limit_shield.testing import FakeClock

HELLO = [{"role": "user", "content": "hello world!"}]
INPUT_TOKENS, OUTPUT_TOKENS = 7, 16
ANSWER = "ok" + " ok" * (OUTPUT_TOKENS - 1)
EMBEDDING = [0.5, 0.25]
REMAINING = 4  # of 5 requests a minute, say the headers of every answer


def _response(model: str) -> dict[str, Any]:
    """An OpenAI Responses API answer."""
    text = {"type": "output_text", "text": ANSWER, "annotations": []}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed"}
    usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}
    return {"id": "resp_1", "object": "response", "created_at": 0, "model": model,
            "status": "completed", "output": [{**message, "content": [text]}],
            "usage": {**usage, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}  # fmt: skip


def _answer(path: str, body: dict[str, Any]) -> httpx2.Response:
    """What the API answers to a request for `path`."""
    model = body["model"]
    usage = {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS,
             "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}  # fmt: skip
    if path == "/v1/responses" and body.get("stream"):
        done = _response(model)
        started = {**done, "status": "in_progress", "output": [], "usage": None}
        events = [
            {"type": "response.created", "sequence_number": 0, "response": started},
            {"type": "response.completed", "sequence_number": 1, "response": done},
        ]
        sse = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, text=sse)
    if path == "/v1/responses":
        return httpx2.Response(200, json=_response(model))
    if path == "/v1/completions":
        choice = {"text": ANSWER, "index": 0, "finish_reason": "stop", "logprobs": None}
        return httpx2.Response(200, json={"id": "cmpl_1", "object": "text_completion",
                                          "created": 0, "model": model, "choices": [choice],
                                          "usage": usage})  # fmt: skip
    if path == "/v1/embeddings":
        data = [{"object": "embedding", "index": 0, "embedding": EMBEDDING}]
        return httpx2.Response(200, json={"object": "list", "data": data, "model": model,
                                          "usage": {"prompt_tokens": INPUT_TOKENS,
                                                    "total_tokens": INPUT_TOKENS}})  # fmt: skip
    if path.endswith("/chat/completions"):  # Azure's, by deployment
        message = {"role": "assistant", "content": ANSWER}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return httpx2.Response(200, json={"id": "chat_1", "object": "chat.completion",
                                          "created": 0, "model": model, "choices": [choice],
                                          "usage": usage})  # fmt: skip
    if path == "/v1/messages/count_tokens":
        return httpx2.Response(200, json={"input_tokens": INPUT_TOKENS})
    return httpx2.Response(404, json={"error": {"message": f"{path}: not found"}})


def _throttled(path: str, seconds: float) -> httpx2.Response:
    """A 429 with its Retry-After, in the API's error shape."""
    if path.endswith("count_tokens"):
        body: dict[str, Any] = {"type": "error", "error": {"type": "rate_limit_error",
                                                           "message": "Rate limited."}}  # fmt: skip
    else:
        body = {"error": {"message": "Rate limit reached.", "type": "requests",
                          "param": None, "code": "rate_limit_exceeded"}}  # fmt: skip
    return httpx2.Response(429, headers={"retry-after": f"{seconds:g}"}, json=body)


class Endpoints:
    """A transport answering each request as the API would, with the rate-limit headers of a
    provider allowing 5 requests a minute (4 remaining); `throttle` makes the next answer a 429."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._throttles: list[float] = []

    def throttle(self, seconds: float) -> None:
        self._throttles.append(seconds)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.received.append(path)
        if self._throttles:
            return _throttled(path, self._throttles.pop(0))
        response = _answer(path, json.loads(request.content))
        response.headers.update(
            {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": f"{REMAINING}",
             "anthropic-ratelimit-requests-limit": "5",
             "anthropic-ratelimit-requests-remaining": f"{REMAINING}"}
        )  # fmt: skip
        return response


@dataclass(frozen=True)
class Form:
    """A call to an endpoint: the SDK method, its request, how to read the answer (`read`, what
    it should read as: `expected`), and the usage the answer reports (None: a count, which uses
    no tokens)."""

    api: str
    path: str
    request: dict[str, Any]
    read: Callable[[Any], Any]
    expected: Any
    usage: tuple[int, int] | None = (INPUT_TOKENS, OUTPUT_TOKENS)
    helper: bool = False
    raw: bool = False

    def __str__(self) -> str:
        return self.path


def _output_text(reply: Any) -> Any:
    return reply.output_text


FORMS = [
    Form("openai", "responses.create",
         {"model": "gpt-a", "input": "hello world!", "max_output_tokens": 100},
         _output_text, ANSWER),
    Form("openai", "responses.with_raw_response.create",
         {"model": "gpt-a", "input": "hello world!", "max_output_tokens": 100},
         _output_text, ANSWER, raw=True),
    Form("openai", "responses.stream",
         {"model": "gpt-a", "input": "hello world!", "max_output_tokens": 100},
         _output_text, ANSWER, helper=True),
    Form("openai", "completions.create",
         {"model": "gpt-a", "prompt": "hello world!", "max_tokens": 100},
         lambda reply: reply.choices[0].text, ANSWER),
    Form("openai", "embeddings.create", {"model": "text-embedding-a", "input": "hello world!"},
         lambda reply: reply.data[0].embedding, EMBEDDING, usage=(INPUT_TOKENS, 0)),
    Form("anthropic", "messages.count_tokens", {"model": "claude-a", "messages": HELLO},
         lambda reply: reply.input_tokens, INPUT_TOKENS, usage=None),
    Form("anthropic", "messages.with_raw_response.count_tokens",
         {"model": "claude-a", "messages": HELLO},
         lambda reply: reply.input_tokens, INPUT_TOKENS, usage=None, raw=True),
]  # fmt: skip
TOKEN_POLICY = {"openai": {"tpm": 1000}, "anthropic": {"itpm": 1000, "otpm": 500}}


def client_of(api: str, is_async: bool, endpoints: Endpoints) -> Any:
    """A real client of `api` whose HTTP client sends to `endpoints` (retrying by itself, as
    SDK clients do by default)."""
    transport = httpx2.MockTransport(endpoints.handle)
    if api == "openai":
        kind: Any = openai.AsyncOpenAI if is_async else openai.OpenAI
        base_url = "http://provider.test/v1"
    else:
        kind = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
        base_url = "http://provider.test"
    http = (httpx2.AsyncClient if is_async else httpx2.Client)(transport=transport)
    return kind(base_url=base_url, api_key="test", http_client=http)


def call(client: Any, form: Form, is_async: bool) -> Any:
    """Make the call `form` names and read its answer."""
    method = attrgetter(form.path)(client)
    if is_async:
        return asyncio.run(_acall(method, form))
    if form.helper:
        with method(**form.request) as stream:
            return form.read(stream.get_final_response())
    reply = method(**form.request)
    return form.read(reply.parse() if form.raw else reply)


async def _acall(method: Any, form: Form) -> Any:
    if form.helper:
        async with method(**form.request) as stream:
            return form.read(await stream.get_final_response())
    reply = await method(**form.request)
    if form.raw:
        parsed = reply.parse()
        reply = await parsed if inspect.isawaitable(parsed) else parsed
    return form.read(reply)


@pytest.fixture(params=FORMS, ids=str)
def form(request: pytest.FixtureRequest) -> Form:
    chosen: Form = request.param
    return chosen


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def is_async(request: pytest.FixtureRequest) -> bool:
    chosen: bool = request.param
    return chosen


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with rls.testing.isolated() as clock:
        yield clock


def levels(model: str) -> dict[str, float]:
    return rls.default_registry().key(model).limiter.levels()


def test_a_429_is_retried_after_its_retry_after(
    form: Form, is_async: bool, clock: FakeClock
) -> None:
    events: list[Event] = []
    rls.configure({}, on_event=events.append)
    endpoints = Endpoints()
    client = rls.shield_client(client_of(form.api, is_async, endpoints))
    endpoints.throttle(2.0)

    assert call(client, form, is_async) == form.expected

    assert len(endpoints.received) == 2
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 2.0
    assert [event.delay for event in events if event.kind == THROTTLED] == [pytest.approx(2.0)]


def test_the_answer_settles_its_tokens_and_its_headers_hold_the_key(
    form: Form, is_async: bool, clock: FakeClock
) -> None:
    """Tokens settle at the usage the answer reports (a count uses none); the requests the
    provider says remain hold the key, which its policy lets make 60 a minute."""
    model = form.request["model"]
    rls.configure({model: {"rpm": 60, **TOKEN_POLICY[form.api]}})
    client = rls.shield_client(client_of(form.api, is_async, Endpoints()))

    call(client, form, is_async)

    used = form.usage or (0, 0)
    if form.api == "openai":
        tokens = {"1000/60s tokens": 1000 - sum(used)}
    else:
        tokens = {"1000/60s input_tokens": 1000 - used[0], "500/60s output_tokens": 500 - used[1]}
    assert clock.monotonic() == 0.0  # nothing refilled meanwhile
    assert levels(model) == pytest.approx({"60/60s requests": REMAINING, **tokens})


def test_an_azure_client_is_shielded_by_the_deployment_it_names(clock: FakeClock) -> None:
    rls.configure({"gpt-a": {"rpm": 60}})
    endpoints = Endpoints()
    azure = openai.AzureOpenAI(
        azure_endpoint="http://provider.test",
        api_key="test",
        api_version="2024-10-21",
        http_client=httpx2.Client(transport=httpx2.MockTransport(endpoints.handle)),
    )
    client = rls.shield_client(azure)
    endpoints.throttle(2.0)

    reply = client.chat.completions.create(model="gpt-a", messages=HELLO, max_tokens=100)

    assert isinstance(client, openai.AzureOpenAI)
    assert reply.choices[0].message.content == ANSWER
    assert endpoints.received == ["/openai/deployments/gpt-a/chat/completions"] * 2
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 2.0
    assert levels("gpt-a") == {"60/60s requests": REMAINING}
