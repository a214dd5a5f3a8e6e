"""Bedrock clients (boto3 `bedrock-runtime`) through the shield, against a local endpoint.

The endpoint speaks Bedrock's wire format (JSON bodies, `x-amzn-ErrorType` errors, the binary
event-stream framing of streaming calls), so that botocore parses real HTTP answers: its
errors, its event stream and its exception events, its response headers. Each test scripts the
answers in order and reads back which model each request named.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import warnings
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError, ParamValidationError

from rate_limit_shield import Event, Outcome, Registry, State, shield_client
from rate_limit_shield.clients.bedrock import NO_RETRIES, bedrock_usage
from rate_limit_shield.testing import FakeClock

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
HELLO = [{"role": "user", "content": [{"text": "hello world!"}]}]
INPUT_TOKENS, OUTPUT_TOKENS = 7, 3
POLICY = {
    "itpm": 10_000,
    "otpm": 10_000,
    "retry": {"attempts": 3},
    "breaker": {"failure_threshold": 1, "recovery_timeout": 30},
    "bulkhead": {"max_concurrent": 2},
}


# -- the endpoint ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def answer(input_tokens: int = INPUT_TOKENS, output_tokens: int = OUTPUT_TOKENS) -> Reply:
    """`converse`'s answer."""
    usage = {"inputTokens": input_tokens, "outputTokens": output_tokens}
    return Reply(200, json.dumps({
        "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
        "stopReason": "end_turn",
        "usage": {**usage, "totalTokens": input_tokens + output_tokens},
        "metrics": {"latencyMs": 5},
    }).encode())  # fmt: skip


def invoked(input_tokens: int = INPUT_TOKENS, output_tokens: int = OUTPUT_TOKENS) -> Reply:
    """`invoke_model`'s answer: the model's own JSON, the usage in headers only."""
    return Reply(200, b'{"completion": "hi"}', headers={
        "x-amzn-bedrock-input-token-count": str(input_tokens),
        "x-amzn-bedrock-output-token-count": str(output_tokens),
    })  # fmt: skip


def error(status: int, code: str) -> Reply:
    """An error as Bedrock answers one: its code in `x-amzn-ErrorType`."""
    kind = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return Reply(status, json.dumps({"message": code}).encode(), headers=kind)


def stream(*messages: bytes) -> Reply:
    return Reply(200, b"".join(messages), "application/vnd.amazon.eventstream")


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return _message({":message-type": "event", ":event-type": kind}, payload)


def exception(kind: str) -> bytes:
    """An exception event: botocore raises it as an `EventStreamError` coded `kind`."""
    return _message({":message-type": "exception", ":exception-type": kind}, {"message": kind})


def chunk(payload: dict[str, Any]) -> bytes:
    """An `invoke_model_with_response_stream` event: the model's JSON, base64 in a blob."""
    return event("chunk", {"bytes": base64.b64encode(json.dumps(payload).encode()).decode()})


def _message(headers: dict[str, str], payload: dict[str, Any]) -> bytes:
    """One message of the event-stream framing: prelude (lengths and their CRC32), string
    headers, payload, CRC32 of it all."""
    headers = {**headers, ":content-type": "application/json"}
    encoded = b"".join(
        struct.pack(">B", len(name)) + name.encode() + struct.pack(">BH", 7, len(value))
        + value.encode()
        for name, value in headers.items()
    )  # fmt: skip
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(encoded) + len(body) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + body
    return message + struct.pack(">I", zlib.crc32(message))


CONVERSATION = (
    event("messageStart", {"role": "assistant"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}),
    event("contentBlockStop", {"contentBlockIndex": 0}),
    event("messageStop", {"stopReason": "end_turn"}),
    event("metadata", {"usage": {"inputTokens": INPUT_TOKENS, "outputTokens": OUTPUT_TOKENS,
                                 "totalTokens": INPUT_TOKENS + OUTPUT_TOKENS},
                       "metrics": {"latencyMs": 5}}),
)  # fmt: skip
CHUNKS = (
    chunk({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}}),
    chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": INPUT_TOKENS, "outputTokenCount": OUTPUT_TOKENS,
        "invocationLatency": 5, "firstByteLatency": 2}}),
)  # fmt: skip


class Endpoint:
    """A Bedrock runtime endpoint on 127.0.0.1 answering the scripted replies in order."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[tuple[str, str]] = []  # (operation path, modelId)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                _, _, model, operation = self.path.split("/")
                endpoint.requests.append((operation, unquote(model)))
                reply = endpoint.replies.popleft() if endpoint.replies else error(500, "Unscripted")
                self.send_response(reply.status)
                headers = {"Content-Type": reply.content_type,
                           "Content-Length": str(len(reply.body)), **reply.headers}  # fmt: skip
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def client(self, config: Config | None = None) -> Any:
        return boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=self.url,
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=config if config is not None else Config(retries=NO_RETRIES),
        )


@pytest.fixture(scope="module")
def server() -> Iterator[Endpoint]:
    endpoint = Endpoint()
    thread = threading.Thread(target=endpoint.server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def endpoint(server: Endpoint) -> Iterator[Endpoint]:
    yield server
    server.replies.clear()
    server.requests.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def registry(clock: FakeClock, events: list[Event]) -> Registry:
    registry = Registry()
    registry.configure({"default": POLICY}, clock=clock, on_event=events.append)
    return registry


@pytest.fixture
def bedrock(endpoint: Endpoint, registry: Registry) -> Any:
    return shield_client(endpoint.client(), registry=registry)


def used(registry: Registry, model: str = MODEL) -> dict[str, float]:
    """The tokens a model's key has charged, by unit (the clock stands still: none refill)."""
    limiter = registry.key(model).limiter
    levels = limiter.levels()
    return {limit.unit: limit.capacity - levels[str(limit)] for limit in limiter.limits}


def converse(bedrock: Any, model: str = MODEL) -> Any:
    return bedrock.converse(modelId=model, messages=HELLO, inferenceConfig={"maxTokens": 100})


def outcomes(events: list[Event], kind: str) -> list[Outcome | None]:
    return [event.outcome for event in events if event.kind == kind]


# -- retries and the breaker ------------------------------------------------------------------


def test_a_throttle_is_retried_after_a_pause_and_is_no_breaker_failure(
    bedrock: Any, endpoint: Endpoint, registry: Registry, clock: FakeClock, events: list[Event]
) -> None:
    endpoint.script(error(429, "ThrottlingException"), answer())

    assert converse(bedrock)["output"]["message"]["content"] == [{"text": "hi"}]
    assert endpoint.requests == [("converse", MODEL)] * 2
    assert outcomes(events, "retry") == [Outcome.THROTTLED]
    assert len(clock.sleeps) == 1  # the backoff before the second attempt
    assert registry.key(MODEL).breaker.state is State.CLOSED  # threshold 1: a failure opens it


def test_a_validation_error_is_not_retried(
    bedrock: Any, endpoint: Endpoint, registry: Registry, events: list[Event]
) -> None:
    endpoint.script(error(400, "ValidationException"), answer())

    with pytest.raises(bedrock.exceptions.ValidationException) as raised:
        converse(bedrock)
    assert endpoint.requests == [("converse", MODEL)]
    key = registry.key(MODEL)
    assert key.classifier.classify_error(raised.value).outcome is Outcome.IGNORED
    assert [(event.kind, event.outcome) for event in events] == [("gave_up", Outcome.IGNORED)]
    assert key.breaker.state is State.CLOSED


def test_a_server_error_is_retried(
    bedrock: Any, endpoint: Endpoint, registry: Registry, events: list[Event]
) -> None:
    registry.configure({"default": {**POLICY, "breaker": {"failure_threshold": 3}}})
    bedrock = shield_client(endpoint.client(), registry=registry)
    endpoint.script(error(503, "ServiceUnavailableException"), answer())

    converse(bedrock)
    assert endpoint.requests == [("converse", MODEL)] * 2
    assert outcomes(events, "retry") == [Outcome.FAILURE]


def test_without_botocore_retries_three_attempts_send_three_requests(
    endpoint: Endpoint, registry: Registry
) -> None:
    registry.configure({"default": {**POLICY, "breaker": None}})
    bedrock = shield_client(endpoint.client(), registry=registry)
    endpoint.script(*[error(500, "InternalServerException")] * 9)

    with pytest.raises(bedrock.exceptions.InternalServerException):
        converse(bedrock)
    assert len(endpoint.requests) == 3


def test_a_fallback_is_called_with_its_model_id(
    bedrock: Any, endpoint: Endpoint, registry: Registry
) -> None:
    registry.configure({
        "default": POLICY,
        "primary": {**POLICY, "retry": {"attempts": 1}, "fallbacks": ["backup"]},
    })  # fmt: skip
    endpoint.script(error(503, "ServiceUnavailableException"), answer())

    assert converse(bedrock, "primary")["stopReason"] == "end_turn"
    assert endpoint.requests == [("converse", "primary"), ("converse", "backup")]


# -- usage ------------------------------------------------------------------------------------

TOKENS_USED = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}


def test_converse_settles_its_usage(bedrock: Any, endpoint: Endpoint, registry: Registry) -> None:
    endpoint.script(answer())
    converse(bedrock)
    assert used(registry) == TOKENS_USED  # not the 100 output tokens reserved


def test_converse_stream_settles_the_usage_of_its_metadata_event(
    bedrock: Any, endpoint: Endpoint, registry: Registry
) -> None:
    endpoint.script(stream(*CONVERSATION))
    response = bedrock.converse_stream(
        modelId=MODEL, messages=HELLO, inferenceConfig={"maxTokens": 100}
    )
    assert set(response) == {"ResponseMetadata", "stream"}
    kinds = [next(iter(item)) for item in response["stream"]]
    assert kinds == ["messageStart", "contentBlockDelta", "contentBlockStop", "messageStop",
                     "metadata"]  # fmt: skip
    assert used(registry) == TOKENS_USED


def test_invoke_model_settles_the_usage_of_its_headers(
    bedrock: Any, endpoint: Endpoint, registry: Registry
) -> None:
    endpoint.script(invoked())
    response = bedrock.invoke_model(modelId=MODEL, body=json.dumps({"prompt": "hello"}))
    assert json.loads(response["body"].read()) == {"completion": "hi"}
    assert used(registry) == TOKENS_USED


def test_invoke_model_with_response_stream_settles_the_invocation_metrics(
    bedrock: Any, endpoint: Endpoint, registry: Registry
) -> None:
    endpoint.script(stream(*CHUNKS))
    response = bedrock.invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
    assert len(list(response["body"])) == len(CHUNKS)
    assert used(registry) == TOKENS_USED


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-amzn-bedrock-input-token-count": "7"},
        {"x-amzn-bedrock-input-token-count": "7", "x-amzn-bedrock-output-token-count": "-3"},
        {"x-amzn-bedrock-input-token-count": "7", "x-amzn-bedrock-output-token-count": "3.0"},
        {"x-amzn-bedrock-input-token-count": "9" * 4400, "x-amzn-bedrock-output-token-count": "3"},
    ],
)
def test_malformed_token_headers_report_no_usage(headers: dict[str, str]) -> None:
    assert bedrock_usage({"ResponseMetadata": {"HTTPHeaders": headers}}) is None


@pytest.mark.parametrize(
    "data",
    [
        b"amazon-bedrock-invocationMetrics",
        b'["amazon-bedrock-invocationMetrics"]',
        b'{"amazon-bedrock-invocationMetrics": 5}',
        b'{"amazon-bedrock-invocationMetrics": {"inputTokenCount": true, "outputTokenCount": 3}}',
    ],
)
def test_malformed_invocation_metrics_report_no_usage(data: bytes) -> None:
    assert bedrock_usage({"chunk": {"bytes": data}}) is None


# -- streams ----------------------------------------------------------------------------------


def test_a_stream_failing_midway_reaches_the_breaker_and_gives_back_its_slot(
    bedrock: Any, endpoint: Endpoint, registry: Registry, events: list[Event]
) -> None:
    endpoint.script(stream(*CONVERSATION[:2], exception("modelStreamErrorException")))
    response = bedrock.converse_stream(modelId=MODEL, messages=HELLO)
    key = registry.key(MODEL)
    assert key.bulkhead is not None and key.bulkhead.in_flight == 1  # held while it streams

    received = []
    with pytest.raises(EventStreamError) as raised:
        for item in response["stream"]:
            received.append(item)
    assert raised.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert len(received) == 2
    assert key.breaker is not None and key.breaker.state is State.OPEN  # threshold 1
    assert key.bulkhead.in_flight == 0
    assert endpoint.requests == [("converse-stream", MODEL)]  # items went out: never retried


def test_a_stream_failing_before_its_first_event_is_retried(
    bedrock: Any, endpoint: Endpoint, registry: Registry, events: list[Event]
) -> None:
    registry.configure({"default": {**POLICY, "breaker": {"failure_threshold": 3}}})
    endpoint.script(stream(exception("internalServerException")), stream(*CONVERSATION))

    response = bedrock.converse_stream(modelId=MODEL, messages=HELLO)
    assert len(list(response["stream"])) == len(CONVERSATION)
    assert endpoint.requests == [("converse-stream", MODEL)] * 2
    assert outcomes(events, "retry") == [Outcome.FAILURE]


def test_a_throttle_midway_through_a_stream_is_no_breaker_failure(
    bedrock: Any, endpoint: Endpoint, registry: Registry, events: list[Event]
) -> None:
    endpoint.script(stream(*CONVERSATION[:2], exception("throttlingException")))
    response = bedrock.converse_stream(modelId=MODEL, messages=HELLO)

    with pytest.raises(EventStreamError):
        list(response["stream"])
    assert registry.key(MODEL).breaker.state is State.CLOSED
    assert outcomes(events, "gave_up") == [Outcome.THROTTLED]


def test_a_stream_closed_early_gives_back_its_slot(
    bedrock: Any, endpoint: Endpoint, registry: Registry
) -> None:
    endpoint.script(stream(*CONVERSATION))
    response = bedrock.converse_stream(modelId=MODEL, messages=HELLO)
    next(response["stream"])
    response["stream"].close()

    key = registry.key(MODEL)
    assert key.bulkhead is not None and key.bulkhead.in_flight == 0
    assert key.breaker is not None and key.breaker.state is State.CLOSED


def test_a_stream_dropped_unread_gives_back_its_slot(
    bedrock: Any, endpoint: Endpoint, registry: Registry
) -> None:
    endpoint.script(stream(*CONVERSATION))
    response = bedrock.converse_stream(modelId=MODEL, messages=HELLO)
    key = registry.key(MODEL)
    assert key.bulkhead is not None and key.bulkhead.in_flight == 1

    del response
    assert key.bulkhead.in_flight == 0


# -- the client -------------------------------------------------------------------------------


def test_everything_else_is_the_clients_own(endpoint: Endpoint, registry: Registry) -> None:
    client = endpoint.client()
    bedrock = shield_client(client, registry=registry)

    assert isinstance(bedrock, type(client))
    assert bedrock.meta is client.meta and bedrock.exceptions is client.exceptions
    assert bedrock.converse.__name__ == "converse"
    with pytest.raises(ParamValidationError):  # no modelId: botocore says so, as without us
        bedrock.converse(messages=HELLO)
    assert endpoint.requests == []


def test_a_shielded_client_is_never_shielded_twice(bedrock: Any, registry: Registry) -> None:
    with pytest.raises(TypeError):  # 3 attempts of 3 would send 9 requests
        shield_client(bedrock, registry=registry)


@pytest.mark.parametrize(
    ("retries", "attempts"),
    [(None, 3), ({"mode": "legacy"}, 5), ({"max_attempts": 1}, 2), ({"total_max_attempts": 4}, 4)],
)
def test_a_client_that_retries_itself_is_warned_of(
    endpoint: Endpoint, registry: Registry, retries: dict[str, Any] | None, attempts: int
) -> None:
    client = endpoint.client(Config(retries=retries))
    with pytest.warns(RuntimeWarning, match=f"up to {attempts} times") as warned:
        shield_client(client, registry=registry)
    assert '"total_max_attempts": 1' in str(warned[0].message)
    assert warned[0].filename == __file__


def test_a_client_that_does_not_retry_is_not_warned_of(
    endpoint: Endpoint, registry: Registry
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shield_client(endpoint.client(), registry=registry)


def test_other_clients_are_refused(registry: Registry) -> None:
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="local",
                      aws_secret_access_key="local")  # fmt: skip
    with pytest.raises(TypeError, match="bedrock-runtime"):
        shield_client(s3, registry=registry)

