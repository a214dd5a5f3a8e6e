"""The duck-typed LLM error taxonomy: real OpenAI and Anthropic SDK errors (raised by the SDKs
themselves from scripted HTTP answers), Bedrock-, Gemini-, aiohttp-shaped fakes, httpx2,
requests and urllib errors, and raw responses returned as results."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
from collections.abc import Callable
from email.message import Message
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from rate_limit_shield.errors import CircuitOpen, ConfigError, QuotaExhausted, RateLimited
from rate_limit_shield.limiter import Limit, Limiter
from rate_limit_shield.llm import classify
from rate_limit_shield.llm.classify import LLMClassifier, headers_of, status_of
from rate_limit_shield.outcome import SUCCESS, Classifier, Outcome, Verdict
from rate_limit_shield.retry import RetryPolicy
from rate_limit_shield.shield import Shield
from rate_limit_shield.testing import FakeClock

THROTTLED, FAILURE, IGNORED = Outcome.THROTTLED, Outcome.FAILURE, Outcome.IGNORED
MESSAGES = [{"role": "user", "content": "hi"}]
REQUEST = httpx2.Request("POST", "https://provider.test/v1/chat/completions")

# --- real SDK errors, raised by the SDKs from scripted answers -------------------------------

Answer = Callable[[httpx2.Request], httpx2.Response]


def answer(
    status: int,
    body: object = None,
    headers: dict[str, str] | None = None,
    *,
    sse: str | None = None,
) -> Answer:
    def respond(request: httpx2.Request) -> httpx2.Response:
        if sse is not None:
            return httpx2.Response(
                status, headers={"content-type": "text/event-stream"}, content=sse.encode()
            )
        return httpx2.Response(status, headers=headers or {}, json=body)

    return respond


def fails_with(error: type[Exception]) -> Answer:
    def respond(request: httpx2.Request) -> httpx2.Response:
        raise error("scripted", request=request)  # type: ignore[call-arg]

    return respond


def http(respond: Answer) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(respond))


def openai_error(respond: Answer, *, stream: bool = False) -> Exception:
    """What `openai` raises for that answer."""
    client = openai.OpenAI(
        api_key="test", base_url="http://provider.test/v1", max_retries=0, http_client=http(respond)
    )
    try:
        answer = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)
        for _ in answer if stream else ():
            pass
    except Exception as error:
        return error
    raise AssertionError("the SDK raised nothing")


def anthropic_error(respond: Answer, *, stream: bool = False) -> Exception:
    """What `anthropic` raises for that answer."""
    client = anthropic.Anthropic(
        api_key="test", base_url="http://provider.test", max_retries=0, http_client=http(respond)
    )
    try:
        answer = client.messages.create(
            model="claude-x", max_tokens=10, messages=MESSAGES, stream=stream
        )
        for _ in answer if stream else ():
            pass
    except Exception as error:
        return error
    raise AssertionError("the SDK raised nothing")


def oai(status: int, code: str | None, type_: str = "invalid_request_error", **headers: str):
    """An OpenAI error answer: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": f"scripted {code}", "type": type_, "param": None, "code": code}}
    return lambda: openai_error(answer(status, body, _headers(headers)))


def oai_said(message: str, status: int = 429, **headers: str):
    """An OpenAI rate-limit answer whose message is `message`."""
    body = {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}
    return lambda: openai_error(answer(status, body, _headers(headers)))


def ant(status: int, type_: str, message: str = "scripted", code: str | None = None, **headers):
    """An Anthropic error answer: {"type": "error", "error": {"type", "message", "details"}}."""
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["details"] = {"error_code": code}
    body = {"type": "error", "error": error, "request_id": "req_1"}
    return lambda: anthropic_error(answer(status, body, _headers(headers)))


def _headers(keywords: dict[str, str]) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in keywords.items()}


def sse_event(event: str | None, payload: dict[str, Any]) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n"


# --- shaped fakes ----------------------------------------------------------------------------


class ClientError(Exception):
    """botocore.exceptions.ClientError's shape."""

    def __init__(self, code: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {
            "Error": {"Code": code, "Message": "scripted"},
            "ResponseMetadata": {
                "RequestId": "r-1",
                "HTTPStatusCode": status,
                "HTTPHeaders": headers or {},
                "RetryAttempts": 0,
            },
        }
        self.operation_name = "Converse"


class EndpointConnectionError(Exception):
    """botocore's, by name."""


class ReadTimeoutError(Exception):
    """botocore's and urllib3's, by name."""


class GeminiAPIError(Exception):
    """google.genai.errors.APIError's shape: `details` is the whole JSON error."""

    def __init__(self, code: int, error: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(f"{code} {error.get('status')}")
        self.details = {"error": error}
        self.code = code
        self.status = error.get("status")
        self.message = error.get("message")
        self.response = httpx2.Response(code, headers=headers or {}, json=self.details)


def gemini_429(*quota_ids: str, retry_delay: str | None = "17s") -> dict[str, Any]:
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/requests", "quotaId": quota}
                for quota in quota_ids
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    return {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": details}


class ResourceExhausted(Exception):
    """google.api_core.exceptions.ResourceExhausted's shape: an int `code`, `details` a list."""

    code = 429

    def __init__(self, details: list[Any]) -> None:
        super().__init__("429 quota")
        self.details = details


class ClientResponseError(Exception):
    """aiohttp's: `status` and `headers`."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers


class ClientConnectionError(Exception):
    pass


class ServerDisconnectedError(ClientConnectionError):
    """aiohttp's, by its base class's name."""


class HTTPException(Exception):
    """A web framework's: only `status_code`."""

    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


def httpx2_status_error(status: int, **headers: str) -> httpx2.HTTPStatusError:
    response = httpx2.Response(status, headers=_headers(headers), request=REQUEST)
    try:
        response.raise_for_status()
    except httpx2.HTTPStatusError as error:
        return error
    raise AssertionError("not an error status")


def requests_response(status: int, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(_headers(headers))
    return response


def requests_http_error(status: int, **headers: str) -> requests.HTTPError:
    try:
        requests_response(status, **headers).raise_for_status()
    except requests.HTTPError as error:
        return error
    raise AssertionError("not an error status")


def urllib_error(status: int, **headers: str) -> urllib.error.HTTPError:
    message = Message()
    for name, value in _headers(headers).items():
        message[name] = value
    return urllib.error.HTTPError("https://provider.test", status, "scripted", message, None)


def openai_stream(**error: str) -> Callable[[], Exception]:
    """What `openai` raises for an error event inside a stream: an APIError with no status."""
    event = sse_event(None, {"error": {"message": "scripted", **error}})
    return lambda: openai_error(answer(200, sse=event), stream=True)


def openrouter_stream(code: int) -> Callable[[], Exception]:
    """What `openai` raises for OpenRouter's mid-stream error: a chunk whose `error` names the
    upstream HTTP status as a number."""
    chunk = {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "error": {"code": code, "message": "scripted upstream error"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    return lambda: openai_error(answer(200, sse=sse_event(None, chunk)), stream=True)


def anthropic_stream(type_: str) -> Callable[[], Exception]:
    """What `anthropic` raises for an error event inside a stream: status 200, an error type."""
    event = sse_event("error", {"type": "error", "error": {"type": type_, "message": "scripted"}})
    return lambda: anthropic_error(answer(200, sse=event), stream=True)


def gemini(code: int, status: str) -> Callable[[], Exception]:
    return lambda: GeminiAPIError(code, {"code": code, "message": "scripted", "status": status})


TPM_MESSAGE = (
    "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, "
    "Used 29000, Requested 2000. Please try again in {}. Visit "
    "https://platform.openai.com/account/rate-limits to learn more."
)
OPENAI_BUCKETS = {  # a 429 of the tokens bucket: requests left, tokens gone
    "x_ratelimit_remaining_requests": "59",
    "x_ratelimit_reset_requests": "1s",
    "x_ratelimit_remaining_tokens": "0",
    "x_ratelimit_reset_tokens": "20s",
}
CREDIT = "Your credit balance is too low to access the Anthropic API."
SPEND = "You have reached your specified API usage limits. You will regain access on 2030-01-01."
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "9s"}
FATAL = "fatal"  # Outcome.FATAL is Outcome.IGNORED: the table tells them apart

# (name, make the error, outcome, retry_after)
ROWS: list[tuple[str, Callable[[], BaseException], object, float | None]] = [
    # OpenAI
    (
        "openai-429-ms",
        oai(429, "rate_limit_exceeded", "tokens", retry_after_ms="1500"),
        THROTTLED,
        1.5,
    ),
    (
        "openai-429-s",
        oai(429, "rate_limit_exceeded", "requests", retry_after="20"),
        THROTTLED,
        20.0,
    ),
    ("openai-429-no-hint", oai(429, "rate_limit_exceeded", "requests"), THROTTLED, None),
    (
        "openai-insufficient-quota",
        oai(429, "insufficient_quota", "insufficient_quota"),
        FATAL,
        None,
    ),
    ("openai-billing-not-active", oai(429, "billing_not_active"), FATAL, None),
    ("openai-billing-hard-limit", oai(400, "billing_hard_limit_reached"), FATAL, None),
    ("openai-402", oai(402, None), FATAL, None),
    ("openai-400-context", oai(400, "context_length_exceeded"), IGNORED, None),
    ("openai-400-content-filter", oai(400, "content_filter"), IGNORED, None),
    ("openai-401", oai(401, "invalid_api_key"), IGNORED, None),
    ("openai-403", oai(403, "unsupported_country_region_territory"), IGNORED, None),
    ("openai-404", oai(404, "model_not_found"), IGNORED, None),
    ("openai-409-lock-timeout", oai(409, None), FAILURE, None),
    ("openai-409-not-retryable", oai(409, None, x_should_retry="false"), IGNORED, None),
    ("openai-413", oai(413, None), IGNORED, None),
    ("openai-422", oai(422, None), IGNORED, None),
    ("openai-408", oai(408, None), FAILURE, None),
    ("openai-500", oai(500, None, "server_error"), FAILURE, None),
    ("openai-502", oai(502, None, "server_error"), FAILURE, None),
    ("openai-503-hint", oai(503, None, "server_error", retry_after="7"), FAILURE, 7.0),
    ("openai-504", oai(504, None, "server_error"), FAILURE, None),
    ("openai-400-should-retry", oai(400, None, x_should_retry="true"), FAILURE, None),
    ("openai-503-should-not", oai(503, None, x_should_retry="false"), IGNORED, None),
    (
        "openai-429-should-not",
        oai(429, "rate_limit_exceeded", x_should_retry="false"),
        IGNORED,
        None,
    ),
    ("openai-429-should", oai(429, "x", x_should_retry="true", retry_after="3"), THROTTLED, 3.0),
    (
        "openai-quota-beats-header",
        oai(429, "insufficient_quota", x_should_retry="true"),
        FATAL,
        None,
    ),
    # no Retry-After: the message's "try again in", else the reset of the bucket that ran out
    ("openai-try-again-s", oai_said(TPM_MESSAGE.format("20s")), THROTTLED, 20.0),
    ("openai-try-again-fraction", oai_said(TPM_MESSAGE.format("1.5s")), THROTTLED, 1.5),
    ("openai-try-again-ms", oai_said(TPM_MESSAGE.format("20ms")), THROTTLED, 0.02),
    ("openai-try-again-minutes", oai_said(TPM_MESSAGE.format("6m0s")), THROTTLED, 360.0),
    (
        "openai-retry-after-beats-message",
        oai_said(TPM_MESSAGE.format("20s"), retry_after="3"),
        THROTTLED,
        3.0,
    ),
    (
        "openai-message-beats-reset",
        oai_said(TPM_MESSAGE.format("2s"), **OPENAI_BUCKETS),
        THROTTLED,
        2.0,
    ),
    ("openai-reset-of-the-empty-bucket", oai_said("scripted", **OPENAI_BUCKETS), THROTTLED, 20.0),
    (
        "openai-reset-requests",
        oai_said(
            "scripted",
            x_ratelimit_remaining_requests="0",
            x_ratelimit_reset_requests="20s",
            x_ratelimit_remaining_tokens="100",
            x_ratelimit_reset_tokens="45s",
        ),
        THROTTLED,
        20.0,
    ),
    (
        "openai-reset-larger-when-none-is-empty",
        oai_said("scripted", x_ratelimit_reset_requests="2s", x_ratelimit_reset_tokens="7.5s"),
        THROTTLED,
        7.5,
    ),
    (
        "openai-503-reset-is-no-hint",
        oai(503, None, "server_error", **OPENAI_BUCKETS),
        FAILURE,
        None,
    ),
    (
        "openai-503-message-is-no-hint",
        oai_said("Overloaded, please try again in 20s.", 503),
        FAILURE,
        None,
    ),
    ("openai-timeout", lambda: openai_error(fails_with(httpx2.ReadTimeout)), FAILURE, None),
    ("openai-connection", lambda: openai_error(fails_with(httpx2.ConnectError)), FAILURE, None),
    ("openai-stream-server-error", openai_stream(type="server_error"), FAILURE, None),
    (
        "openai-stream-rate-limit",
        openai_stream(type="tokens", code="rate_limit_exceeded"),
        THROTTLED,
        None,
    ),
    (
        "openai-stream-rate-limit-try-again",
        openai_stream(type="tokens", code="rate_limit_exceeded", message=TPM_MESSAGE.format("4s")),
        THROTTLED,
        4.0,
    ),
    (
        "openai-stream-quota",
        openai_stream(type="insufficient_quota", code="insufficient_quota"),
        FATAL,
        None,
    ),
    # OpenRouter: the upstream status as a number, mid-stream
    ("openrouter-stream-429", openrouter_stream(429), THROTTLED, None),
    ("openrouter-stream-402", openrouter_stream(402), FATAL, None),
    ("openrouter-stream-400", openrouter_stream(400), IGNORED, None),
    ("openrouter-stream-502", openrouter_stream(502), FAILURE, None),
    # Groq: 498, flex tier capacity exceeded
    ("groq-498", oai(498, "capacity_exceeded", "server_error"), FAILURE, None),
    # Anthropic
    ("anthropic-429", ant(429, "rate_limit_error", retry_after="12"), THROTTLED, 12.0),
    (
        "anthropic-ramp-limit",
        ant(429, "rate_limit_error", code="ramp_limit_exceeded", retry_after="5"),
        THROTTLED,
        5.0,
    ),
    ("anthropic-529", ant(529, "overloaded_error"), FAILURE, None),
    ("anthropic-529-hint", ant(529, "overloaded_error", retry_after="4"), FAILURE, 4.0),
    ("anthropic-500", ant(500, "api_error"), FAILURE, None),
    ("anthropic-504", ant(504, "timeout_error"), FAILURE, None),
    ("anthropic-400", ant(400, "invalid_request_error", "prompt is too long"), IGNORED, None),
    ("anthropic-credit-balance", ant(400, "invalid_request_error", CREDIT), FATAL, None),
    ("anthropic-usage-limits", ant(400, "invalid_request_error", SPEND), FATAL, None),
    ("anthropic-billing-error", ant(400, "billing_error"), FATAL, None),
    (
        "anthropic-enforced-spend",
        ant(429, "rate_limit_error", code="enforced_spend_limit_reached"),
        FATAL,
        None,
    ),
    (
        "anthropic-contract-spend",
        ant(429, "rate_limit_error", code="contract_spend_limit_reached"),
        FATAL,
        None,
    ),
    (
        "anthropic-402",
        ant(402, "billing_error", code="linked_organization_spend_limit_reached"),
        FATAL,
        None,
    ),
    ("anthropic-401", ant(401, "authentication_error"), IGNORED, None),
    ("anthropic-403", ant(403, "permission_error"), IGNORED, None),
    ("anthropic-404", ant(404, "not_found_error"), IGNORED, None),
    ("anthropic-413", ant(413, "request_too_large"), IGNORED, None),
    ("anthropic-stream-overloaded", anthropic_stream("overloaded_error"), FAILURE, None),
    ("anthropic-stream-api-error", anthropic_stream("api_error"), FAILURE, None),
    ("anthropic-stream-rate-limit", anthropic_stream("rate_limit_error"), THROTTLED, None),
    ("anthropic-stream-invalid", anthropic_stream("invalid_request_error"), IGNORED, None),
    ("anthropic-stream-unknown-type", anthropic_stream("brand_new_error"), FAILURE, None),
    ("anthropic-timeout", lambda: anthropic_error(fails_with(httpx2.ReadTimeout)), FAILURE, None),
    (
        "anthropic-connection",
        lambda: anthropic_error(fails_with(httpx2.ConnectError)),
        FAILURE,
        None,
    ),
    # Bedrock (botocore)
    ("bedrock-throttling", lambda: ClientError("ThrottlingException", 429), THROTTLED, None),
    (
        "bedrock-throttling-400",
        lambda: ClientError("ThrottlingException", 400, {"retry-after": "2"}),
        THROTTLED,
        2.0,
    ),
    (
        "bedrock-service-quota",
        lambda: ClientError("ServiceQuotaExceededException", 400),
        THROTTLED,
        None,
    ),
    (
        "bedrock-model-not-ready",
        lambda: ClientError("ModelNotReadyException", 429),
        THROTTLED,
        None,
    ),
    ("bedrock-unavailable", lambda: ClientError("ServiceUnavailableException", 503), FAILURE, None),
    ("bedrock-internal", lambda: ClientError("InternalServerException", 500), FAILURE, None),
    ("bedrock-model-error", lambda: ClientError("ModelErrorException", 424), FAILURE, None),
    ("bedrock-model-timeout", lambda: ClientError("ModelTimeoutException", 408), FAILURE, None),
    ("bedrock-validation", lambda: ClientError("ValidationException", 400), IGNORED, None),
    ("bedrock-access-denied", lambda: ClientError("AccessDeniedException", 403), IGNORED, None),
    (
        "bedrock-should-not",
        lambda: ClientError("ThrottlingException", 400, {"x-should-retry": "false"}),
        IGNORED,
        None,
    ),
    ("botocore-endpoint", lambda: EndpointConnectionError("no route"), FAILURE, None),
    ("botocore-read-timeout", lambda: ReadTimeoutError("slow"), FAILURE, None),
    # Gemini (google-genai, google-api-core)
    ("gemini-per-minute", lambda: GeminiAPIError(429, gemini_429(PER_MINUTE)), THROTTLED, 17.0),
    (
        "gemini-header-first",
        lambda: GeminiAPIError(429, gemini_429(PER_MINUTE), {"retry-after": "3"}),
        THROTTLED,
        3.0,
    ),
    (
        "gemini-no-delay",
        lambda: GeminiAPIError(429, gemini_429(PER_MINUTE, retry_delay=None)),
        THROTTLED,
        None,
    ),
    ("gemini-per-day", lambda: GeminiAPIError(429, gemini_429(PER_MINUTE, PER_DAY)), FATAL, None),
    ("gemini-503", gemini(503, "UNAVAILABLE"), FAILURE, None),
    ("gemini-500", gemini(500, "INTERNAL"), FAILURE, None),
    ("gemini-400", gemini(400, "INVALID_ARGUMENT"), IGNORED, None),
    ("api-core-429", lambda: ResourceExhausted([RETRY_INFO]), THROTTLED, 9.0),
    # httpx2, requests, urllib, aiohttp, builtins, anything with a status
    ("httpx2-429", lambda: httpx2_status_error(429, retry_after="6"), THROTTLED, 6.0),
    ("httpx2-503", lambda: httpx2_status_error(503), FAILURE, None),
    ("httpx2-404", lambda: httpx2_status_error(404), IGNORED, None),
    ("httpx2-402", lambda: httpx2_status_error(402), FATAL, None),
    ("httpx2-connect", lambda: httpx2.ConnectError("refused", request=REQUEST), FAILURE, None),
    ("httpx2-read-timeout", lambda: httpx2.ReadTimeout("slow", request=REQUEST), FAILURE, None),
    ("httpx2-pool-timeout", lambda: httpx2.PoolTimeout("busy", request=REQUEST), FAILURE, None),
    (
        "httpx2-remote-protocol",
        lambda: httpx2.RemoteProtocolError("cut", request=REQUEST),
        FAILURE,
        None,
    ),
    ("httpx2-read-error", lambda: httpx2.ReadError("reset", request=REQUEST), FAILURE, None),
    ("requests-429", lambda: requests_http_error(429, Retry_After="4"), THROTTLED, 4.0),
    ("requests-502", lambda: requests_http_error(502), FAILURE, None),
    ("requests-401", lambda: requests_http_error(401), IGNORED, None),
    ("requests-connection", lambda: requests.ConnectionError("refused"), FAILURE, None),
    ("requests-timeout", lambda: requests.Timeout("slow"), FAILURE, None),
    ("requests-read-timeout", lambda: requests.ReadTimeout("slow"), FAILURE, None),
    ("requests-chunked", lambda: requests.exceptions.ChunkedEncodingError("cut"), FAILURE, None),
    ("urllib-429", lambda: urllib_error(429, Retry_After="9"), THROTTLED, 9.0),
    ("urllib-500", lambda: urllib_error(500), FAILURE, None),
    ("aiohttp-503", lambda: ClientResponseError(503, {"Retry-After": "1"}), FAILURE, 1.0),
    ("aiohttp-disconnected", lambda: ServerDisconnectedError(), FAILURE, None),
    ("generic-429", lambda: HTTPException(429), THROTTLED, None),
    ("generic-418", lambda: HTTPException(418), IGNORED, None),
    ("builtin-timeout", lambda: TimeoutError("slow"), FAILURE, None),
    ("asyncio-timeout", lambda: asyncio.TimeoutError(), FAILURE, None),
    ("builtin-connection-reset", lambda: ConnectionResetError("reset"), FAILURE, None),
]
TABLE = [pytest.param(make, outcome, hint, id=name) for name, make, outcome, hint in ROWS]


@pytest.mark.parametrize(("make", "outcome", "retry_after"), TABLE)
def test_the_taxonomy(make, outcome, retry_after):
    error = make()
    # retry_on=() makes every FAILURE below the taxonomy's doing, not the default's.
    verdict = LLMClassifier(retry_on=()).classify_error(error)
    assert verdict.retry_after == retry_after
    if outcome == FATAL:
        assert verdict.outcome is Outcome.FATAL
        assert isinstance(verdict.error, QuotaExhausted)
        assert verdict.error.cause is error
    else:
        assert verdict.outcome is outcome
        assert verdict.error is None


def test_real_sdk_errors_are_the_classes_users_catch():
    assert type(oai(429, "insufficient_quota")()) is openai.RateLimitError
    assert isinstance(ant(529, "overloaded_error")(), anthropic.InternalServerError)
    assert type(ant(400, "invalid_request_error")()) is anthropic.BadRequestError
    streamed = anthropic_stream("overloaded_error")()
    assert type(streamed) is anthropic.APIStatusError and streamed.status_code == 200
    assert type(openai_error(fails_with(httpx2.ReadTimeout))) is openai.APITimeoutError


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (oai(429, "insufficient_quota", "insufficient_quota"), "insufficient_quota (HTTP 429)"),
        (ant(429, "rate_limit_error", code="enforced_spend_limit_reached"), "enforced_spend_limit"),
        (ant(400, "invalid_request_error", CREDIT), "credit balance is too low"),
        (lambda: GeminiAPIError(429, gemini_429("RequestsPerDayPerProject")), "PerDayPerProject"),
        (lambda: httpx2_status_error(402), "payment required (HTTP 402)"),
    ],
)
def test_fatal_verdicts_raise_a_quota_exhausted_naming_the_provider_code(make, named):
    error = make()
    verdict = LLMClassifier().classify_error(error)
    assert verdict.outcome is Outcome.IGNORED  # FATAL is an alias: never retried nor counted
    assert isinstance(verdict.error, QuotaExhausted)
    assert named in str(verdict.error)
    assert verdict.error.__cause__ is error


def test_credit_phrases_in_a_5xx_are_not_a_quota():
    error = ant(500, "api_error", "could not check the credit balance")()
    assert LLMClassifier().classify_error(error).outcome is FAILURE


# --- extension, ignore, the default's rules --------------------------------------------------


def test_extra_is_asked_first_and_its_verdict_wins():
    error = oai(503, None)()
    seen: list[BaseException] = []

    def extra(err: BaseException) -> Verdict | None:
        seen.append(err)
        return Verdict(Outcome.THROTTLED, 42.0)

    assert LLMClassifier(extra=extra).classify_error(error) == Verdict(THROTTLED, 42.0)
    assert seen == [error]


def test_extra_without_an_opinion_leaves_the_taxonomy_to_decide():
    error = oai(429, "rate_limit_exceeded", retry_after="2")()
    assert LLMClassifier(extra=lambda err: None).classify_error(error) == Verdict(THROTTLED, 2.0)


def test_ignore_types_come_before_the_taxonomy():
    classifier = LLMClassifier(ignore=openai.RateLimitError)
    assert classifier.classify_error(oai(429, "rate_limit_exceeded")()) == Verdict(IGNORED)
    assert classifier.classify_error(oai(503, None)()).outcome is FAILURE


@pytest.mark.parametrize(
    ("classifier", "error", "expected"),
    [
        (LLMClassifier(), ValueError("bug"), Verdict(FAILURE)),
        (LLMClassifier(retry_on=KeyError), ValueError("bug"), Verdict(IGNORED)),
        (LLMClassifier(retry_on=(KeyError, ValueError)), ValueError("bug"), Verdict(FAILURE)),
        (LLMClassifier(), RateLimited("slow down", retry_after=3.0), Verdict(THROTTLED, 3.0)),
        (LLMClassifier(), QuotaExhausted("gone"), Verdict(IGNORED)),
        (LLMClassifier(retry_on=()), CircuitOpen("open", retry_after=5.0), Verdict(IGNORED)),
        (LLMClassifier(), KeyboardInterrupt(), Verdict(IGNORED)),
    ],
)
def test_errors_outside_the_taxonomy_go_to_the_default_classifier(classifier, error, expected):
    assert classifier.classify_error(error) == expected


def test_retry_on_does_not_overrule_the_taxonomy():
    classifier = LLMClassifier(retry_on=KeyError)
    assert classifier.classify_error(TimeoutError()).outcome is FAILURE
    assert classifier.classify_error(oai(400, "context_length_exceeded")()).outcome is IGNORED


class AppError(Exception):
    pass


def test_an_sdk_error_wrapped_with_raise_from_is_found_along_the_cause_chain():
    try:
        try:
            raise oai(429, "rate_limit_exceeded", retry_after="8")()
        except openai.RateLimitError as sdk_error:
            raise AppError("summary failed") from sdk_error
    except AppError as wrapped:
        error = wrapped
    classifier = LLMClassifier(retry_on=())
    assert classifier.classify_error(error) == Verdict(THROTTLED, 8.0)


def test_a_quota_error_found_along_the_chain_names_the_raised_error_as_cause():
    quota = oai(429, "insufficient_quota")()
    wrapped = AppError("failed")
    wrapped.__cause__ = quota
    verdict = LLMClassifier().classify_error(wrapped)
    assert isinstance(verdict.error, QuotaExhausted) and verdict.error.cause is wrapped


def test_the_chain_stops_at_an_inner_shields_refusal():
    refusal = RateLimited("inner shield gave up", retry_after=30.0, cause=oai(503, None)())
    assert refusal.__cause__ is not None
    assert LLMClassifier().classify_error(refusal) == Verdict(THROTTLED, 30.0)


def test_the_chain_is_followed_only_so_far_and_survives_cycles():
    deep: BaseException = TimeoutError("at the bottom")
    for level in range(10):
        outer = AppError(level)
        outer.__cause__ = deep
        deep = outer
    assert LLMClassifier(retry_on=()).classify_error(deep) == Verdict(IGNORED)
    first, second = AppError(1), AppError(2)
    first.__cause__, second.__cause__ = second, first
    assert LLMClassifier(retry_on=()).classify_error(first) == Verdict(IGNORED)


def test_unknown_body_codes_without_a_status_are_left_to_the_default():
    error = openai.APIError("odd", REQUEST, body={"type": "brand_new", "code": "mystery"})
    assert LLMClassifier(retry_on=()).classify_error(error) == Verdict(IGNORED)
    assert LLMClassifier().classify_error(error) == Verdict(FAILURE)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("retry_on", "ValueError"),
        ("retry_on", (ValueError, int)),
        ("ignore", 3),
        ("retry_if_result", True),
        ("extra", "no"),
    ],
)
def test_bad_arguments_are_config_errors_naming_them(keyword, value):
    with pytest.raises(ConfigError, match=keyword):
        LLMClassifier(**{keyword: value})


def test_properties_and_repr():
    def extra(error: BaseException) -> None:
        return None

    classifier = LLMClassifier(retry_on=KeyError, ignore=ValueError, extra=extra)
    assert classifier.retry_on is KeyError
    assert classifier.ignore is ValueError
    assert classifier.retry_if_result is None
    assert classifier.extra is extra
    assert "LLMClassifier(retry_on=<class 'KeyError'>" in repr(classifier)


# --- results ---------------------------------------------------------------------------------


def raw(status: int, **headers: str) -> httpx2.Response:
    return httpx2.Response(status, headers=_headers(headers), request=REQUEST)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param({"choices": []}, SUCCESS, id="dict"),
        pytest.param("text", SUCCESS, id="str"),
        pytest.param(None, SUCCESS, id="none"),
        pytest.param(raw(200, x_ratelimit_remaining_requests="5"), SUCCESS, id="httpx2-200"),
        pytest.param(raw(304), SUCCESS, id="httpx2-304"),
        pytest.param(raw(429, retry_after="5"), Verdict(THROTTLED, 5.0), id="httpx2-429"),
        pytest.param(
            raw(429, x_ratelimit_remaining_requests="0", x_ratelimit_reset_requests="20s"),
            Verdict(THROTTLED, 20.0),
            id="httpx2-429-reset",
        ),
        pytest.param(raw(503), Verdict(FAILURE), id="httpx2-503"),
        pytest.param(raw(529, retry_after_ms="250"), Verdict(FAILURE, 0.25), id="httpx2-529"),
        pytest.param(raw(404), Verdict(IGNORED), id="httpx2-404"),
        pytest.param(raw(503, x_should_retry="false"), Verdict(IGNORED), id="httpx2-503-no"),
        pytest.param(raw(400, x_should_retry="true"), Verdict(FAILURE), id="httpx2-400-yes"),
        pytest.param(raw(200, x_should_retry="false"), SUCCESS, id="httpx2-200-no"),
        pytest.param(
            requests_response(429, Retry_After="2"), Verdict(THROTTLED, 2.0), id="requests-429"
        ),
        pytest.param(requests_response(201), SUCCESS, id="requests-201"),
    ],
)
def test_results_that_are_http_responses(result, expected):
    assert LLMClassifier().classify_result(result) == expected


def test_a_returned_402_is_fatal():
    verdict = LLMClassifier().classify_result(raw(402))
    assert verdict.outcome is Outcome.FATAL and isinstance(verdict.error, QuotaExhausted)


def test_a_raw_sdk_response_is_read_like_any_response():
    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, json={"id": "msg", "type": "message", "role": "assistant", "content": []}
        )

    client = anthropic.Anthropic(
        api_key="test", base_url="http://provider.test", max_retries=0, http_client=http(respond)
    )
    reply = client.messages.with_raw_response.create(
        model="claude-x", max_tokens=10, messages=MESSAGES
    )
    assert status_of(reply) == 200
    assert LLMClassifier().classify_result(reply) is SUCCESS


def test_retry_if_result_applies_to_plain_results_and_to_successful_responses():
    classifier = LLMClassifier(retry_if_result=lambda result: not result)
    assert classifier.classify_result("") == Verdict(FAILURE)
    assert classifier.classify_result("text") is SUCCESS
    empty = raw(200)
    assert classifier.classify_result(empty) is SUCCESS  # a Response is truthy...
    assert LLMClassifier(retry_if_result=lambda r: r.status_code == 200).classify_result(
        empty
    ) == Verdict(FAILURE)  # ...and the predicate sees it
    assert classifier.classify_result(raw(429)) == Verdict(THROTTLED)  # the status comes first


class Reply:
    """A result class whose instances carry no HTTP status."""


def test_a_plain_result_class_is_examined_once(monkeypatch):
    looked_at: list[object] = []
    real_status_of = classify.status_of

    def counting_status_of(obj: object) -> int | None:
        looked_at.append(obj)
        return real_status_of(obj)

    monkeypatch.setattr(classify, "status_of", counting_status_of)
    monkeypatch.setattr(classify, "_PLAIN_RESULT_CLASSES", {})
    classifier = LLMClassifier()
    first, second = Reply(), Reply()
    assert classifier.classify_result(first) is SUCCESS
    assert classifier.classify_result(second) is SUCCESS
    assert looked_at == [first]
    # Responses are looked at every time: each has its own status.
    assert classifier.classify_result(raw(200)) is SUCCESS
    assert classifier.classify_result(raw(503)) == Verdict(FAILURE)


def test_the_plain_class_memory_stays_bounded(monkeypatch):
    monkeypatch.setattr(classify, "_PLAIN_RESULT_CLASSES", {})
    monkeypatch.setattr(classify, "_PLAIN_RESULT_CLASSES_MAX", 3)
    classifier = LLMClassifier()
    for index in range(10):
        assert classifier.classify_result(type(f"Made{index}", (), {})()) is SUCCESS
        assert len(classify._PLAIN_RESULT_CLASSES) <= 3


# --- status_of / headers_of ------------------------------------------------------------------


class Raising:
    @property
    def status_code(self) -> int:
        raise RuntimeError("lazy property failed")

    @property
    def headers(self) -> object:
        raise RuntimeError("lazy property failed")


class Holder:
    def __init__(self, **attributes: object) -> None:
        self.__dict__.update(attributes)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (Holder(status_code=429), 429),
        (Holder(status=503), 503),
        (Holder(code=404), 404),
        (Holder(code="insufficient_quota", response=Holder(status_code=429)), 429),
        (Holder(status="RESOURCE_EXHAUSTED", code=429), 429),
        (Holder(response=Holder(status=502)), 502),
        (Holder(response={"ResponseMetadata": {"HTTPStatusCode": 400}}), 400),
        (Holder(response={"ResponseMetadata": {"HTTPStatusCode": "400"}}), None),
        (Holder(status_code=True), None),
        (Holder(status_code=99), None),
        (Holder(status_code=600), None),
        (Holder(status_code=429.0), None),
        (Holder(code=2), None),  # SystemExit-like
        (Raising(), None),
        (Holder(response=Raising()), None),
        ({"status_code": 429}, None),
        (None, None),
        (raw(418), 418),
    ],
)
def test_status_of(obj, expected):
    assert status_of(obj) == expected


def test_headers_of():
    own = {"retry-after": "1"}
    assert headers_of(Holder(headers=own, response=Holder(headers={}))) is own
    assert headers_of(Holder(response=Holder(headers=own))) is own
    botocore = ClientError("ThrottlingException", 429, own)
    assert headers_of(botocore) is own
    response = raw(429, retry_after="2")
    assert headers_of(oai(429, "rate_limit_exceeded", retry_after="2")()) is not None
    assert headers_of(response) is response.headers
    assert headers_of(Raising()) is None
    assert headers_of(Holder(response=Raising())) is None
    assert headers_of(Holder(response={"Error": {}})) is None
    assert headers_of(ValueError()) is None


# --- never raises on odd errors --------------------------------------------------------------

JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
CODES = st.sampled_from(
    ["insufficient_quota", "rate_limit_error", "overloaded_error", "ThrottlingException", "x"]
)
ATTRIBUTES = st.fixed_dictionaries(
    {},
    optional={
        "status_code": st.one_of(st.integers(), st.text(max_size=5), st.none()),
        "status": st.one_of(st.integers(-1, 700), CODES, JSONISH),
        "code": st.one_of(st.integers(-1, 700), CODES, JSONISH),
        "type": st.one_of(CODES, JSONISH),
        "message": st.one_of(st.text(max_size=60), JSONISH),
        "body": JSONISH,
        "details": JSONISH,
        "headers": st.one_of(
            JSONISH, st.dictionaries(st.sampled_from(["retry-after", "x-should-retry"]), st.text())
        ),
        "response": st.one_of(JSONISH, st.builds(Holder, status_code=st.integers())),
    },
)


class Odd(Exception):
    pass


@given(ATTRIBUTES)
def test_classify_error_never_raises_on_odd_errors(attributes):
    error = Odd("odd")
    error.__dict__.update(attributes)
    verdict = LLMClassifier().classify_error(error)
    assert isinstance(verdict, Verdict)
    hint = verdict.retry_after
    assert hint is None or (math.isfinite(hint) and hint >= 0)
    assert verdict.error is None or isinstance(verdict.error, QuotaExhausted)


@given(ATTRIBUTES)
def test_classify_result_never_raises_on_odd_results(attributes):
    result = type("Result", (Holder,), {})(**attributes)  # a new class: not learned as plain
    verdict = LLMClassifier().classify_result(result)
    assert isinstance(verdict, Verdict)


# --- in a Shield -----------------------------------------------------------------------------


class Script:
    """Raises the given errors in turn, then returns "done"; counts the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def shield(clock: FakeClock, limiter: Limiter | None = None) -> Shield:
    classifier: Classifier = LLMClassifier()
    return Shield(
        bucket=limiter,
        retry=RetryPolicy(4, 0.5, 30.0, 2.0, jitter=False),
        classifier=classifier,
        clock=clock,
    )


def test_a_shield_waits_out_a_429_as_long_as_the_server_asked():
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60.0)], clock=clock)
    script = Script(oai(429, "rate_limit_exceeded", retry_after="5")())
    assert shield(clock, limiter).call(script) == "done"
    assert script.calls == 2
    assert clock.slept >= 5.0


def test_a_shield_raises_quota_exhausted_at_once():
    clock = FakeClock()
    sdk_error = oai(429, "insufficient_quota", "insufficient_quota")()
    script = Script(sdk_error)
    with pytest.raises(QuotaExhausted, match="insufficient_quota") as raised:
        shield(clock).call(script)
    assert raised.value.__cause__ is sdk_error
    assert script.calls == 1
    assert clock.slept == 0.0


def test_a_shield_retries_an_overloaded_stream_and_gives_up_on_a_bad_request():
    clock = FakeClock()
    overloaded = anthropic_stream("overloaded_error")()
    script = Script(overloaded, ant(400, "invalid_request_error")())
    with pytest.raises(anthropic.BadRequestError):
        shield(clock).call(script)
    assert script.calls == 2
