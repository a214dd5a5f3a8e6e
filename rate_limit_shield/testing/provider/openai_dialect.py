"""OpenAI's dialect of the fake provider: `/v1/chat/completions`, its request fields, error
bodies, `x-ratelimit-*` headers and SSE chunks."""

from __future__ import annotations

from typing import Any

from .buckets import Bucket
from .streams import Steps
from .wire import (
    CONTEXT_WINDOW,
    GARBAGE,
    OUTAGE_MESSAGES,
    Completion,
    Headers,
    Request,
    dumps,
    go_duration,
    messages_of,
    model_of,
    number,
    positive_int,
    prompt_tokens,
)

__all__ = ["PATH", "OpenAI"]

PATH = "/v1/chat/completions"
_ORGANIZATION = "org-fake"
_LIMITS_PAGE = "Visit https://platform.openai.com/account/rate-limits to learn more."
_PER_MINUTE = {
    "requests": "requests per min (RPM)",
    "tokens": "tokens per min (TPM)",
    "input_tokens": "input tokens per min (ITPM)",
    "output_tokens": "output tokens per min (OTPM)",
}
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)


class OpenAI:
    """OpenAI's dialect: request fields, error bodies, `x-ratelimit-*` headers, SSE chunks."""

    path = PATH
    request_id_header = "x-request-id"
    own_models = ("gpt-*", "chatgpt-*", "o[0-9]*", "text-embedding-*", "ft:*")

    def read(self, body: dict[str, Any]) -> Request:
        model = model_of(body)
        messages = messages_of(body)
        max_tokens = positive_int(body, "max_completion_tokens") or positive_int(
            body, "max_tokens"
        )
        options = body.get("stream_options")
        return Request(
            model=model,
            prompt_tokens=prompt_tokens(messages),
            max_tokens=max_tokens,
            choices=positive_int(body, "n") or 1,
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    def error(
        self, kind: str, message: str, *, param: str | None = None, code: str | None = None
    ) -> bytes:
        return dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})

    def bad_request(self, message: str, param: str | None) -> bytes:
        return self.error("invalid_request_error", message, param=param)

    def model_not_found(self, model: str) -> bytes:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self.error("invalid_request_error", message, code="model_not_found")

    def outage(self, status: int) -> bytes:
        return self.error("server_error", OUTAGE_MESSAGES.get(status, "Server error."))

    def quota_gone(self) -> tuple[int, bytes]:
        return 429, self.error("insufficient_quota", _QUOTA_MESSAGE, code="insufficient_quota")

    def context_too_long(self, tokens: int) -> bytes:
        message = (
            f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, your "
            f"messages resulted in {tokens} tokens. Please reduce the length of the messages."
        )
        return self.error(
            "invalid_request_error", message, param="messages", code="context_length_exceeded"
        )

    def throttled(self, unit: str, message: str) -> bytes:
        kind = "requests" if unit == "requests" else "tokens"
        return self.error(kind, message, code="rate_limit_exceeded")

    def over_limit(
        self, model: str, unit: str, bucket: Bucket, requested: float, wait: float
    ) -> bytes:
        """The 429 of a bucket without room yet, in per-minute terms as OpenAI words it."""
        message = (
            f"Rate limit reached for {model} in organization {_ORGANIZATION} on "
            f"{_PER_MINUTE[unit]}: Limit {number(bucket.per_minute)}, Used "
            f"{number(bucket.used())}, Requested {number(requested)}. "
            f"Please try again in {go_duration(wait)}. {_LIMITS_PAGE}"
        )
        return self.throttled(unit, message)

    def too_large(self, model: str, unit: str, bucket: Bucket, requested: float) -> bytes:
        """The 429 of a request larger than a bucket, which no wait helps."""
        message = (
            f"Request too large for {model} in organization {_ORGANIZATION} on "
            f"{_PER_MINUTE[unit]}: Limit {number(bucket.per_minute)}, Requested "
            f"{number(requested)}. The input or output tokens must be reduced in order to run "
            f"successfully. {_LIMITS_PAGE}"
        )
        return self.throttled(unit, message)

    def limit_headers(self, buckets: dict[str, Bucket], wall: float) -> Headers:
        headers: Headers = []
        for unit in ("requests", "tokens"):
            bucket = buckets.get(unit)
            if bucket is not None:
                headers += [
                    (f"x-ratelimit-limit-{unit}", number(bucket.per_minute)),
                    (f"x-ratelimit-remaining-{unit}", str(bucket.remaining())),
                    (f"x-ratelimit-reset-{unit}", go_duration(bucket.until_full())),
                ]
        return headers

    def garbage_headers(self) -> Headers:
        return [
            (f"x-ratelimit-{field}-{unit}", GARBAGE[field])
            for unit in ("requests", "tokens")
            for field in ("limit", "remaining", "reset")
        ]

    def _usage(self, answer: Completion) -> dict[str, int]:
        prompt = answer.request.prompt_tokens
        completion = len(answer.words) * answer.request.choices
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def completion(self, answer: Completion) -> bytes:
        message = {"role": "assistant", "content": "".join(answer.words)}
        finish = "length" if answer.cut else "stop"
        return dumps(
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

    def stream(self, answer: Completion) -> Steps:
        """The chunks by step: each choice's role, then each token (a choice's last with its
        finish), the usage chunk if asked for and `[DONE]` with the very last."""
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
            return b"data: " + dumps({**head, "choices": choices, **extra}) + b"\n\n"

        def delta(index: int, content: dict[str, str], finish: str | None = None) -> bytes:
            return chunk([{"index": index, "delta": content, "finish_reason": finish}])

        steps = [[delta(i, {"role": "assistant", "content": ""}) for i in range(request.choices)]]
        for index in range(request.choices):
            steps += [[delta(index, {"content": word})] for word in answer.words]
            steps[-1].append(delta(index, {}, "length" if answer.cut else "stop"))
        if request.include_usage:
            steps[-1].append(chunk([], usage=self._usage(answer)))
        steps[-1].append(b"data: [DONE]\n\n")
        return steps

    def stream_error(self) -> bytes:
        """What breaks a stream under way: an error chunk, which the SDK raises as APIError."""
        return b"data: " + self.outage(500) + b"\n\n"
