"""Amazon Bedrock clients (boto3 `bedrock-runtime`) through the shield.

The four calls that run a model, `converse`, `converse_stream`, `invoke_model` and
`invoke_model_with_response_stream`, go through the shield of their `modelId`: the pipeline
`@shielded` builds, fallbacks included (a fallback is called with `modelId=` its name). A
streaming call answers a dict that holds an event stream: its first event is read inside the
attempt, so that a stream failing before it is retried like any failed call, and the stream is
handed back guarded, so that an error in the middle of it (botocore raises the stream's
exception events) reaches the breaker and the stream's end gives back what it holds. Usage
settles token reservations: `converse`'s `usage`, the `metadata` event of `converse_stream`,
`invoke_model`'s token count headers, and the invocation metrics Bedrock adds to the last chunk
of `invoke_model_with_response_stream`.

botocore retries each request itself (3 attempts in its default "standard" mode, 5 in
"legacy"), inside each of the shield's attempts, and sleeps out throttles where the shield cannot
see them. A client's retry configuration is fixed when the client is made, and making it anew
would take its credentials and event handlers, which boto3 keeps private: so a client that still
retries is used as it is and warned of, with the fix. botocore's `max_attempts` counts retries,
not attempts (`{"max_attempts": 1}` sends two requests): `total_max_attempts` is the clear one.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import wrapt

from .._diagnostics import _outside_us
from ..decorators import shielded
from ..limiter import Cost
from ..llm import usage_of
from ..registry import Registry

if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy

__all__ = ["SERVICE", "NO_RETRIES", "is_bedrock_runtime", "shield", "bedrock_usage"]

SERVICE = "bedrock-runtime"
NO_RETRIES = {"total_max_attempts": 1, "mode": "standard"}
"""botocore's `Config(retries=...)` for a client whose requests only the shield retries."""

_EVENTS = {
    "converse": None,
    "converse_stream": "stream",
    "invoke_model": None,
    "invoke_model_with_response_stream": "body",
}
"""The model calls, and where a streaming call's answer keeps its events."""
_ATTEMPTS_BY_MODE = {"legacy": 5, "standard": 3, "adaptive": 3}
"""botocore's attempts per request when the client's configuration sets none."""
_INPUT_HEADER = "x-amzn-bedrock-input-token-count"
_OUTPUT_HEADER = "x-amzn-bedrock-output-token-count"
_METRICS = "amazon-bedrock-invocationMetrics"
_METRICS_BYTES = _METRICS.encode()
_COUNT_DIGITS = 15
"""Digits a token count in a header may have: more is no count (and would lose precision)."""


def is_bedrock_runtime(client: object) -> bool:
    """Whether `client` is a botocore client of the Bedrock runtime service."""
    model = getattr(getattr(client, "meta", None), "service_model", None)
    return getattr(model, "service_name", None) == SERVICE


def shield(client: Any, registry: Registry) -> Any:
    """`client`, a boto3 `bedrock-runtime` client, with its model calls shielded by `modelId`.

    Everything else is the client's own. A client that retries its requests itself is warned of
    (see the module's docstring): make it with `Config(retries=NO_RETRIES)`.
    """
    if not is_bedrock_runtime(client):
        raise TypeError(
            f"shield_client: {client!r} is a botocore client, but not of {SERVICE!r}, the only "
            "AWS service whose calls it shields"
        )
    attempts = _attempts(client)
    if attempts > 1:
        warnings.warn(
            f"rate_limit_shield: this {SERVICE} client retries each request up to {attempts} "
            "times itself, inside each of the shield's attempts, sleeping out throttles the "
            "shield never sees; make it with botocore.config.Config(retries="
            '{"total_max_attempts": 1, "mode": "standard"}) so that only the shield retries',
            RuntimeWarning,
            stacklevel=_outside_us(),
        )
    return ShieldedBedrock(client, registry)


def _attempts(client: Any) -> int:
    """How many times botocore sends each request of `client`, retries included."""
    retries = getattr(client.meta.config, "retries", None) or {}
    total = retries.get("total_max_attempts")
    if isinstance(total, int):
        return total
    return _ATTEMPTS_BY_MODE.get(str(retries.get("mode")), _ATTEMPTS_BY_MODE["standard"])


class _ModelCall:
    """A model call of a shielded client: the shielded form of the client's own method."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, client: ShieldedBedrock | None, owner: type | None = None) -> Any:
        if client is None:
            return self
        return client._self_calls[self._name]


class ShieldedBedrock(_Proxy):
    """A `bedrock-runtime` client whose model calls go through their model's shield."""

    converse = _ModelCall()
    converse_stream = _ModelCall()
    invoke_model = _ModelCall()
    invoke_model_with_response_stream = _ModelCall()

    def __init__(self, client: Any, registry: Registry) -> None:
        super().__init__(client)
        self._self_calls = {
            name: _shield(getattr(client, name), events, registry)
            for name, events in _EVENTS.items()
        }


def _shield(
    method: Callable[..., Any], events: str | None, registry: Registry
) -> Callable[..., Any]:
    """`method` through the shield of each call's `modelId`; for a streaming call (whose answer
    keeps its events under `events`), with the stream guarded until it ends."""
    call = shielded(
        _by_model_id(method, events), model=_model_id, usage=bedrock_usage, registry=registry
    )

    @functools.wraps(method)
    def through_shield(*args: Any, **kwargs: Any) -> Any:
        if args or not isinstance(kwargs.get("modelId"), str):
            return method(*args, **kwargs)  # botocore says what is wrong, as it would unshielded
        answer = call(**kwargs)
        return answer if events is None else {**answer.response, events: answer}

    return through_shield


def _model_id(*args: Any, **kwargs: Any) -> str:
    model: str = kwargs["modelId"]
    return model


def _by_model_id(method: Callable[..., Any], events: str | None) -> Callable[..., Any]:
    """`method` as the shield calls it: a fallback names its model `model=`, which Bedrock takes
    as `modelId=`; a streaming call's answer is a `Stream` of its events."""

    def call(*, model: str | None = None, **kwargs: Any) -> Any:
        if model is not None:
            kwargs["modelId"] = model
        answer = method(**kwargs)
        return answer if events is None else Stream(answer, events)

    return call


class Stream:
    """The events of a Bedrock streaming call, and the rest of its answer (`response`).

    Named as the SDKs name their streams, which is how the shield knows a result is a stream
    (see `stream.kind_of`): it reads the first event inside the attempt and hands back the
    stream guarded. `response` keeps no reference to the stream, so that a stream dropped
    unread is freed, and its end reported, at once.
    """

    __slots__ = ("response", "_stream", "_events")

    def __init__(self, answer: Mapping[str, Any], events: str) -> None:
        self.response = {name: value for name, value in answer.items() if name != events}
        self._stream = answer[events]
        self._events: Iterator[Any] = iter(self._stream)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        return next(self._events)

    def close(self) -> None:
        """Close the HTTP response the events come from."""
        self._stream.close()


def bedrock_usage(result: object) -> Cost | None:
    """The real cost of a Bedrock answer or stream event, by unit, or None when it tells none.

    What `usage_of` reads (`converse`'s `usage`, `converse_stream`'s `metadata` event), then
    `invoke_model`'s `x-amzn-bedrock-input-token-count` / `-output-token-count` headers, then
    the `amazon-bedrock-invocationMetrics` of an `invoke_model_with_response_stream` chunk.
    """
    usage = usage_of(result)
    if usage is not None or type(result) is not dict:
        return usage
    chunk = result.get("chunk")
    if isinstance(chunk, dict):
        return _metrics_usage(chunk.get("bytes"))
    metadata = result.get("ResponseMetadata")
    headers = metadata.get("HTTPHeaders") if isinstance(metadata, dict) else None
    if isinstance(headers, Mapping):
        return _tokens(headers.get(_INPUT_HEADER), headers.get(_OUTPUT_HEADER))
    return None


def _metrics_usage(data: object) -> Cost | None:
    """The usage in a chunk's invocation metrics; only the last chunk has them, and only the
    chunks that mention them are parsed."""
    if not isinstance(data, bytes) or _METRICS_BYTES not in data:
        return None
    try:
        metrics = json.loads(data).get(_METRICS)
    except (ValueError, AttributeError, RecursionError):  # not JSON, nor a JSON object
        return None
    if not isinstance(metrics, dict):
        return None
    return _tokens(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"))


def _tokens(inputs: object, outputs: object) -> Cost | None:
    """A call's cost from its input and output token counts (ints, or header strings of
    digits); None when either is missing or malformed."""
    input_tokens, output_tokens = _count(inputs), _count(outputs)
    if input_tokens is None or output_tokens is None:
        return None
    return {"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens}


def _count(value: object) -> int | None:
    if isinstance(value, str) and len(value) <= _COUNT_DIGITS and value.isascii():
        value = int(value) if value.isdigit() else None
    if type(value) is int and 0 <= value < 10**_COUNT_DIGITS:
        return value
    return None
