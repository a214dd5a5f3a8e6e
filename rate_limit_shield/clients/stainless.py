"""Shielded clients of the OpenAI and Anthropic SDKs, which share one generated core.

Every API call of such a client, whatever resource, helper or response form it takes (`create`,
`parse`, `count_tokens`, the stream helpers, `with_raw_response`, `with_streaming_response`),
ends in one call of the client's own `request(cast_to, options, ...)`, outside the SDK's retry
loop; a stream helper makes it when its `with` block is entered, a streaming response when its
context is. A shielded client is a copy of the caller's (sharing its connection pool) with the
SDK's retries off, whose `request` sends each call whose JSON body names a model through that
model's shield, as `@shielded` does, with the body as the call's keyword arguments: the model,
the token estimate and the fallbacks are read from it as from an SDK call's own. Its `copy` and
`with_options` make shielded copies.

Parsed results carry no headers, so the rate-limit headers of every HTTP response are read by an
event hook on the HTTP client, which teaches the key of the attempt in progress. That attempt is
known through a context variable: the caller's own client, which shares the HTTP client, is left
alone. A stream the shield holds ends when its HTTP response is closed, as OpenAI's stream
helpers close it.

A key with no limits configured knows nothing of its provider's until an answer tells it: its
calls made together before then would all go out at once, past the provider's burst. So, until
an HTTP response for the key has arrived, its first call goes alone and the others wait for it
(see `_FirstCall`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple

import wrapt

from .._bounded import remember
from .._diagnostics import unreadable
from ..bulkhead import Bulkhead
from ..decorators import shielded
from ..errors import BulkheadFull, ConfigError, RateLimited
from ..limiter import Cost
from ..llm import RateLimitInfo, usage_of
from ..registry import Key, Registry
from ..stream import GuardedAsyncStream, GuardedStream

if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy

__all__ = ["shield"]

_RAW_RESPONSE = "X-Stainless-Raw-Response"
"""The request header by which both SDKs ask for a raw response ("true" or "raw", by SDK) or a
streamed one ("stream")."""
_COUNTING = ("/count_tokens", "/input_tokens")
"""Where the APIs count a prompt's tokens: such a call costs one request and no tokens."""
_ONE_REQUEST: Cost = {"requests": 1}

_attempt: ContextVar[tuple[Registry, str] | None] = ContextVar(
    "rate_limit_shield_attempt", default=None
)
"""The registry and model of the attempt in progress, for the HTTP client's response hook."""


def shield(client: Any, registry: Registry) -> Any:
    """A shielded copy of an OpenAI or Anthropic client (see the module's docstring)."""
    return _shielded(type(client).copy(client, max_retries=0), registry)


class _Call(NamedTuple):
    """An API call the SDK asked its client to make, but for its JSON body, which the shield
    gets as the call's keyword arguments."""

    request: Callable[..., Any]  # the SDK's own `request` of the shielded copy
    cast_to: Any
    options: Any
    kwargs: dict[str, Any]
    registry: Registry


class _Pipelines(NamedTuple):
    """The shielded `send` of one registry: for most calls, for raw responses (whose usage is
    read from their body) and for token counts (which cost a request)."""

    plain: Callable[..., Any]
    raw: Callable[..., Any]
    counting: Callable[..., Any]

    def of(self, options: Any) -> Callable[..., Any] | None:
        """The pipeline for a call's request options; None when its body names no model."""
        body = options.json_data
        if not isinstance(body, dict):
            return None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return None
        if options.url.partition("?")[0].endswith(_COUNTING):
            return self.counting
        headers = options.headers
        if isinstance(headers, Mapping) and headers.get(_RAW_RESPONSE):
            return self.raw
        return self.plain


class _FirstCall:
    """Lets one call of a key that has not heard from its provider go at a time, the others
    waiting in FIFO order for its answer (or its failure: the next then goes alone); once an
    answer has arrived (`heard`), each waiter passes its turn straight on. Nothing is locked
    while a call is in flight: the lone call holds the one slot of a bulkhead."""

    __slots__ = ("_alone", "heard")

    def __init__(self, name: str) -> None:
        self.heard = False
        self._alone = Bulkhead(1, name=name)

    def enter(self, key: Key) -> bool:
        """Wait for this call's turn, at most the key's `max_wait` (and `timeout`); whether the
        call goes alone, and must `leave`."""
        try:
            self._alone.acquire(_first_call_wait(key))
        except BulkheadFull:
            raise _not_heard(key) from None
        return self._passed_on()

    async def aenter(self, key: Key) -> bool:
        try:
            await self._alone.aacquire(_first_call_wait(key))
        except BulkheadFull:
            raise _not_heard(key) from None
        return self._passed_on()

    def leave(self) -> None:
        self._alone.release()

    def _passed_on(self) -> bool:
        if self.heard:
            self._alone.release()
            return False
        return True


_FIRST_CALLS: dict[Key, _FirstCall | None] = {}
"""By key: the gate of each key that has not heard from its provider yet, None for one that has
or that has limits configured (no gate)."""


def _first_call_of(registry: Registry, model: str) -> _FirstCall | None:
    key = registry._key_for_call(model)
    try:
        return _FIRST_CALLS[key]
    except KeyError:
        gate = None if key.policy.rate_limits() else _FirstCall(key.name)
        remember(_FIRST_CALLS, key, gate)
        return gate


def _heard(key: Key) -> None:
    """An answer for `key` arrived: its calls need wait for no first one any more."""
    gate = _FIRST_CALLS.get(key)
    if gate is not None:
        gate.heard = True
        _FIRST_CALLS[key] = None


def _first_call_wait(key: Key) -> float:
    timeout = key.policy.timeout
    return key.policy.max_wait if timeout is None else min(key.policy.max_wait, timeout)


def _not_heard(key: Key) -> RateLimited:
    return RateLimited(
        f"{key.name}: waited {_first_call_wait(key):g}s for the first call to hear from the "
        "provider (a key with no limits configured sends one call until then)",
        key=key.name,
    )


_PIPELINES: dict[tuple[Registry, bool], _Pipelines] = {}
"""By registry, for sync and async clients: shared by every shielded client, so that clients
made per call (`with_options(timeout=...)`) build no pipeline of their own."""


def _shielded(client: Any, registry: Registry) -> Any:
    """Shield `client`, a copy of the caller's whose SDK retries are off (see the module's
    docstring)."""
    is_async = inspect.iscoroutinefunction(type(client).request)
    pipelines = _pipelines(registry, is_async)
    own = client.request
    if is_async:

        async def request(cast_to: Any, options: Any, /, **kwargs: Any) -> Any:
            send = pipelines.of(options)
            if send is None:
                return await own(cast_to, options, **kwargs)
            call = _Call(own, cast_to, options, kwargs, registry)
            body = options.json_data
            gate = _first_call_of(registry, body["model"])
            if gate is None:
                return _ending_with_its_response(await send(call, **body))
            alone = await gate.aenter(registry._key_for_call(body["model"]))
            try:
                return _ending_with_its_response(await send(call, **body))
            finally:
                if alone:
                    gate.leave()

    else:

        def request(cast_to: Any, options: Any, /, **kwargs: Any) -> Any:  # type: ignore[misc]
            send = pipelines.of(options)
            if send is None:
                return own(cast_to, options, **kwargs)
            call = _Call(own, cast_to, options, kwargs, registry)
            body = options.json_data
            gate = _first_call_of(registry, body["model"])
            if gate is None:
                return _ending_with_its_response(send(call, **body))
            alone = gate.enter(registry._key_for_call(body["model"]))
            try:
                return _ending_with_its_response(send(call, **body))
            finally:
                if alone:
                    gate.leave()

    def copied(**options: Any) -> Any:
        retries = options.get("max_retries")
        if isinstance(retries, int) and retries > 0:
            raise ConfigError(
                f"max_retries={retries!r}: a shielded client's requests are retried by the shield "
                "(the model policy's retry attempts); the SDK's own retries stay off, so that "
                "no request is retried twice"
            )
        return _shielded(type(client).copy(client, **{**options, "max_retries": 0}), registry)

    _hook_responses(client._client, is_async)
    vars(client).update(request=request, copy=copied, with_options=copied)
    return client


def _pipelines(registry: Registry, is_async: bool) -> _Pipelines:
    pipelines = _PIPELINES.get((registry, is_async))
    if pipelines is None:
        send = _asend if is_async else _send
        pipelines = _Pipelines(
            shielded(send, registry=registry),
            shielded(send, registry=registry, usage=_raw_usage),
            shielded(send, registry=registry, cost=_one_request),
        )
        remember(_PIPELINES, (registry, is_async), pipelines)
    return pipelines


def _send(call: _Call, /, **body: Any) -> Any:
    """One attempt of `call`, for the model `body` names."""
    attempt = _attempt.set((call.registry, body["model"]))
    try:
        return call.request(call.cast_to, _options(call, body), **call.kwargs)
    finally:
        _attempt.reset(attempt)


async def _asend(call: _Call, /, **body: Any) -> Any:
    """One attempt of `call` on an async client, for the model `body` names."""
    attempt = _attempt.set((call.registry, body["model"]))
    try:
        return await call.request(call.cast_to, _options(call, body), **call.kwargs)
    finally:
        _attempt.reset(attempt)


def _options(call: _Call, body: dict[str, Any]) -> Any:
    """The call's request options, with `body` when it names another model (a fallback)."""
    options = call.options
    if body["model"] == options.json_data.get("model"):
        return options
    options = copy.copy(options)
    options.json_data = body
    return options


def _one_request(*args: Any, **kwargs: Any) -> Cost:
    return _ONE_REQUEST


def _raw_usage(result: Any) -> Cost | None:
    """The usage a raw response's JSON body reports, once the SDK has read the body: a body
    streamed to the caller is never read here. Other results are read as usual."""
    response = getattr(result, "http_response", None)
    if response is None:
        return usage_of(result)
    if not response.is_closed:
        return None
    return usage_of(response.json())


def _ending_with_its_response(result: Any) -> Any:
    """`result`; a stream the shield holds, as one that ends when its HTTP response is closed."""
    if isinstance(result, (GuardedStream, GuardedAsyncStream)):
        return _Stream(result)
    return result


class _Stream(_Proxy):
    """A stream the shield holds, which ends when its HTTP response is closed: OpenAI's stream
    helpers close the response they took from it, not the stream, whose breaker permit and
    bulkhead slot would stay taken until it is garbage-collected."""

    @property
    def response(self) -> Any:
        return _Response(self.__wrapped__.response, self.__wrapped__)

    def __next__(self) -> Any:
        return next(self.__wrapped__)

    def __aiter__(self) -> Any:
        return self.__wrapped__.__aiter__()

    async def __anext__(self) -> Any:
        return await self.__wrapped__.__anext__()


class _Response(_Proxy):
    """The HTTP response of a `_Stream`, whose closing ends the stream."""

    def __init__(self, response: Any, stream: Any) -> None:
        super().__init__(response)
        self._self_stream = stream

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            if isinstance(self._self_stream, GuardedStream):  # an async one ends on `aclose`
                self._self_stream.close()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            await self._self_stream.aclose()


def _hook_responses(http_client: Any, is_async: bool) -> None:
    """Let every response `http_client` gets teach the key of the attempt in progress."""
    hook = _alearn if is_async else _learn
    hooks = http_client.event_hooks
    if hook not in hooks["response"]:
        http_client.event_hooks = {**hooks, "response": [*hooks["response"], hook]}


def _learn(response: Any) -> None:
    """Hold the key of the attempt in progress, if any, to the limits `response` reports; a
    response it cannot read teaches nothing."""
    attempt = _attempt.get()
    if attempt is None:
        return
    registry, model = attempt
    try:
        key = registry._key_for_call(model)
        try:
            key.guide.clamp(RateLimitInfo.from_headers(response.headers, now=key.clock.time()))
        finally:
            _heard(key)  # once what it tells is learned: calls that pass now are paced by it
    except Exception:
        unreadable(model, "rate-limit headers", response)


async def _alearn(response: Any) -> None:
    _learn(response)
