"""What both dialects share: the request and answer as the server sees them, and how numbers,
durations and times are written on the wire."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, NamedTuple

__all__ = [
    "CONTEXT_WINDOW",
    "GARBAGE",
    "OUTAGE_MESSAGES",
    "BadRequest",
    "Completion",
    "Headers",
    "Reply",
    "Request",
    "dumps",
    "go_duration",
    "messages_of",
    "model_of",
    "number",
    "positive_int",
    "prompt_tokens",
    "retry_after_headers",
    "rfc3339",
]

Headers = list[tuple[str, str]]

CONTEXT_WINDOW = 200_000
OUTAGE_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.",
    529: "Overloaded",
}
# What `malformed_headers` sends instead of each kind of header: every common way to get one
# wrong (a word, NaN, an overflow, a negative count, a date that is none).
GARBAGE = {
    "retry-after": "soon",
    "retry-after-ms": "NaN",
    "limit": "1e400",
    "remaining": "-1",
    "reset": "whenever",
}


class BadRequest(Exception):
    """A request the real API would refuse with a 400; `param` names the bad field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class Request(NamedTuple):
    """What the server reads from a request body, the same for both APIs."""

    model: str
    prompt_tokens: int
    max_tokens: int | None
    choices: int
    stream: bool
    include_usage: bool


class Reply(NamedTuple):
    """An answer: `body` at once, after a real `delay`, then each of `later` at its seconds
    after the body on the provider's clock (a stream's events, as they are generated)."""

    status: int
    headers: Headers
    body: bytes
    delay: float = 0.0
    content_type: str = "application/json"
    later: tuple[tuple[float, bytes], ...] = ()


class Completion(NamedTuple):
    """One successful answer, for the dialect to spell: `cut` when max_tokens cut it short."""

    request: Request
    ident: str
    created: int
    words: list[str]
    cut: bool


def number(value: float) -> str:
    """An amount as providers print it: a whole number without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def go_duration(seconds: float) -> str:
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


def rfc3339(wall: float) -> str:
    """A wall time as Anthropic's reset headers give it, in whole seconds rounded up."""
    return datetime.fromtimestamp(math.ceil(wall), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_after_headers(seconds: float) -> Headers:
    """Both hints the SDKs read: whole seconds rounded up, and milliseconds."""
    return [
        ("retry-after", str(math.ceil(round(seconds, 6)))),
        ("retry-after-ms", str(math.ceil(round(seconds * 1000, 3)))),
    ]


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


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


def positive_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{key}: {value!r} is not a positive integer", key)
    return value


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(f"model: {model!r} is not a model name", "model")
    return model


def messages_of(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest(f"messages: {messages!r} is not a list", "messages")
    return messages
