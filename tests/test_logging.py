"""The `rate_limit_shield` loggers tell every decision with no set-up beyond `logging`'s own: one
line each, with the key and the numbers, and the event's fields on the record; DEBUG for each
success and wait, INFO or WARNING for what an operator should see; structlog users get them
through the standard library bridge; and no secret an error or a Redis URL carries reaches any
record or any event field the library formats."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import structlog

import rate_limit_shield as rls
from rate_limit_shield import QuotaExhausted, Registry
from rate_limit_shield._redact import describe
from rate_limit_shield.events import Event
from rate_limit_shield.testing import FakeClock

POLICIES: dict[str, Any] = {
    "gpt-4o": {
        "rpm": 1,
        "max_wait": 120,
        "retry": {"attempts": 2, "backoff": "constant", "base_delay": 1},
        "breaker": {"failure_threshold": 2, "recovery_timeout": 30},
        "fallbacks": ["claude-3"],
    },
    "claude-3": {"retry": None},
}


class Provider:
    """For each call of a model, the next step scripted for it: an error to raise, or None to
    answer; once the script is through, it answers."""

    def __init__(self, **script: list[Exception | None]) -> None:
        self.script = script

    def answer(self, model: str) -> str:
        steps = self.script.get(model)
        error = steps.pop(0) if steps else None
        if error is not None:
            raise error
        return f"answer from {model}"


def scenario(registry: Registry) -> None:
    """gpt-4o: a success; then a call that waits for its permit, fails twice (a retry, a
    give-up, the breaker opens) and falls back to claude-3; then one refused by the open
    breaker, which falls back too."""
    provider = Provider(**{"gpt-4o": [None, ConnectionError("reset"), ConnectionError("reset")]})

    @rls.shielded(registry=registry)
    def complete(*, model: str) -> str:
        return provider.answer(model)

    for _ in range(3):
        complete(model="gpt-4o")


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.configure(POLICIES, clock=FakeClock())
    return registry


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int]]:
    """(kind, logger, level) of each record that tells an event."""
    return [
        (record.rls_kind, record.name, record.levelno)
        for record in caplog.records
        if hasattr(record, "rls_kind")
    ]


def messages(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if getattr(record, "rls_kind", None) == kind
    ]


SHIELD, BREAKER = "rate_limit_shield.shield", "rate_limit_shield.breaker"
DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING


def test_with_logging_at_debug_and_no_listener_every_decision_is_logged(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(DEBUG, logger="rate_limit_shield")
    scenario(registry)
    assert told(caplog) == [
        ("succeeded", SHIELD, DEBUG),
        ("waited", SHIELD, DEBUG),
        ("retry", SHIELD, INFO),
        ("waited", SHIELD, DEBUG),
        ("breaker", BREAKER, WARNING),
        ("gave_up", SHIELD, WARNING),
        ("fallback", SHIELD, INFO),
        ("succeeded", SHIELD, DEBUG),
        ("fell_back", SHIELD, INFO),
        ("rejected", SHIELD, INFO),
        ("fallback", SHIELD, INFO),
        ("succeeded", SHIELD, DEBUG),
        ("fell_back", SHIELD, INFO),
    ]


def test_each_message_is_one_line_with_the_key_what_happened_and_the_numbers(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(DEBUG, logger="rate_limit_shield")
    scenario(registry)
    assert messages(caplog, "succeeded")[:2] == [
        "[gpt-4o] succeeded on attempt 1 in 0s",
        "[claude-3] succeeded on attempt 1 in 0s",
    ]
    assert messages(caplog, "waited") == [
        "[gpt-4o] waited 60s for a rate permit, bound by 1/60s requests",
        "[gpt-4o] waited 59s for a rate permit, bound by 1/60s requests",
    ]
    assert messages(caplog, "retry") == [
        "[gpt-4o] attempt 1 failure: ConnectionError; retrying in 1s"
    ]
    assert messages(caplog, "gave_up") == [
        "[gpt-4o] gave up after 2 attempts in 120s (attempts used up): ConnectionError"
    ]
    assert messages(caplog, "breaker") == [
        "[gpt-4o] circuit breaker closed -> open for 30s: 2 consecutive failures (threshold 2)"
    ]
    assert messages(caplog, "rejected") == [
        "[gpt-4o] refused attempt 1: CircuitOpen: circuit breaker is open (retry after 30.000s)"
    ]
    assert messages(caplog, "fallback") == [
        "[gpt-4o] could not answer (ConnectionError); falling back to claude-3",
        "[gpt-4o] could not answer (CircuitOpen: circuit breaker is open (retry after "
        "30.000s)); falling back to claude-3",
    ]
    assert messages(caplog, "fell_back")[0] == (
        "[gpt-4o] claude-3 answered the call made for gpt-4o "
        "(fallbacks tried: claude-3 (ConnectionError from gpt-4o))"
    )
    assert all("\n" not in record.getMessage() for record in caplog.records)


def test_at_warning_only_give_ups_and_openings_are_logged(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(WARNING, logger="rate_limit_shield")
    scenario(registry)
    assert told(caplog) == [("breaker", BREAKER, WARNING), ("gave_up", SHIELD, WARNING)]


def test_a_record_carries_the_events_fields(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(INFO, logger="rate_limit_shield")
    scenario(registry)
    [retry] = [record for record in caplog.records if getattr(record, "rls_kind", "") == "retry"]
    fields = {name: value for name, value in vars(retry).items() if name.startswith("rls_")}
    assert fields == {
        "rls_kind": "retry",
        "rls_key": "gpt-4o",
        "rls_attempt": 1,
        "rls_delay": 1.0,
        "rls_outcome": "failure",
        "rls_error": "ConnectionError",
        "rls_fallback": None,
        "rls_duration": None,
        "rls_limit": None,
        "rls_reason": "ConnectionError",
        "rls_transition": None,
    }


def test_an_ignored_error_is_given_up_on_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(INFO, logger="rate_limit_shield")
    registry = Registry()
    registry.configure({"gpt-4o": {"retry": {"attempts": 3}}}, clock=FakeClock())
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    response = httpx2.Response(400, request=request)
    error = openai.BadRequestError("bad request", response=response, body=None)
    with pytest.raises(openai.BadRequestError):
        registry.key("gpt-4o").shield.call(Provider(**{"gpt-4o": [error]}).answer, "gpt-4o")
    assert told(caplog) == [("gave_up", SHIELD, INFO)]
    assert messages(caplog, "gave_up") == [
        "[gpt-4o] gave up after 1 attempt (not retryable): BadRequestError (HTTP 400)"
    ]


# -- structlog ------------------------------------------------------------------------------


@pytest.fixture
def structlog_output() -> Iterator[io.StringIO]:
    """The standard library's records rendered by structlog's `ProcessorFormatter` as JSON, as
    structlog's documentation sets up the bridge for records from libraries."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger("rate_limit_shield")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(INFO)
    try:
        yield output
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_structlog_users_get_the_records_through_the_stdlib_bridge(
    registry: Registry, structlog_output: io.StringIO
) -> None:
    scenario(registry)
    lines = [json.loads(line) for line in structlog_output.getvalue().splitlines()]
    [retry] = [line for line in lines if line.get("rls_kind") == "retry"]
    assert retry["event"] == "[gpt-4o] attempt 1 failure: ConnectionError; retrying in 1s"
    assert (retry["level"], retry["logger"]) == ("info", SHIELD)
    assert (retry["rls_key"], retry["rls_attempt"], retry["rls_delay"]) == ("gpt-4o", 1, 1.0)
    [opened] = [line for line in lines if line.get("rls_kind") == "breaker"]
    assert opened["level"] == "warning" and opened["rls_transition"] == ["closed", "open"]


# -- no secret in any record ----------------------------------------------------------------

SECRET = "sk-live-planted-7c21e0b94d5a"
"""An API key and a Redis password that must never leave the objects that carry them."""

Answer = Callable[[httpx2.Request], httpx2.Response]


def scripted(*answers: tuple[int, dict[str, str]]) -> httpx2.Client:
    """An HTTP client answering each request with the next (status, headers), whose error body
    quotes the key as a provider's message might."""
    left = list(answers)

    def respond(request: httpx2.Request) -> httpx2.Response:
        status, headers = left.pop(0)
        body = {"error": {"message": f"Rejected key {SECRET}", "type": "error", "code": None}}
        return httpx2.Response(status, headers=headers, json=body)

    return httpx2.Client(transport=httpx2.MockTransport(respond))


def secret_clients() -> tuple[openai.OpenAI, anthropic.Anthropic]:
    """SDK clients whose every request carries the key (Authorization, x-api-key) and whose
    base URL carries it as a password."""
    gpt = openai.OpenAI(
        api_key=SECRET, base_url=f"https://user:{SECRET}@openai.test/v1", max_retries=0,
        http_client=scripted((429, {"retry-after": "2"}), (500, {}), (500, {})),
    )  # fmt: skip
    claude = anthropic.Anthropic(
        api_key=SECRET, base_url=f"https://user:{SECRET}@anthropic.test", max_retries=0,
        http_client=scripted((529, {}), (429, {"retry-after": "1"})),
    )  # fmt: skip
    return gpt, claude


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def texts_of(record: logging.LogRecord) -> list[str]:
    """Everything a handler could render from a record: the message, its arguments, the
    exception's text, and every attribute the library added."""
    texts = [record.getMessage(), repr(record.args)]
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        texts.append(record.exc_text)
    texts += [repr(value) for name, value in vars(record).items() if name.startswith("rls_")]
    return texts


def formatted_by_the_library(event: Event) -> list[str]:
    """Every field of an event but `error`, which is the exception itself, for listeners."""
    return [repr(value) for name, value in event._asdict().items() if name != "error"]


def test_no_secret_reaches_a_log_record_or_an_event_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(DEBUG, logger="rate_limit_shield")
    heard: list[Event] = []
    gpt, claude = secret_clients()
    registry = Registry()
    registry.configure(
        {
            "gpt-secret": {
                "retry": {"attempts": 3, "backoff": "constant"},
                "breaker": {"failure_threshold": 2},
                "fallbacks": ["claude-secret", "local"],
            },
            "claude-secret": {"retry": {"attempts": 2, "backoff": "constant"}},
            "local": {"retry": None},
        },
        clock=FakeClock(),
        on_event=heard.append,
    )

    @rls.shielded(registry=registry)
    def complete(*, model: str) -> str:
        if model == "gpt-secret":
            return str(gpt.chat.completions.create(model=model, messages=[]))
        if model == "claude-secret":
            return str(claude.messages.create(model=model, max_tokens=1, messages=[]))
        return "answer"

    assert complete(model="gpt-secret") == "answer"  # a throttle, retries, give-ups, fallbacks
    outage = Registry()
    outage.configure(
        {"default": {"rpm": 60}},
        clock=FakeClock(),
        backend=f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0",
        on_event=heard.append,
    )
    assert outage.key("gpt-secret").shield.call(lambda: "answer") == "answer"

    logged = {getattr(record, "rls_kind", None) for record in caplog.records}
    for kind in ("throttled", "retry", "gave_up", "breaker", "fallback", "backend_down"):
        assert kind in logged
    for record in caplog.records:
        for text in texts_of(record):
            assert SECRET not in text, record
    for event in heard:
        for text in formatted_by_the_library(event):
            assert SECRET not in text, event
    # The planted key was there to be found: in the errors the listeners were given.
    assert any(SECRET in repr(vars(event.error)) for event in heard if event.error is not None)


@pytest.mark.parametrize(
    "said",
    [
        "Authorization: Bearer {secret}",
        "headers {{'x-api-key': '{secret}'}}",
        "api-key={secret}&model=gpt-4o",
        "redis://:{secret}@cache:6379/0",
        "redis://admin:{secret}@cache:6379/0",
        "password: {secret}",
    ],
)
def test_the_librarys_own_messages_are_told_with_credentials_masked(said: str) -> None:
    secret = "hunter2-correct-horse"
    text = describe(QuotaExhausted(f"the provider's quota is gone: {said.format(secret=secret)}"))
    assert secret not in text and "***" in text
    assert text.startswith("QuotaExhausted: the provider's quota is gone: ")


def test_a_foreign_errors_message_is_never_told() -> None:
    assert describe(ConnectionError(f"redis://:{SECRET}@cache reset")) == "ConnectionError"
