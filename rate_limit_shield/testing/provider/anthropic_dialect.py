"""Anthropic's dialect of the fake provider: `/v1/messages`, its request fields, error bodies,
`anthropic-ratelimit-*` headers and SSE events."""

from __future__ import annotations

from typing import Any

from .buckets import UNITS, Bucket
from .streams import Steps
from .wire import (
    CONTEXT_WINDOW,
    GARBAGE,
    OUTAGE_MESSAGES,
    BadRequest,
    Completion,
    Headers,
    Request,
    dumps,
    messages_of,
    model_of,
    number,
    positive_int,
    prompt_tokens,
    rfc3339,
)

__all__ = ["PATH", "Anthropic"]

PATH = "/v1/messages"
_CREDIT_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)


class Anthropic:
    """Anthropic's dialect: request fields, error bodies, `anthropic-ratelimit-*`, SSE events."""

    path = PATH
    request_id_header = "request-id"
    own_models = ("claude-*",)

    def read(self, body: dict[str, Any]) -> Request:
        model = model_of(body)
        messages = messages_of(body)
        max_tokens = positive_int(body, "max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required", "max_tokens")
        return Request(
            model=model,
            prompt_tokens=prompt_tokens(messages, system=body.get("system")),
            max_tokens=max_tokens,
            choices=1,
            stream=body.get("stream") is True,
            include_usage=True,
        )

    def error(self, kind: str, message: str) -> bytes:
        return dumps({"type": "error", "error": {"type": kind, "message": message}})

    def bad_request(self, message: str, param: str | None) -> bytes:
        return self.error("invalid_request_error", message)

    def model_not_found(self, model: str) -> bytes:
        return self.error("not_found_error", f"model: {model}")

    def outage(self, status: int) -> bytes:
        kind = {529: "overloaded_error", 504: "timeout_error"}.get(status, "api_error")
        return self.error(kind, OUTAGE_MESSAGES.get(status, "Internal server error"))

    def quota_gone(self) -> tuple[int, bytes]:
        return 400, self.error("invalid_request_error", _CREDIT_MESSAGE)

    def context_too_long(self, tokens: int) -> bytes:
        message = f"prompt is too long: {tokens} tokens > {CONTEXT_WINDOW} maximum"
        return self.error("invalid_request_error", message)

    def throttled(self, unit: str, message: str) -> bytes:
        return self.error("rate_limit_error", message)

    def over_limit(
        self, model: str, unit: str, bucket: Bucket, requested: float, wait: float
    ) -> bytes:
        """The 429 of a bucket without room, as Anthropic words it: the per-minute limit only."""
        amount = bucket.per_minute
        written = f"{amount:,.0f}" if amount.is_integer() else number(amount)
        message = (
            f"This request would exceed the rate limit for your organization of {written} "
            f"{unit.replace('_', ' ')} per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
            "current usage. Please reduce the prompt length or the maximum tokens requested, "
            "or try again later."
        )
        return self.throttled(unit, message)

    def too_large(self, model: str, unit: str, bucket: Bucket, requested: float) -> bytes:
        """A request larger than a bucket: Anthropic's words are those of any 429."""
        return self.over_limit(model, unit, bucket, requested, 0.0)

    def limit_headers(self, buckets: dict[str, Bucket], wall: float) -> Headers:
        headers: Headers = []
        for unit in UNITS:
            bucket = buckets.get(unit)
            if bucket is not None:
                name = f"anthropic-ratelimit-{unit.replace('_', '-')}"
                headers += [
                    (f"{name}-limit", number(bucket.per_minute)),
                    (f"{name}-remaining", str(bucket.remaining())),
                    (f"{name}-reset", rfc3339(wall + bucket.until_full())),
                ]
        return headers

    def garbage_headers(self) -> Headers:
        return [
            (f"anthropic-ratelimit-{unit.replace('_', '-')}-{field}", GARBAGE[field])
            for unit in UNITS
            for field in ("limit", "remaining", "reset")
        ]

    def _message(self, answer: Completion, *, done: bool) -> dict[str, Any]:
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
    def _stop_reason(answer: Completion) -> str:
        return "max_tokens" if answer.cut else "end_turn"

    def completion(self, answer: Completion) -> bytes:
        return dumps(self._message(answer, done=True))

    def stream(self, answer: Completion) -> Steps:
        """The events by step: message_start and content_block_start, then each token's
        delta, the block's stop, message_delta and message_stop with the last."""
        block = {"type": "text", "text": ""}
        steps = [
            [
                _event("message_start", message=self._message(answer, done=False)),
                _event("content_block_start", index=0, content_block=block),
            ],
            *(
                [_event("content_block_delta", index=0, delta={"type": "text_delta", "text": w})]
                for w in answer.words
            ),
        ]
        steps[-1] += [
            _event("content_block_stop", index=0),
            _event(
                "message_delta",
                delta={"stop_reason": self._stop_reason(answer), "stop_sequence": None},
                usage={"output_tokens": len(answer.words)},
            ),
            _event("message_stop"),
        ]
        return steps

    def stream_error(self) -> bytes:
        """What breaks a stream under way: an overloaded_error event."""
        return _event("error", error={"type": "overloaded_error", "message": OUTAGE_MESSAGES[529]})


def _event(kind: str, **data: Any) -> bytes:
    return f"event: {kind}\ndata: ".encode() + dumps({"type": kind, **data}) + b"\n\n"
