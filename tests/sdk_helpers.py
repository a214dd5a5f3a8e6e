"""The real OpenAI and Anthropic SDKs, sync and async, behind one small interface for the tests.

A `Flavour` is one SDK in one mode (OpenAI or Anthropic, sync or async) and knows what differs
between them: the request's shape, the errors, the reply's text and usage. A `Caller` holds a
client of a flavour and calls it from sync test code, awaiting on its own event loop when the
client is async, so that one test body serves all four flavours. A `Session` is one test's
FakeClock (the shield's and the provider's), `FakeProvider` and caller pointed at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import openai

import rate_limit_shield as rls
from rate_limit_shield.testing import FakeClock, FakeProvider

__all__ = [
    "ANSWER",
    "COMPLETION_TOKENS",
    "FLAVOURS",
    "HELLO",
    "PROMPT_TOKENS",
    "Caller",
    "Flavour",
    "Session",
    "connect",
    "open_session",
]

HELLO: list[dict[str, str]] = [{"role": "user", "content": "hello world!"}]
MAX_TOKENS = 100
COMPLETION_TOKENS = 16  # the FakeProvider's default answer length, below MAX_TOKENS
ANSWER = "ok" + " ok" * (COMPLETION_TOKENS - 1)
PROMPT_TOKENS = FakeProvider.prompt_tokens(HELLO)  # what the provider charges for HELLO: 7
NOWHERE = "http://127.0.0.1:9"  # the discard port: a client's address before `pointed_at`
T = TypeVar("T")
THREAD_TIMEOUT = 30.0  # real seconds; a second caller takes a few milliseconds


@dataclass(frozen=True)
class Flavour:
    """One SDK (`api`: "openai" or "anthropic") with a sync or an async client."""

    api: str
    is_async: bool

    def __str__(self) -> str:
        return f"{self.api}-{'async' if self.is_async else 'sync'}"

    @property
    def sdk(self) -> Any:
        """The SDK module, for its error classes."""
        return openai if self.api == "openai" else anthropic

    @property
    def models(self) -> tuple[str, str]:
        """Two model names of this provider (a first choice and a fallback)."""
        return ("gpt-a", "gpt-b") if self.api == "openai" else ("claude-a", "claude-b")

    @property
    def outage(self) -> int:
        """The status of this provider's typical outage."""
        return 503 if self.api == "openai" else 529

    @property
    def quota_error(self) -> type[Exception]:
        """What the SDK raises when the money is gone: OpenAI's 429 `insufficient_quota`,
        Anthropic's 400 about the credit balance."""
        error: type[Exception] = (
            openai.RateLimitError if self.api == "openai" else anthropic.BadRequestError
        )
        return error

    @property
    def remaining_requests_header(self) -> str:
        """The header in which the provider says how many requests it has left."""
        if self.api == "openai":
            return "x-ratelimit-remaining-requests"
        return "anthropic-ratelimit-requests-remaining"

    @property
    def token_policy(self) -> dict[str, float]:
        """Token limits as this provider counts them: OpenAI TPM, Anthropic ITPM and OTPM."""
        return {"tpm": 1000} if self.api == "openai" else {"itpm": 1000, "otpm": 500}

    def levels_after(self, input_tokens: float, output_tokens: float) -> dict[str, float]:
        """The token limiter's levels of `token_policy` once this usage is charged, by label."""
        if self.api == "openai":
            return {"1000/60s tokens": 1000 - input_tokens - output_tokens}
        return {
            "1000/60s input_tokens": 1000 - input_tokens,
            "500/60s output_tokens": 500 - output_tokens,
        }

    def request(self, model: str, *, stream: bool = False, **options: Any) -> dict[str, Any]:
        """The keyword arguments of a create call: HELLO, `MAX_TOKENS`, and what is given.

        An OpenAI stream asks for its usage in a last chunk, as token accounting needs."""
        request: dict[str, Any] = {"model": model, "messages": HELLO, "max_tokens": MAX_TOKENS}
        if stream:
            request["stream"] = True
            if self.api == "openai":
                request["stream_options"] = {"include_usage": True}
        return request | options

    def text_of(self, reply: Any) -> str:
        """The text of a (parsed) reply."""
        if self.api == "openai":
            return str(reply.choices[0].message.content)
        return str(reply.content[0].text)

    def text_of_stream(self, items: list[Any]) -> str:
        """The text the items of a stream carry."""
        if self.api == "openai":
            return "".join(item.choices[0].delta.content or "" for item in items if item.choices)
        return "".join(item.delta.text for item in items if item.type == "content_block_delta")

    def usage_of_stream(self, items: list[Any]) -> tuple[int, int]:
        """(input, output) tokens as the stream's own items report them."""
        if self.api == "openai":
            usage = items[-1].usage
            return usage.prompt_tokens, usage.completion_tokens
        start = next(item for item in items if item.type == "message_start")
        delta = next(item for item in items if item.type == "message_delta")
        return start.message.usage.input_tokens, delta.usage.output_tokens

    def usage_of(self, reply: Any) -> tuple[int, int]:
        """(input, output) tokens as a (parsed) reply reports them."""
        if self.api == "openai":
            return reply.usage.prompt_tokens, reply.usage.completion_tokens
        return reply.usage.input_tokens, reply.usage.output_tokens

    def client(self) -> Any:
        """A new client of this flavour, which never retries by itself (`max_retries=0`),
        pointed nowhere yet: see `Caller.pointed_at`."""
        if self.api == "openai":
            kind: Any = openai.AsyncOpenAI if self.is_async else openai.OpenAI
        else:
            kind = anthropic.AsyncAnthropic if self.is_async else anthropic.Anthropic
        return kind(base_url=NOWHERE, api_key="test", max_retries=0)

    def base_url(self, provider: FakeProvider) -> str:
        """Where this SDK expects `provider`: OpenAI's paths start after "/v1"."""
        return provider.url + "/v1" if self.api == "openai" else provider.url


FLAVOURS = [Flavour(api, is_async) for api in ("openai", "anthropic") for is_async in (False, True)]


class Caller:
    """A client of one flavour, and the means to call it from a sync test: an async client's
    calls run to completion on the caller's own event loop (its connections belong to it)."""

    def __init__(self, flavour: Flavour, client: Any, loop: asyncio.AbstractEventLoop | None):
        self.flavour = flavour
        self.client = client
        self._loop = loop

    def pointed_at(self, provider: FakeProvider) -> Caller:
        """The same client (its connection pool, and its loop) pointed at `provider`; closing
        this caller's, the one `connect` made, closes both."""
        client = self.client.with_options(base_url=self.flavour.base_url(provider))
        return Caller(self.flavour, client, self._loop)

    def method(self, *, raw: bool = False) -> Callable[..., Any]:
        """The SDK's create method (`with_raw_response`: the response with its headers)."""
        if self.flavour.api == "openai":
            resource = self.client.chat.completions
        else:
            resource = self.client.messages
        create: Callable[..., Any] = (resource.with_raw_response if raw else resource).create
        return create

    def function(self, model: str, *, raw: bool = False) -> Callable[..., Any]:
        """A function of the caller's own, decorated with `@rls.shielded(model=model)`, that
        passes its keyword arguments to the SDK's create method."""
        create = self.method(raw=raw)
        if self.flavour.is_async:

            async def areply(**request: Any) -> Any:
                return await create(**request)

            return rls.shielded(model=model)(areply)

        def reply(**request: Any) -> Any:
            return create(**request)

        return rls.shielded(model=model)(reply)

    def shielded(self, style: str, model: str, *, raw: bool = False) -> Callable[..., Any]:
        """The create method under the shield: wrapped directly ("method", the model read from
        each call's `model=`) or called by a decorated function of the caller's ("function")."""
        if style == "method":
            return rls.shielded(self.method(raw=raw))
        return self.function(model, raw=raw)

    def call(self, fn: Callable[..., Any], request: dict[str, Any]) -> Any:
        """`fn(**request)`, awaited to its end when `fn` is async."""
        result = fn(**request)
        return self._run(result) if self.flavour.is_async else result

    def parse(self, raw: Any) -> Any:
        """The reply a raw response holds (an async SDK may parse it asynchronously)."""
        reply = raw.parse()
        return reply if not inspect.isawaitable(reply) else self._run(reply)

    def drain(self, stream: Any) -> tuple[list[Any], Exception | None]:
        """Every item of a stream, and the error that ended it early (None when it did not)."""
        items: list[Any] = []
        if self._loop is None:
            try:
                items.extend(stream)
            except Exception as error:
                return items, error
            return items, None

        async def collect() -> Exception | None:
            try:
                async for item in stream:
                    items.append(item)
            except Exception as error:
                return error
            return None

        return items, self._run(collect())

    def close(self) -> None:
        """Close the client, and the event loop of an async one."""
        if self._loop is None:
            self.client.close()
            return
        self._run(self.client.close())
        self._run(self._loop.shutdown_asyncgens())
        self._loop.close()

    def _run(self, awaitable: Awaitable[T]) -> T:
        """Await on the caller's own event loop, from the test's sync code."""
        assert self._loop is not None
        return self._loop.run_until_complete(awaitable)


@contextlib.contextmanager
def connect(flavour: Flavour) -> Iterator[Caller]:
    """A caller with a new client (and, for an async one, its event loop), closed at the end."""
    caller = Caller(
        flavour, flavour.client(), asyncio.new_event_loop() if flavour.is_async else None
    )
    try:
        yield caller
    finally:
        caller.close()


@dataclass
class Session:
    """One test's virtual clock (the shield's and the provider's), provider and caller."""

    flavour: Flavour
    clock: FakeClock
    provider: FakeProvider
    caller: Caller

    def key(self, model: str) -> rls.Key:
        """The model's live state in the default registry."""
        return rls.default_registry().key(model)

    def levels(self, model: str) -> dict[str, float]:
        """What the model's limiter holds now, by limit label ("1000/60s tokens": 977.0)."""
        return self.key(model).limiter.levels()

    def breaker(self, model: str) -> dict[str, object]:
        """The snapshot of the model's breaker: state, consecutive failures..."""
        breaker = self.key(model).breaker
        assert breaker is not None
        return breaker.snapshot()

    def call_from_another_thread(self, model: str) -> Any:
        """Call `model` as a second, independent caller: its own client (and event loop) and
        its own decorated create method, from a thread of its own; returns the reply."""
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                with connect(self.flavour) as own:
                    other = own.pointed_at(self.provider)
                    create = other.shielded("method", model)
                    outcome["reply"] = other.call(create, self.flavour.request(model))
            except BaseException as error:  # handed to the test's own thread
                outcome["error"] = error

        thread = threading.Thread(target=work, name="second caller")
        thread.start()
        thread.join(THREAD_TIMEOUT)
        assert not thread.is_alive(), "the second caller did not finish"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["reply"]


@contextlib.contextmanager
def open_session(caller: Caller) -> Iterator[Callable[..., Session]]:
    """Within `rls.testing.isolated()`: a function starting a `FakeProvider` on the shield's
    own FakeClock (with a requests bucket, if given) and pointing `caller` at it."""
    with contextlib.ExitStack() as stack:
        clock = stack.enter_context(rls.testing.isolated())

        def start(*, requests: float | None = None) -> Session:
            provider = stack.enter_context(FakeProvider(requests=requests, clock=clock))
            return Session(caller.flavour, clock, provider, caller.pointed_at(provider))

        yield start
