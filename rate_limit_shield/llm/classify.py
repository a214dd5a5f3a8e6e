"""What an LLM provider's error or raw response means for retrying, read from its shape alone.

No SDK is imported: errors are recognised by the attributes the SDKs give them (`status_code`,
`response`, `body`, `code`, `type`, botocore's `response["Error"]["Code"]`, google-genai's
`details`) and timeouts and dropped connections by class name, so OpenAI, Anthropic, Bedrock,
Gemini, httpx, httpx2, requests and aiohttp errors are all classified without any of them
installed. A plain HTTP response, returned or raised by `raise_for_status()`, is read for its JSON
error body when that body is in memory already (a stream is never read to classify it). The
taxonomy, strongest signal first:

- FATAL (`QuotaExhausted` raised at once): a quota or spend code in the body (OpenAI
  `insufficient_quota`, Anthropic `billing_error` and spend-limit codes, a 400 saying the credit
  balance is too low), a Gemini per-day quota, HTTP 402.
- a Bedrock (botocore) error code, also in the lower camel case of its event streams: throttling
  codes THROTTLED, service and model faults FAILURE, validation and access errors IGNORED.
- the HTTP status, or without one the numeric `code` of the error body (OpenRouter's mid-stream
  errors): 429 THROTTLED; 408, 409, 425, Groq's 498 (flex capacity) and 5xx (Anthropic's 529
  included) FAILURE, as the SDKs retry them; any other 4xx IGNORED.
- an error body without a status, or inside a stream (Anthropic raises those with the stream's
  status 200): by its error type, FAILURE when the type says nothing.
- timeouts and connection errors (SDK, httpx, requests, aiohttp, botocore, builtin): FAILURE.

`x-should-retry` then overrides the verdict as the SDKs let it: `false` makes a FAILURE or a
THROTTLED one IGNORED (the server says retrying cannot help, so it is not a throttle to wait out
either); `true` makes an IGNORED one a FAILURE. A FATAL verdict stands. An error the taxonomy does
not know is looked for along its `__cause__` chain (`raise AppError(...) from sdk_error`), then
left to `DefaultClassifier`.

The retry hint: `retry-after-ms` or `Retry-After`, else Gemini's `RetryInfo`; for a throttle that
names neither, the message's "try again in 20s", else the reset of the bucket that ran out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Mapping
from itertools import islice
from typing import Any

from .._bounded import CLASS_CACHE_MAX, remember
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, QuotaExhausted, ShieldError
from ..outcome import SUCCESS, DefaultClassifier, Outcome, Verdict
from .headers import MAX_PAIRS, RateLimitInfo, parse_duration

__all__ = ["status_of", "headers_of", "loaded_json", "LLMClassifier"]

_FAILURE = Outcome.FAILURE
_THROTTLED = Outcome.THROTTLED
_IGNORED = Outcome.IGNORED
_IGNORED_VERDICT = Verdict(_IGNORED)

# Codes and types found in error bodies and on SDK errors, lower-cased: OpenAI `code`/`type`,
# Anthropic `error.type` and `error.details.error_code`, Gemini `status`.
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",  # OpenAI, 429
        "billing_hard_limit_reached",  # OpenAI
        "billing_not_active",  # OpenAI
        "billing_error",  # Anthropic error type
        "enforced_spend_limit_reached",  # Anthropic, 429
        "contract_spend_limit_reached",  # Anthropic, 429
        "linked_organization_spend_limit_reached",  # Anthropic, 402
        "linked_organization_billing_unavailable",  # Anthropic, 402
    }
)
# Anthropic has reported an empty prepaid balance or a spend limit as a plain 400.
_QUOTA_PHRASES = ("credit balance", "spend limit", "spending limit", "specified api usage limits")
_BODY_OUTCOMES: dict[str, Outcome] = {
    **dict.fromkeys(
        (
            "rate_limit_error",  # Anthropic
            "rate_limit_exceeded",  # OpenAI, Groq
            "tokens",  # OpenAI 429 types
            "requests",
            "dynamic_request_limited",  # Together
            "dynamic_token_limited",
            "ramp_limit_exceeded",  # Anthropic
            "resource_exhausted",  # Gemini
        ),
        _THROTTLED,
    ),
    **dict.fromkeys(
        (
            "overloaded_error",  # Anthropic
            "api_error",
            "timeout_error",
            "server_error",  # OpenAI
            "internal",  # Gemini
            "unavailable",
            "deadline_exceeded",
        ),
        _FAILURE,
    ),
    **dict.fromkeys(
        (
            "invalid_request_error",  # Anthropic, OpenAI
            "authentication_error",
            "permission_error",
            "not_found_error",
            "request_too_large",
            "context_length_exceeded",
            "content_filter",
            "invalid_api_key",
            "model_not_found",
            "invalid_argument",  # Gemini
            "failed_precondition",
            "permission_denied",
            "unauthenticated",
            "not_found",
        ),
        _IGNORED,
    ),
}
# botocore `ClientError.response["Error"]["Code"]`, whose event-stream errors (`EventStreamError`,
# raised mid-stream with no HTTP status) name the stream's member in lower camel case
# (`throttlingException`): read with a capital first letter. Other codes go by their HTTP status.
_AWS_OUTCOMES: dict[str, Outcome] = {
    **dict.fromkeys(
        (
            "ThrottlingException",
            "Throttling",
            "ThrottledException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "SlowDown",
            "ServiceQuotaExceededException",  # Bedrock: "you can resubmit your request later"
        ),
        _THROTTLED,
    ),
    **dict.fromkeys(
        (
            "ServiceUnavailableException",
            "ServiceUnavailable",
            "InternalServerException",
            "InternalFailure",
            "InternalError",
            "ModelErrorException",
            "ModelTimeoutException",
            "ModelStreamErrorException",
            "RequestTimeout",
            "RequestTimeoutException",
        ),
        _FAILURE,
    ),
    **dict.fromkeys(
        ("ValidationException", "AccessDeniedException", "ResourceNotFoundException"), _IGNORED
    ),
}
# Timeouts and lost connections, by the class names the HTTP stacks give them (any class in the
# MRO): SDK, httpx/httpx2/httpcore, requests/urllib3, aiohttp, botocore, builtins.
_TRANSIENT_CLASS_NAMES = frozenset(
    {
        "TimeoutError",
        "ConnectionError",
        "APITimeoutError",
        "APIConnectionError",
        "RetryableError",  # Anthropic: raised by middleware to ask for a retry
        "TimeoutException",
        "NetworkError",
        "RemoteProtocolError",
        "Timeout",
        "ChunkedEncodingError",
        "NewConnectionError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ClientConnectionError",
        "ServerTimeoutError",
        "ClientPayloadError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "IncompleteRead",
    }
)
# 408, 409 and 425 the SDKs retry; Groq's 498 says its flex tier is out of capacity for now.
_RETRYABLE_4XX = frozenset({408, 409, 425, 498})
_AMOUNT = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # one way only to match digits: linear time
_TRY_AGAIN = re.compile(
    rf"(?:try again|retry)\s+(?:in|after)\s+(?:"
    rf"((?:{_AMOUNT}(?:ms|us|\u00b5s|\u03bcs|ns|h|m|s))+)(?![a-z])|({_AMOUNT})\s*sec)",
    re.IGNORECASE,
)
_LITELLM_PREFIX = "llm_provider-"
_ERROR_BODY_MAX = 65536
"""Bytes of an error body read at most: error bodies are small."""
_MAX_CAUSES = 8  # how far along a `__cause__` chain the taxonomy looks
_PLAIN_RESULT_CLASSES: dict[type, bool] = {}
"""Result classes seen without an HTTP status (SDK models, dicts, strings): not looked at again."""
_PLAIN_RESULT_CLASSES_MAX = CLASS_CACHE_MAX


def status_of(obj: object) -> int | None:
    """The HTTP status an error or response carries, as an int in 100..599, else None.

    Looks at `status_code`, `status` and `code` (urllib, google-genai, google-api-core), then
    the same on `obj.response`, then botocore's `response["ResponseMetadata"]["HTTPStatusCode"]`.
    A string `status` or `code` (Gemini's "RESOURCE_EXHAUSTED", OpenAI's error codes) is skipped.
    """
    for name in ("status_code", "status", "code"):
        status = _http_status(_attr(obj, name))
        if status is not None:
            return status
    response = _attr(obj, "response")
    if response is None or response is obj:
        return None
    if isinstance(response, Mapping):
        return _http_status(_item(response, "ResponseMetadata", "HTTPStatusCode"))
    for name in ("status_code", "status"):
        status = _http_status(_attr(response, name))
        if status is not None:
            return status
    return None


def headers_of(obj: object) -> object | None:
    """The response headers an error or response carries, else None.

    `obj.headers`, then `obj.response.headers`, then botocore's
    `response["ResponseMetadata"]["HTTPHeaders"]`, then those litellm keeps on its answers and
    streams in `_hidden_params["additional_headers"]`: any container `headers.header` reads.
    """
    headers = _attr(obj, "headers")
    if headers is not None:
        return headers
    response = _attr(obj, "response")
    if response is None or response is obj:
        return _litellm_headers(obj)
    if isinstance(response, Mapping):
        return _item(response, "ResponseMetadata", "HTTPHeaders")
    return _attr(response, "headers")


def _litellm_headers(obj: object) -> list[tuple[object, object]] | None:
    """The provider's headers litellm keeps: the OpenAI rate-limit ones by their own names, and
    all of them under an `llm_provider-` prefix (Anthropic's only there), read without it. An
    answer without any gives an empty list, so that its class is not taken for one that never
    carries headers."""
    hidden = _attr(obj, "_hidden_params")
    if not isinstance(hidden, Mapping):
        return None
    kept = hidden.get("additional_headers")
    if not isinstance(kept, Mapping):
        return []
    return [
        (name.removeprefix(_LITELLM_PREFIX) if isinstance(name, str) else name, value)
        for name, value in islice(kept.items(), MAX_PAIRS)
    ]


class LLMClassifier:
    """A `Classifier` that knows the LLM providers' errors (see the module docstring).

    `classify_error`: `extra(error)` first, the caller's extension (a `Verdict` wins, None means
    no opinion); then `ignore` types are IGNORED; then the provider taxonomy; then what
    `DefaultClassifier(retry_on=..., ignore=..., retry_if_result=...)` says: so `retry_on` decides
    only for errors the taxonomy does not know (pass `extra` or `ignore` to overrule it).

    `classify_result` catches a raw HTTP response returned instead of raised (429 THROTTLED with
    its hint, 402 FATAL, 5xx FAILURE, other 4xx IGNORED, `x-should-retry` as for errors), then
    applies `retry_if_result`. It runs after every successful call, so a result class is learned:
    once an instance of it came without an HTTP status, its instances are not looked at again.
    Retry-After dates are read against `clock.time()` (the system clock by default).
    """

    __slots__ = ("_default", "_ignore", "_extra", "_check_result", "_clock")

    def __init__(
        self,
        *,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
        retry_if_result: Callable[[Any], bool] | None = None,
        extra: Callable[[BaseException], Verdict | None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        _check_exception_types("retry_on", retry_on)
        _check_exception_types("ignore", ignore)
        _check_callable("retry_if_result", retry_if_result)
        _check_callable("extra", extra)
        self._default = DefaultClassifier(
            retry_on=retry_on, ignore=ignore, retry_if_result=retry_if_result
        )
        self._ignore = ignore
        self._extra = extra
        self._check_result = None if retry_if_result is None else self._default.classify_result
        self._clock = clock if clock is not None else SYSTEM_CLOCK

    @property
    def retry_on(self) -> type[BaseException] | tuple[type[BaseException], ...]:
        return self._default.retry_on

    @property
    def ignore(self) -> type[BaseException] | tuple[type[BaseException], ...]:
        return self._ignore

    @property
    def retry_if_result(self) -> Callable[[Any], bool] | None:
        return self._default.retry_if_result

    @property
    def extra(self) -> Callable[[BaseException], Verdict | None] | None:
        return self._extra

    @property
    def plain_results(self) -> Container[type]:
        """Result classes whose every instance is a SUCCESS: a shield need not ask about them."""
        return _PLAIN_RESULT_CLASSES if self._check_result is None else frozenset()

    def classify_error(self, error: BaseException) -> Verdict:
        if self._extra is not None:
            verdict = self._extra(error)
            if verdict is not None:
                return verdict
        if isinstance(error, self._ignore):
            return _IGNORED_VERDICT
        verdict = _taxonomy(error, self._clock.time())
        return verdict if verdict is not None else self._default.classify_error(error)

    def classify_result(self, result: Any) -> Verdict:
        if type(result) not in _PLAIN_RESULT_CLASSES:
            verdict = _response_verdict(result, self._clock)
            if verdict is not None:
                return verdict
        check = self._check_result
        return SUCCESS if check is None else check(result)

    def __repr__(self) -> str:
        return (
            f"LLMClassifier(retry_on={self.retry_on!r}, ignore={self.ignore!r}, "
            f"retry_if_result={self.retry_if_result!r}, extra={self.extra!r})"
        )


def _response_verdict(result: object, clock: Clock) -> Verdict | None:
    """The verdict on a result that is an HTTP response; a result class seen without an HTTP
    status joins `_PLAIN_RESULT_CLASSES`, so that its instances cost one lookup from then on."""
    if status_of(result) is None:
        remember(_PLAIN_RESULT_CLASSES, type(result), True, _PLAIN_RESULT_CLASSES_MAX)
        return None
    return _judge(result, None, clock.time())


def _taxonomy(error: BaseException, now: float) -> Verdict | None:
    """The verdict of the first error along the `__cause__` chain that the taxonomy knows.

    Stops at a `ShieldError` (an inner shield's refusal), which `DefaultClassifier` handles.
    """
    link: BaseException | None = error
    for _ in range(_MAX_CAUSES):
        if link is None or isinstance(link, ShieldError):
            return None
        verdict = _judge(link, error, now)
        if verdict is not None:
            return verdict
        link = link.__cause__
    return None


def _judge(subject: object, raised: BaseException | None, now: float) -> Verdict | None:
    """The verdict on `subject`, an error on the `__cause__` chain of `raised` (the error the
    caller saw), or with `raised` None a response returned instead of raised; None when nothing
    about it says anything. `now` is the wall time, for dates."""
    status = status_of(subject)
    if raised is None and (status is None or status < 400):
        return None  # a success, or a status with nothing to say: its body is not read
    body = _body(subject, raised)
    if status is None:
        status = _body_status(body)
    codes, messages = _codes_and_messages(subject, body)
    google = _google_details(subject, body)
    reason = _quota_reason(status, codes, messages, google)
    if reason is not None:
        where = f" (HTTP {status})" if status is not None else ""
        return Verdict(
            Outcome.FATAL,
            None,
            QuotaExhausted(f"the provider's quota is gone: {reason}{where}", cause=raised),
        )
    outcome = _outcome(status, subject if raised is not None else None, codes)
    if outcome is None:
        return None
    headers = headers_of(subject)
    info = RateLimitInfo.from_headers(headers, now) if headers is not None else None
    if info is not None and info.should_retry is not None:
        if not info.should_retry:
            outcome = _IGNORED
        elif outcome is _IGNORED:
            outcome = _FAILURE
    if outcome is _IGNORED:
        return _IGNORED_VERDICT
    hint = info.retry_after if info is not None else None
    if hint is None:
        hint = _retry_delay(google)
    if hint is None and outcome is _THROTTLED:  # how long the throttle lasts, said otherwise
        hint = _try_again_in(messages)
        if hint is None and info is not None:
            hint = info.reset_hint()
    return Verdict(outcome, hint)


def _outcome(status: int | None, error: object | None, codes: set[str]) -> Outcome | None:
    aws = _AWS_OUTCOMES.get(_aws_code(error) or "") if error is not None else None
    if aws is not None:
        return aws
    if status is not None and not 200 <= status < 300:
        return _status_outcome(status)
    if error is None:
        return None
    named = {_BODY_OUTCOMES.get(code) for code in codes}
    for outcome in (_THROTTLED, _FAILURE, _IGNORED):  # a deterministic pick should several clash
        if outcome in named:
            return outcome
    if status is not None:  # an error raised inside a 2xx response: a stream that broke
        return _FAILURE
    transient = any(kind.__name__ in _TRANSIENT_CLASS_NAMES for kind in type(error).__mro__)
    return _FAILURE if transient else None


def _status_outcome(status: int) -> Outcome | None:
    if status == 429:
        return _THROTTLED
    if status >= 500 or status in _RETRYABLE_4XX:
        return _FAILURE
    if status >= 400:
        return _IGNORED
    return None  # 1xx, 3xx: nothing to say


def _quota_reason(
    status: int | None, codes: set[str], messages: list[str], google: list[Mapping[Any, Any]]
) -> str | None:
    """What says the quota is gone, or None."""
    named = sorted(codes & _QUOTA_CODES)
    if named:
        return named[0]
    if status == 402:
        return "payment required"
    for detail in google:
        if str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in _sequence(detail.get("violations")):
                quota_id = _item(violation, "quotaId")
                if isinstance(quota_id, str) and "perday" in quota_id.lower():
                    return f"the daily quota {quota_id}"
    if status is not None and status < 500:  # a provider's answer, not any error with a message
        for message in messages:
            if any(phrase in message.lower() for phrase in _QUOTA_PHRASES):
                return message[:200]
    return None


def _body(subject: object, raised: BaseException | None) -> Mapping[Any, Any] | None:
    """The JSON error body: an SDK error's parsed `body`, google-genai's `details` (the whole
    JSON error), else the JSON of the HTTP response (the subject itself when it was returned,
    its `response` when raised by `raise_for_status`), if that response's body is read already."""
    for name in ("body", "details"):
        body = _attr(subject, name)
        if isinstance(body, Mapping):
            return body
    return loaded_json(subject if raised is None else _attr(subject, "response"))


def loaded_json(response: object, max_bytes: float = _ERROR_BODY_MAX) -> Mapping[Any, Any] | None:
    """The JSON object of an HTTP response whose body is in memory, else None: httpx, httpx2 and
    requests keep it in `_content` once read, aiohttp in `_body`. A body not read yet is left
    alone, since reading a stream to look at it would take it from the caller; so is one longer
    than `max_bytes` (by default, longer than any error body)."""
    if response is None:
        return None
    content = _attr(response, "_content")
    if not isinstance(content, (bytes, bytearray)):
        content = _attr(response, "_body")
    if not isinstance(content, (bytes, bytearray)) or len(content) > max_bytes:
        return None
    try:
        parsed = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, Mapping) else None


def _body_status(body: Mapping[Any, Any] | None) -> int | None:
    """The HTTP status an error body names as its numeric `code`, as OpenRouter's mid-stream
    errors do (`{"error": {"code": 429, ...}}`); None otherwise."""
    if body is None:
        return None
    for part in (body, body.get("error")):
        code = _item(part, "code")
        if isinstance(code, str) and code.isdigit() and len(code) == 3:
            code = int(code)
        status = _http_status(code)
        if status is not None:
            return status
    return None


def _codes_and_messages(
    subject: object, body: Mapping[Any, Any] | None
) -> tuple[set[str], list[str]]:
    """The error codes and types an SDK error and its body name (lower-cased), and the messages,
    the body's first (the SDK's own message wraps the whole body)."""
    codes = [_attr(subject, name) for name in ("code", "type", "error_code", "status")]
    messages: list[object] = []
    if body is not None:
        for part in (body, body.get("error")):
            codes += [_item(part, name) for name in ("code", "type", "status")]
            codes.append(_item(part, "details", "error_code"))
            messages.append(_item(part, "message"))
    messages.append(_attr(subject, "message"))
    return (
        {code.lower() for code in codes if isinstance(code, str)},
        [message for message in messages if isinstance(message, str)],
    )


def _aws_code(error: object) -> str | None:
    """botocore's error code, with a capital first letter (see `_AWS_OUTCOMES`)."""
    code = _item(_attr(error, "response"), "Error", "Code")
    return code[:1].upper() + code[1:] if isinstance(code, str) else None


def _google_details(subject: object, body: Mapping[Any, Any] | None) -> list[Mapping[Any, Any]]:
    """google.rpc detail entries: google-api-core keeps them in `details` as a list, google-genai
    and Gemini's REST answers in the JSON error's `error.details`."""
    details = _attr(subject, "details")
    if not isinstance(details, (list, tuple)) and body is not None:
        inner = body.get("error")
        details = (inner if isinstance(inner, Mapping) else body).get("details")
    return [entry for entry in _sequence(details) if isinstance(entry, Mapping)]


def _retry_delay(google: list[Mapping[Any, Any]]) -> float | None:
    """Gemini's `RetryInfo.retryDelay` ("17s"), when the body has one."""
    for detail in google:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration(delay)
    return None


def _try_again_in(messages: list[str]) -> float | None:
    """The wait a throttle's message names: OpenAI's and Groq's "Please try again in 20s" (a Go
    duration: "1.5s", "20ms", "6m0s"), Azure's "Please retry after 6 seconds"."""
    for message in messages:
        match = _TRY_AGAIN.search(message)
        if match is not None:
            return parse_duration(match.group(1) or match.group(2))
    return None


def _http_status(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return int(value)
    return None


def _attr(obj: object, name: str) -> object:
    """`getattr(obj, name, None)`, also when a property raises."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _item(obj: object, *keys: str) -> object:
    """`obj[k1][k2]...` through nested Mappings, else None."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _sequence(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _check_exception_types(name: str, value: object) -> None:
    kinds = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in kinds):
        raise ConfigError(f"{name} must be an exception type or a tuple of them, got {value!r}")


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise ConfigError(f"{name} must be callable or None, got {value!r}")
