"""A local fake OpenAI and Anthropic HTTP server, for tests and benchmarks with the real SDKs.

Mocks of an SDK method test the mock. The real `openai` and `anthropic` clients pointed at this
server go through their own HTTP, parsing and error mapping, so a test sees exactly the
exceptions, headers and usage a shielded call sees in production, at local speed.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import math
import random
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, NamedTuple

from ...clock import SYSTEM_CLOCK, Clock

__all__ = ["FakeProvider"]

_OPENAI_PATH = "/v1/chat/completions"
_ANTHROPIC_PATH = "/v1/messages"
_UNITS = ("requests", "tokens", "input_tokens", "output_tokens")
_OUTAGE_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.",
    529: "Overloaded",
}
_CREDIT_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_CONTEXT_WINDOW = 200_000
_JOIN_TIMEOUT = 5.0
_POLL_INTERVAL = 0.01  # how long `stop` may wait for the serving loop to notice
# What `malformed_headers` sends instead of each kind of header: every common way to get one
# wrong (a word, NaN, an overflow, a negative count, a date that is none).
_GARBAGE = {
    "retry-after": "soon",
    "retry-after-ms": "NaN",
    "limit": "1e400",
    "remaining": "-1",
    "reset": "whenever",
}

Headers = list[tuple[str, str]]


def _number(value: float) -> str:
    """An amount as providers print it: a whole number without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _go_duration(seconds: float) -> str:
    """Go's `time.Duration` text, which OpenAI's reset headers use: "20ms", "1.5s", "6m0s"."""
    millis = math.ceil(round(max(seconds, 0.0) * 1000, 6))
    if millis < 1000:
        return f"{millis}ms" if millis else "0s"
    minutes, millis = divmod(millis, 60_000)
    hours, minutes = divmod(minutes, 60)
    fraction = f".{millis % 1000:03d}".rstrip("0") if millis % 1000 else ""
    secs = f"{millis // 1000}{fraction}"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _rfc3339(wall: float) -> str:
    """A wall time as Anthropic's reset headers give it, in whole seconds rounded up."""
    return datetime.fromtimestamp(math.ceil(wall), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _remaining(bucket: _Bucket) -> str:
    """What a bucket has left, as a header says it: whole units, none while in debt."""
    return str(max(0, math.floor(bucket.level)))


def _retry_after_headers(seconds: float) -> Headers:
    """Both hints the SDKs read: whole seconds rounded up, and milliseconds."""
    return [
        ("retry-after", str(math.ceil(round(seconds, 6)))),
        ("retry-after-ms", str(math.ceil(round(seconds * 1000, 3)))),
    ]


def _text_of(content: object) -> str:
    """The text of a message's content: a string, or the `text` of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


class _Bucket:
    """A token bucket refilled continuously; the server's own limit for one unit of one model."""

    __slots__ = ("capacity", "rate", "level", "updated")

    def __init__(self, capacity: float, per_seconds: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate


def _settle(buckets: dict[str, _Bucket], change: dict[str, float]) -> None:
    """Give back (or, without max_tokens, charge) the difference between a request's admission
    charge and its real usage; a bucket may go into debt."""
    for unit, bucket in buckets.items():
        bucket.level = min(bucket.capacity, bucket.level + change[unit])


class _BadRequest(Exception):
    """A request the real API would refuse with a 400; `param` names the bad field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Request(NamedTuple):
    """What the server reads from a request body, the same for both APIs."""

    model: str
    prompt_tokens: int
    max_tokens: int | None
    choices: int
    stream: bool
    include_usage: bool


class _Reply(NamedTuple):
    """An answer; a paced stream sends `body` at once, then each of `paced` `interval` later."""

    status: int
    headers: Headers
    body: bytes
    delay: float = 0.0
    content_type: str = "application/json"
    paced: tuple[bytes, ...] = ()
    interval: float = 0.0


class _Completion(NamedTuple):
    """One successful answer, for the dialect to spell: `cut` when max_tokens cut it short."""

    request: _Request
    ident: str
    created: int
    words: list[str]
    cut: bool


class _Script:
    """A scripted change to the next `times` matching requests; `arg` is its status or seconds."""

    __slots__ = ("kind", "path", "model", "arg", "times")

    def __init__(
        self, kind: str, path: str | None, model: str | None, arg: float, times: int
    ) -> None:
        self.kind, self.path, self.model, self.arg, self.times = kind, path, model, arg, times


_ANSWERS = ("fail", "quota", "context", "throttle")


def _length_range(completion_tokens: object) -> tuple[int, int]:
    """`completion_tokens` as the (shortest, longest) answer: a fixed length is a range of one."""
    bounds = completion_tokens if isinstance(completion_tokens, tuple) else (completion_tokens,) * 2
    if (
        len(bounds) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        and 1 <= bounds[0] <= bounds[1]
    ):
        return bounds[0], bounds[1]
    raise ValueError(
        f"completion_tokens: {completion_tokens!r} must be a length of at least 1, "
        "or a (shortest, longest) pair of them"
    )


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _stream_parts(head: bytes, tokens: list[bytes], tail: bytes) -> list[bytes]:
    """A stream as it is generated: `head` at once, then one part per token, `tail` with the
    last one."""
    parts = [head, *tokens]
    parts[-1] += tail
    return parts


def _positive_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadRequest(f"{key}: {value!r} is not a positive integer", key)
    return value


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest(f"model: {model!r} is not a model name", "model")
    return model


def _messages_of(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest(f"messages: {messages!r} is not a list", "messages")
    return messages


class _OpenAI:
    """OpenAI's dialect: request fields, error bodies, `x-ratelimit-*` headers, SSE chunks."""

    path = _OPENAI_PATH
    request_id_header = "x-request-id"

    def read(self, body: dict[str, Any]) -> _Request:
        model = _model_of(body)
        messages = _messages_of(body)
        max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(
            body, "max_tokens"
        )
        options = body.get("stream_options")
        return _Request(
            model=model,
            prompt_tokens=FakeProvider.prompt_tokens(messages),
            max_tokens=max_tokens,
            choices=_positive_int(body, "n") or 1,
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    def error(
        self, kind: str, message: str, *, param: str | None = None, code: str | None = None
    ) -> bytes:
        return _dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})

    def bad_request(self, message: str, param: str | None) -> bytes:
        return self.error("invalid_request_error", message, param=param)

    def outage(self, status: int) -> bytes:
        return self.error("server_error", _OUTAGE_MESSAGES.get(status, "Server error."))

    def quota_gone(self) -> tuple[int, bytes]:
        return 429, self.error("insufficient_quota", _QUOTA_MESSAGE, code="insufficient_quota")

    def context_too_long(self, tokens: int) -> bytes:
        message = (
            f"This model's maximum context length is {_CONTEXT_WINDOW} tokens. However, your "
            f"messages resulted in {tokens} tokens. Please reduce the length of the messages."
        )
        return self.error(
            "invalid_request_error", message, param="messages", code="context_length_exceeded"
        )

    def throttled(self, unit: str, message: str) -> bytes:
        kind = "requests" if unit == "requests" else "tokens"
        return self.error(kind, message, code="rate_limit_exceeded")

    def limit_headers(self, buckets: dict[str, _Bucket], wall: float) -> Headers:
        headers: Headers = []
        for unit in ("requests", "tokens"):
            bucket = buckets.get(unit)
            if bucket is not None:
                headers += [
                    (f"x-ratelimit-limit-{unit}", _number(bucket.capacity)),
                    (f"x-ratelimit-remaining-{unit}", _remaining(bucket)),
                    (f"x-ratelimit-reset-{unit}", _go_duration(bucket.until_full())),
                ]
        return headers

    def garbage_headers(self) -> Headers:
        return [
            (f"x-ratelimit-{field}-{unit}", _GARBAGE[field])
            for unit in ("requests", "tokens")
            for field in ("limit", "remaining", "reset")
        ]

    def _usage(self, answer: _Completion) -> dict[str, int]:
        prompt = answer.request.prompt_tokens
        completion = len(answer.words) * answer.request.choices
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def completion(self, answer: _Completion) -> bytes:
        message = {"role": "assistant", "content": "".join(answer.words)}
        finish = "length" if answer.cut else "stop"
        return _dumps(
            {
                "id": f"chatcmpl-{answer.ident}",
                "object": "chat.completion",
                "created": answer.created,
                "model": answer.request.model,
                "choices": [
                    {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                    for i in range(answer.request.choices)
                ],
                "usage": self._usage(answer),
            }
        )

    def stream(self, answer: _Completion, *, broken: bool) -> list[bytes]:
        request = answer.request
        head: dict[str, Any] = {
            "id": f"chatcmpl-{answer.ident}",
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": request.model,
        }
        if request.include_usage:
            head["usage"] = None  # as OpenAI does on every chunk but the last

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + _dumps({**head, "choices": choices, **extra}) + b"\n\n"

        def delta(index: int, content: dict[str, str], finish: str | None = None) -> bytes:
            return chunk([{"index": index, "delta": content, "finish_reason": finish}])

        roles = [delta(i, {"role": "assistant", "content": ""}) for i in range(request.choices)]
        if broken:
            return [roles[0] + b"data: " + self.outage(500) + b"\n\n"]
        tokens: list[bytes] = []
        for index in range(request.choices):
            words = [delta(index, {"content": word}) for word in answer.words]
            words[-1] += delta(index, {}, "length" if answer.cut else "stop")
            tokens += words
        usage = chunk([], usage=self._usage(answer)) if request.include_usage else b""
        return _stream_parts(b"".join(roles), tokens, usage + b"data: [DONE]\n\n")


class _Anthropic:
    """Anthropic's dialect: request fields, error bodies, `anthropic-ratelimit-*`, SSE events."""

    path = _ANTHROPIC_PATH
    request_id_header = "request-id"

    def read(self, body: dict[str, Any]) -> _Request:
        model = _model_of(body)
        messages = _messages_of(body)
        max_tokens = _positive_int(body, "max_tokens")
        if max_tokens is None:
            raise _BadRequest("max_tokens: Field required", "max_tokens")
        return _Request(
            model=model,
            prompt_tokens=FakeProvider.prompt_tokens(messages, system=body.get("system")),
            max_tokens=max_tokens,
            choices=1,
            stream=body.get("stream") is True,
            include_usage=True,
        )

    def error(self, kind: str, message: str) -> bytes:
        return _dumps({"type": "error", "error": {"type": kind, "message": message}})

    def bad_request(self, message: str, param: str | None) -> bytes:
        return self.error("invalid_request_error", message)

    def outage(self, status: int) -> bytes:
        kind = {529: "overloaded_error", 504: "timeout_error"}.get(status, "api_error")
        return self.error(kind, _OUTAGE_MESSAGES.get(status, "Internal server error"))

    def quota_gone(self) -> tuple[int, bytes]:
        return 400, self.error("invalid_request_error", _CREDIT_MESSAGE)

    def context_too_long(self, tokens: int) -> bytes:
        message = f"prompt is too long: {tokens} tokens > {_CONTEXT_WINDOW} maximum"
        return self.error("invalid_request_error", message)

    def throttled(self, unit: str, message: str) -> bytes:
        return self.error("rate_limit_error", message)

    def limit_headers(self, buckets: dict[str, _Bucket], wall: float) -> Headers:
        headers: Headers = []
        for unit in _UNITS:
            bucket = buckets.get(unit)
            if bucket is not None:
                name = f"anthropic-ratelimit-{unit.replace('_', '-')}"
                headers += [
                    (f"{name}-limit", _number(bucket.capacity)),
                    (f"{name}-remaining", _remaining(bucket)),
                    (f"{name}-reset", _rfc3339(wall + bucket.until_full())),
                ]
        return headers

    def garbage_headers(self) -> Headers:
        return [
            (f"anthropic-ratelimit-{unit.replace('_', '-')}-{field}", _GARBAGE[field])
            for unit in _UNITS
            for field in ("limit", "remaining", "reset")
        ]

    def _message(self, answer: _Completion, *, done: bool) -> dict[str, Any]:
        return {
            "id": f"msg_{answer.ident}",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "".join(answer.words)}] if done else [],
            "model": answer.request.model,
            "stop_reason": self._stop_reason(answer) if done else None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": answer.request.prompt_tokens,
                "output_tokens": len(answer.words) if done else 1,
            },
        }

    @staticmethod
    def _stop_reason(answer: _Completion) -> str:
        return "max_tokens" if answer.cut else "end_turn"

    def completion(self, answer: _Completion) -> bytes:
        return _dumps(self._message(answer, done=True))

    def stream(self, answer: _Completion, *, broken: bool) -> list[bytes]:
        def event(kind: str, **data: Any) -> bytes:
            return f"event: {kind}\ndata: ".encode() + _dumps({"type": kind, **data}) + b"\n\n"

        start = event("message_start", message=self._message(answer, done=False))
        if broken:
            error = {"type": "overloaded_error", "message": _OUTAGE_MESSAGES[529]}
            return [start + event("error", error=error)]
        block = {"type": "text", "text": ""}
        end = event(
            "message_delta",
            delta={"stop_reason": self._stop_reason(answer), "stop_sequence": None},
            usage={"output_tokens": len(answer.words)},
        )
        return _stream_parts(
            start + event("content_block_start", index=0, content_block=block),
            [
                event("content_block_delta", index=0, delta={"type": "text_delta", "text": w})
                for w in answer.words
            ],
            event("content_block_stop", index=0) + end + event("message_stop"),
        )


_Dialect = _OpenAI | _Anthropic
_DIALECTS: dict[str, _Dialect] = {_OPENAI_PATH: _OpenAI(), _ANTHROPIC_PATH: _Anthropic()}


class FakeProvider:
    """A local HTTP server speaking OpenAI's `/v1/chat/completions` and Anthropic's `/v1/messages`.

    ```python
    with FakeProvider(requests=20, tokens=10_000, per_seconds=1) as provider:  # 20 req/s
        gpt = openai.OpenAI(base_url=provider.url + "/v1", api_key="k", max_retries=0)
        claude = anthropic.Anthropic(base_url=provider.url, api_key="k", max_retries=0)
        provider.fail(529, times=3, path=FakeProvider.ANTHROPIC_PATH)
    ```

    Limits: each amount given is a token bucket of that capacity per model, refilled
    continuously at amount/`per_seconds` on `clock.monotonic()` (pass a `FakeClock` and
    `advance()` it to refill at once). `requests` costs 1 per request; `tokens` (OpenAI's TPM)
    prompt + max_tokens; `input_tokens` / `output_tokens` (Anthropic's ITPM / OTPM) the prompt /
    max_tokens. All given buckets apply to both APIs; a request is admitted by all or refused
    by all, and its charge is then settled to the real usage (refunding unused max_tokens; a
    request without max_tokens, admitted on its prompt, then owes its whole answer, which may
    leave a bucket in debt that later requests wait out). As OpenAI and Anthropic document, the
    settle comes when the answer is complete: at once for a whole answer, and when its last
    token is written for a stream paced by `stream_pace` (until then the stream's charge is its
    admission charge, and the headers say so).
    A refused request is a 429 with the API's body, `retry-after` (whole seconds rounded up)
    and `retry-after-ms`; a request bigger than a bucket is a 429 without them. Every answer to
    a model carries the rate-limit headers of its buckets (OpenAI: `x-ratelimit-{limit,
    remaining,reset}-{requests,tokens}`, reset as a Go duration until full; Anthropic:
    `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
    reset as the RFC 3339 time of a full bucket) and a request id.

    Answers: prompt tokens follow `prompt_tokens()`; each choice has min(max_tokens, length)
    tokens, "ok" words (finish "length" / "max_tokens" when cut short), where the length is
    `completion_tokens`, or, for a (shortest, longest) pair, drawn uniformly from that range
    by `random.Random(seed)` for each request admitted, in order (refusals draw nothing).
    `stream=True` sends the API's real SSE sequence in one body with a Content-Length; with
    `stream_pace` (tokens per second), as a model generates it: the first event at once, then
    each token's event 1/stream_pace seconds after the last on `clock`, and the end with the
    last token; `stop` cuts a stream under way short.
    Anything but POST to the two paths is a 404, a body that is not a JSON object or lacks a
    field the API requires a 400.

    Scripting: each method changes the next `times` requests (to `path` and `model` only,
    when given), in the order scripted. `fail`, `insufficient_quota`, `context_length` and
    `throttle` answer instead of the buckets and charge nothing; `slow` delays, and
    `malformed_headers` garbles, whatever the answer is; `stream_error` breaks the next
    streamed successes after their first event (Anthropic: `event: error` overloaded_error;
    OpenAI: a `data: {"error": ...}` chunk); such a stream is charged its prompt only.

    Counters (thread-safe, updated before the answer is sent): `received`, `statuses`,
    `tokens_charged` (prompt + completion tokens of successful answers), `received_by_model()`,
    `reset_counts()`.
    """

    OPENAI_PATH = _OPENAI_PATH
    ANTHROPIC_PATH = _ANTHROPIC_PATH

    def __init__(
        self,
        *,
        requests: float | None = None,
        tokens: float | None = None,
        input_tokens: float | None = None,
        output_tokens: float | None = None,
        per_seconds: float = 60.0,
        completion_tokens: int | tuple[int, int] = 16,
        seed: int | None = None,
        stream_pace: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        amounts = {
            "requests": requests,
            "tokens": tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
        for name, amount in amounts.items():
            if amount is not None and not amount > 0:
                raise ValueError(f"{name}: {amount!r} must be a positive amount or None")
        if not per_seconds > 0:
            raise ValueError(f"per_seconds: {per_seconds!r} must be positive")
        if stream_pace is not None and not 0 < stream_pace < math.inf:
            raise ValueError(f"stream_pace: {stream_pace!r} must be a positive number or None")
        self._limits = {unit: float(a) for unit, a in amounts.items() if a is not None}
        self._per_seconds = float(per_seconds)
        self._lengths = _length_range(completion_tokens)
        self._random = random.Random(seed)
        self._stream_pace = stream_pace
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, _Bucket]] = {}
        # Settles of paced streams still being written: (when, order, model, change by unit).
        self._settles: list[tuple[float, int, str, dict[str, float]]] = []
        self._order = itertools.count()
        self._scripts: list[_Script] = []
        self._received = 0
        self._statuses: Counter[int] = Counter()
        self._by_model: Counter[str] = Counter()
        self._tokens_charged = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`; OpenAI's base_url is this + "/v1", Anthropic's this."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not running: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeProvider:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"FakeProvider is already running at {self.url}")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"FakeProvider:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, free the port, close every open connection and join the threads.

        Connections the clients keep alive are shut down here; a `slow` answer under way is
        sent at once. Calling it again, or before `start`, does nothing."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
        with self._lock:
            connections = list(self._connections.items())
        for connection, handler in connections:
            with contextlib.suppress(OSError):  # the client closed it first
                connection.shutdown(socket.SHUT_RDWR)
            handler.join(_JOIN_TIMEOUT)
        self._server = self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"FakeProvider({where}, limits={self._limits!r}, per_seconds={self._per_seconds!r})"

    # -- scripting -------------------------------------------------------------------------

    def fail(
        self,
        status: int = 503,
        *,
        times: int = 1,
        path: str | None = None,
        model: str | None = None,
    ) -> None:
        """Answer with an outage (500, 502, 503, 504, 529 or any 5xx) in each API's error body."""
        if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
            raise ValueError(f"status: {status!r} is not a 5xx status")
        self._script("fail", status, times, path, model)

    def insufficient_quota(
        self, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Answer that the money is gone: OpenAI's 429 `insufficient_quota` without
        retry-after, Anthropic's 400 credit-balance error."""
        self._script("quota", 0.0, times, path, model)

    def context_length(
        self, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Answer 400: OpenAI `context_length_exceeded`, Anthropic "prompt is too long"."""
        self._script("context", 0.0, times, path, model)

    def throttle(
        self,
        retry_after: float,
        *,
        times: int = 1,
        path: str | None = None,
        model: str | None = None,
    ) -> None:
        """Answer 429 with this Retry-After (and retry-after-ms), whatever the buckets hold."""
        if not retry_after >= 0:
            raise ValueError(f"retry_after: {retry_after!r} must be >= 0")
        self._script("throttle", retry_after, times, path, model)

    def slow(
        self, seconds: float, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Send the answer, whatever it is, after a real delay of `seconds`."""
        if not seconds >= 0:
            raise ValueError(f"seconds: {seconds!r} must be >= 0")
        self._script("slow", seconds, times, path, model)

    def malformed_headers(
        self, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Garble the retry and rate-limit headers of the answer, whatever it is: retry-after
        "soon", retry-after-ms "NaN", every limit "1e400", remaining "-1", reset "whenever"."""
        self._script("garble", 0.0, times, path, model)

    def stream_error(
        self, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Break the next streamed successful answers after their first event."""
        self._script("stream_error", 0.0, times, path, model)

    def _script(
        self, kind: str, arg: float, times: int, path: str | None, model: str | None
    ) -> None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times: {times!r} must be a positive integer")
        if path is not None and path not in _DIALECTS:
            raise ValueError(f"path: {path!r} is not one of {sorted(_DIALECTS)}")
        with self._lock:
            self._scripts.append(_Script(kind, path, model, float(arg), times))

    def _take(self, kinds: tuple[str, ...], path: str, model: str) -> _Script | None:
        """The first scripted change of these kinds matching the request, used once.
        Called under the lock."""
        for script in self._scripts:
            if (
                script.kind in kinds
                and script.path in (None, path)
                and script.model in (None, model)
            ):
                script.times -= 1
                if script.times == 0:
                    self._scripts.remove(script)
                return script
        return None

    # -- counters --------------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Requests received, on any path."""
        with self._lock:
            return self._received

    @property
    def statuses(self) -> Counter[int]:
        """Answers sent, by HTTP status (a copy)."""
        with self._lock:
            return Counter(self._statuses)

    @property
    def tokens_charged(self) -> int:
        """Prompt + completion tokens of the successful answers."""
        with self._lock:
            return self._tokens_charged

    def received_by_model(self) -> dict[str, int]:
        """Requests received per model (those whose JSON body named one)."""
        with self._lock:
            return dict(self._by_model)

    def reset_counts(self) -> None:
        """Zero the counters; buckets and scripts stay as they are."""
        with self._lock:
            self._received = self._tokens_charged = 0
            self._statuses.clear()
            self._by_model.clear()

    @staticmethod
    def prompt_tokens(messages: list[Any], system: object = None) -> int:
        """The fixed rule for prompt tokens: ceil(UTF-8 bytes of all the text / 4) + 4 per
        message, a `system` prompt (when not None) counting as one more message. The text of a
        content is the string itself or the `text` of its parts."""
        texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        count = len(messages)
        if system is not None:
            texts.append(_text_of(system))
            count += 1
        size = sum(len(text.encode()) for text in texts)
        return math.ceil(size / 4) + 4 * count

    # -- answering -------------------------------------------------------------------------

    def _answer(self, method: str, target: str, raw: bytes) -> _Reply:
        """The whole reply to one request; the counters count it before it is sent."""
        path = target.split("?", 1)[0]
        dialect = _DIALECTS.get(path) if method == "POST" else None
        with self._lock:
            self._received += 1
            ident = f"{self._received:012x}"
        if dialect is None:
            body = _DIALECTS[_ANTHROPIC_PATH].error(
                "not_found_error", f"{method} {path}: not found"
            )
            return self._sent(_Reply(404, [("request-id", f"req_{ident}")], body))
        request_id = (dialect.request_id_header, f"req_{ident}")
        try:
            request = self._read(dialect, raw)
        except _BadRequest as error:
            body = dialect.bad_request(error.message, error.param)
            return self._sent(_Reply(400, [request_id], body))
        with self._lock:
            reply = self._reply(dialect, request, ident)
            slow = self._take(("slow",), path, request.model)
            garble = self._take(("garble",), path, request.model)
            headers = [request_id, *reply.headers]
            if garble is not None:
                headers = self._garbled(dialect, headers)
            delay = slow.arg if slow is not None else 0.0
            self._statuses[reply.status] += 1
            return reply._replace(headers=headers, delay=delay)

    def _read(self, dialect: _Dialect, raw: bytes) -> _Request:
        """The request, counted under its model as soon as it names one."""
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise _BadRequest(
                f"We could not parse the JSON body of your request: {error}"
            ) from None
        if not isinstance(body, dict):
            raise _BadRequest("The request body is not a JSON object.")
        if isinstance(body.get("model"), str):
            with self._lock:
                self._by_model[body["model"]] += 1
        return dialect.read(body)

    def _sent(self, reply: _Reply) -> _Reply:
        with self._lock:
            self._statuses[reply.status] += 1
        return reply

    @staticmethod
    def _garbled(dialect: _Dialect, headers: Headers) -> Headers:
        kept = [
            (name, value)
            for name, value in headers
            if "ratelimit" not in name and not name.startswith("retry-after")
        ]
        retry = [(name, _GARBAGE[name]) for name in ("retry-after", "retry-after-ms")]
        return [*kept, *retry, *dialect.garbage_headers()]

    def _reply(self, dialect: _Dialect, request: _Request, ident: str) -> _Reply:
        """A scripted answer, a 429 from the buckets, or the completion. Called under the lock."""
        now, wall = self._clock.monotonic(), self._clock.time()
        buckets = self._buckets_of(request.model, now)
        scripted = self._take(_ANSWERS, dialect.path, request.model)
        if scripted is not None:
            return self._scripted(dialect, request, scripted, dialect.limit_headers(buckets, wall))
        charges = self._charges(request.prompt_tokens, (request.max_tokens or 0) * request.choices)
        refusal = self._refusal(dialect, request, buckets, charges)
        if refusal is not None:
            return refusal._replace(
                headers=[*refusal.headers, *dialect.limit_headers(buckets, wall)]
            )
        length = self._random.randint(*self._lengths)  # drawn once admitted
        per_choice = min(request.max_tokens or length, length)
        broken = (
            request.stream
            and self._take(("stream_error",), dialect.path, request.model) is not None
        )
        completion = 0 if broken else per_choice * request.choices
        settled = self._charges(request.prompt_tokens, completion)
        change = {unit: charges[unit] - settled[unit] for unit in buckets}
        if not broken:
            self._tokens_charged += request.prompt_tokens + completion
        answer = _Completion(
            request=request,
            ident=ident,
            created=int(wall),
            words=["ok" if i == 0 else " ok" for i in range(per_choice)],
            cut=per_choice < length,
        )
        parts = dialect.stream(answer, broken=broken) if request.stream else []
        if self._stream_pace is None or not parts:
            _settle(buckets, change)
        else:  # a paced stream is settled when its last part is written
            done = now + (len(parts) - 1) / self._stream_pace
            heapq.heappush(self._settles, (done, next(self._order), request.model, change))
        headers = dialect.limit_headers(buckets, wall)
        if not request.stream:
            return _Reply(200, headers, dialect.completion(answer))
        events = "text/event-stream; charset=utf-8"
        if self._stream_pace is None:
            return _Reply(200, headers, b"".join(parts), content_type=events)
        return _Reply(
            200,
            headers,
            parts[0],
            content_type=events,
            paced=tuple(parts[1:]),
            interval=1 / self._stream_pace,
        )

    def _buckets_of(self, model: str, now: float) -> dict[str, _Bucket]:
        """The model's buckets refilled to `now`, made full on the model's first request."""
        buckets = self._buckets.get(model)
        if buckets is None:
            buckets = self._buckets[model] = {
                unit: _Bucket(amount, self._per_seconds, now)
                for unit, amount in self._limits.items()
            }
        settles = self._settles
        while settles and settles[0][0] <= now:
            done, _, settled, change = heapq.heappop(settles)
            for bucket in self._buckets[settled].values():
                bucket.refill(done)
            _settle(self._buckets[settled], change)
        for bucket in buckets.values():
            bucket.refill(now)
        return buckets

    @staticmethod
    def _charges(prompt: int, completion: int) -> dict[str, float]:
        return {
            "requests": 1.0,
            "tokens": float(prompt + completion),
            "input_tokens": float(prompt),
            "output_tokens": float(completion),
        }

    def _refusal(
        self,
        dialect: _Dialect,
        request: _Request,
        buckets: dict[str, _Bucket],
        charges: dict[str, float],
    ) -> _Reply | None:
        """A 429 when a bucket lacks room; else None, with every bucket charged. A request
        larger than a bucket gets no retry hint: no wait can help it."""
        too_large = [unit for unit, bucket in buckets.items() if charges[unit] > bucket.capacity]
        waits = {unit: bucket.wait_for(charges[unit]) for unit, bucket in buckets.items()}
        unit = too_large[0] if too_large else max(waits, key=waits.__getitem__, default="")
        if not too_large and waits.get(unit, 0.0) <= 0:
            for name, bucket in buckets.items():
                bucket.level -= charges[name]
            return None
        bucket = buckets[unit]
        words = unit.replace("_", " ")
        limit = f"Limit {_number(bucket.capacity)} {words} per {_number(self._per_seconds)}s"
        requested = f"Requested {_number(charges[unit])}"
        if too_large:
            message = f"Request too large for {request.model} on {words}: {limit}, {requested}."
            return _Reply(429, [], dialect.throttled(unit, message))
        wait = waits[unit]
        message = (
            f"Rate limit reached for {request.model} on {words}: {limit}, {requested}. "
            f"Please try again in {_go_duration(wait)}."
        )
        return _Reply(429, _retry_after_headers(wait), dialect.throttled(unit, message))

    def _scripted(
        self, dialect: _Dialect, request: _Request, script: _Script, headers: Headers
    ) -> _Reply:
        if script.kind == "fail":
            return _Reply(int(script.arg), headers, dialect.outage(int(script.arg)))
        if script.kind == "quota":
            status, body = dialect.quota_gone()
            return _Reply(status, headers, body)
        if script.kind == "context":
            return _Reply(400, headers, dialect.context_too_long(_CONTEXT_WINDOW + 1))
        message = f"Rate limit reached for {request.model}. Please try again later."
        hints = _retry_after_headers(script.arg)
        return _Reply(429, [*hints, *headers], dialect.throttled("requests", message))

    def _write_paced(self, write: Callable[[bytes], object], reply: _Reply) -> None:
        """Write each paced part `interval` after the previous one on the provider's clock, by
        deadlines, so that late wake-ups do not add up. `stop` ends it by closing the connection:
        the next write fails."""
        started = self._clock.monotonic()
        for count, part in enumerate(reply.paced, 1):
            wait = started + count * reply.interval - self._clock.monotonic()
            if wait > 0:
                self._clock.sleep(wait)
            write(part)

    def _opened(self, connection: socket.socket, handler: threading.Thread) -> None:
        with self._lock:
            self._connections[connection] = handler

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(connection, None)


class _Server(ThreadingHTTPServer):
    """One thread per connection (the SDKs keep theirs alive), each known to the provider so
    that `stop` can close it; quiet about clients that hang up."""

    daemon_threads = True
    request_queue_size = 128  # fifty clients connecting at once must not wait on SYN retries

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up, which can take seconds; no need here.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        handler = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self.provider._opened(request, handler)
        handler.start()

    def shutdown_request(self, request: Any) -> None:
        self.provider._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that hung up is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    disable_nagle_algorithm = True  # headers and body are two writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per request on stderr would drown a test run."""

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = self.headers.get("Content-Length", "0")
        raw = self.rfile.read(int(length)) if length.isdigit() else b""
        provider = self.server.provider
        reply = provider._answer(self.command, self.path, raw)
        if reply.delay > 0:
            provider._stopping.wait(reply.delay)
        self.send_response(reply.status)
        if "Transfer-Encoding" in self.headers or not length.isdigit():
            self.send_header("Connection", "close")  # a body left unread ends the connection
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body) + sum(map(len, reply.paced))))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        provider._write_paced(self.wfile.write, reply)
