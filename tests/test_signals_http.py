"""Plain HTTP clients (httpx, httpx2, requests, aiohttp): the provider's JSON error body decides
when it is in memory already, whether the response was returned or raised by
`raise_for_status()`; a body not read yet is never read to classify it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer

from rate_limit_shield.errors import QuotaExhausted
from rate_limit_shield.llm.classify import LLMClassifier
from rate_limit_shield.outcome import Outcome, Verdict
from rate_limit_shield.retry import RetryPolicy
from rate_limit_shield.shield import Shield
from rate_limit_shield.testing import FakeClock

URL = "http://provider.test/v1/chat/completions"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
FATAL = "fatal"  # Outcome.FATAL is Outcome.IGNORED: the table tells them apart


def google_error(quota_id: str, status: int = 429) -> dict[str, Any]:
    """Gemini's REST error: a QuotaFailure naming the quota, and a RetryInfo."""
    return {
        "error": {
            "code": status,
            "message": "You exceeded your current quota, please check your plan and billing.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/requests",
                            "quotaId": quota_id,
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"},
            ],
        }
    }


OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
OPENAI_TPM = {
    "error": {
        "message": "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, Used "
        "29000, Requested 2000. Please try again in 2.5s.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
ANTHROPIC_CREDIT = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "Your credit balance is too low to access the Anthropic API. Please go to "
        "Plans & Billing to upgrade or purchase credits.",
    },
}
GEMINI_PER_DAY = google_error("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
GEMINI_PER_MINUTE = google_error("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")

# (name, status, body, outcome, retry_after) of a body read; unread, the status alone decides.
CASES = [
    pytest.param(429, OPENAI_QUOTA, FATAL, None, id="openai-insufficient-quota"),
    pytest.param(429, OPENAI_TPM, Outcome.THROTTLED, 2.5, id="openai-try-again"),
    pytest.param(400, ANTHROPIC_CREDIT, FATAL, None, id="anthropic-credit-balance"),
    pytest.param(429, GEMINI_PER_DAY, FATAL, None, id="gemini-per-day"),
    pytest.param(429, GEMINI_PER_MINUTE, Outcome.THROTTLED, 17.0, id="gemini-per-minute"),
]


def assert_verdict(verdict: Verdict, outcome: object, retry_after: float | None) -> None:
    if outcome == FATAL:
        assert verdict.outcome is Outcome.FATAL
        assert isinstance(verdict.error, QuotaExhausted)
    else:
        assert verdict == Verdict(outcome, retry_after)  # type: ignore[arg-type]


def status_only(status: int) -> Verdict:
    """The verdict on the status alone: what an unread body leaves to go by."""
    return Verdict(Outcome.THROTTLED) if status == 429 else Verdict(Outcome.IGNORED)


# --- httpx and httpx2 ----------------------------------------------------------------------------

HTTPX_MODULES = [pytest.param(httpx, id="httpx"), pytest.param(httpx2, id="httpx2")]


def httpx_client(module: Any, status: int, body: object) -> Any:
    """A client whose transport streams `body` in chunks, as a network transport does."""
    content = json.dumps(body).encode()

    def respond(request: Any) -> Any:
        chunks = iter([content[:10], content[10:]])
        return module.Response(status, headers={"content-type": "application/json"}, content=chunks)

    return module.Client(transport=module.MockTransport(respond))


@pytest.mark.parametrize("module", HTTPX_MODULES)
@pytest.mark.parametrize(("status", "body", "outcome", "retry_after"), CASES)
def test_httpx_responses_returned_or_raised(module, status, body, outcome, retry_after):
    classifier = LLMClassifier()
    response = httpx_client(module, status, body).post(URL, json=REQUEST)
    assert_verdict(classifier.classify_result(response), outcome, retry_after)
    with pytest.raises(module.HTTPStatusError) as raised:
        response.raise_for_status()
    assert_verdict(classifier.classify_error(raised.value), outcome, retry_after)


@pytest.mark.parametrize("module", HTTPX_MODULES)
@pytest.mark.parametrize(("status", "body", "outcome", "retry_after"), CASES)
def test_an_httpx_stream_is_never_read_to_classify_it(module, status, body, outcome, retry_after):
    client = httpx_client(module, status, body)
    with client.stream("POST", URL, json=REQUEST) as response:
        assert LLMClassifier().classify_result(response) == status_only(status)
        assert not response.is_stream_consumed
        assert json.loads(response.read()) == body  # the caller still reads all of it


# --- requests ------------------------------------------------------------------------------------


class ScriptedAdapter(requests.adapters.HTTPAdapter):
    """Answers every request with `status` and the JSON `body`, as a real adapter builds it."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__()
        self.status = status
        self.body = json.dumps(body).encode()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = self.status
        response.headers["content-type"] = "application/json"
        response.raw = io.BytesIO(self.body)
        response.request = request
        response.url = request.url or URL
        return response


def requests_session(status: int, body: object) -> requests.Session:
    session = requests.Session()
    session.mount("http://", ScriptedAdapter(status, body))
    return session


@pytest.mark.parametrize(("status", "body", "outcome", "retry_after"), CASES)
def test_requests_responses_returned_or_raised(status, body, outcome, retry_after):
    classifier = LLMClassifier()
    response = requests_session(status, body).post(URL, json=REQUEST)
    assert_verdict(classifier.classify_result(response), outcome, retry_after)
    with pytest.raises(requests.HTTPError) as raised:
        response.raise_for_status()
    assert_verdict(classifier.classify_error(raised.value), outcome, retry_after)


@pytest.mark.parametrize(("status", "body", "outcome", "retry_after"), CASES)
def test_a_requests_stream_is_never_read_to_classify_it(status, body, outcome, retry_after):
    response = requests_session(status, body).post(URL, json=REQUEST, stream=True)
    assert LLMClassifier().classify_result(response) == status_only(status)
    with pytest.raises(requests.HTTPError) as raised:
        response.raise_for_status()
    assert LLMClassifier().classify_error(raised.value) == status_only(status)
    assert response.json() == body  # the caller still reads all of it


# --- aiohttp -------------------------------------------------------------------------------------


def aiohttp_exchange(
    status: int, body: object, use: Callable[[aiohttp.ClientResponse], Any]
) -> Any:
    """Serve `body` with `status` on 127.0.0.1 and return `await use(response)`."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    async def exchange() -> Any:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            url = server.make_url("/v1/chat/completions")
            async with session.post(url, json=REQUEST) as response:
                return await use(response)

    return asyncio.run(exchange())


@pytest.mark.parametrize(("status", "body", "outcome", "retry_after"), CASES)
def test_an_aiohttp_response_read_already(status, body, outcome, retry_after):
    async def use(response: aiohttp.ClientResponse) -> Verdict:
        await response.read()
        return LLMClassifier().classify_result(response)

    assert_verdict(aiohttp_exchange(status, body, use), outcome, retry_after)


@pytest.mark.parametrize(("status", "body", "outcome", "retry_after"), CASES)
def test_an_aiohttp_response_not_read_yet_is_left_unread(status, body, outcome, retry_after):
    async def use(response: aiohttp.ClientResponse) -> tuple[Verdict, object]:
        verdict = LLMClassifier().classify_result(response)
        return verdict, await response.json()

    verdict, read_after = aiohttp_exchange(status, body, use)
    assert verdict == status_only(status)
    assert read_after == body


def test_a_large_or_malformed_body_is_left_to_the_status():
    for content in (b'{"error": {"code": "insufficient_quota"', b"\xff\xfe{", b"[" * 100_000):
        response = httpx2.Response(429, content=content)
        assert LLMClassifier().classify_result(response) == Verdict(Outcome.THROTTLED)
    padding = "x" * 70_000
    big = httpx2.Response(429, json={"error": {"code": "insufficient_quota", "pad": padding}})
    assert LLMClassifier().classify_result(big) == Verdict(Outcome.THROTTLED)


def test_a_shield_gives_up_at_once_on_a_quota_raised_by_raise_for_status():
    clock = FakeClock()
    retry = RetryPolicy(4, 0.5, jitter=False)
    shield = Shield(retry=retry, classifier=LLMClassifier(), clock=clock)
    session = requests_session(429, OPENAI_QUOTA)
    sent = 0

    def create() -> object:
        nonlocal sent
        sent += 1
        response = session.post(URL, json=REQUEST)
        response.raise_for_status()
        return response.json()

    with pytest.raises(QuotaExhausted, match="insufficient_quota") as gone:
        shield.call(create)
    assert isinstance(gone.value.__cause__, requests.HTTPError)
    assert sent == 1 and clock.slept == 0.0
