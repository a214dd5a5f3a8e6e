"""Bedrock's mid-stream errors, raised by a real botocore `bedrock-runtime` client reading a
scripted event stream: botocore names them by their event-stream member, in lower camel case."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

botocore_session = pytest.importorskip("botocore.session")

from botocore.awsrequest import AWSResponse  # noqa: E402
from botocore.exceptions import EventStreamError  # noqa: E402

from rate_limit_shield.llm.classify import LLMClassifier  # noqa: E402
from rate_limit_shield.outcome import Outcome  # noqa: E402

THROTTLED, FAILURE, IGNORED = Outcome.THROTTLED, Outcome.FAILURE, Outcome.IGNORED


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of the AWS event-stream encoding, string headers only."""
    encoded = b"".join(
        struct.pack("!B", len(name)) + name.encode() + struct.pack("!BH", 7, len(value))
        + value.encode()
        for name, value in headers.items()
    )  # fmt: skip
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack("!I", zlib.crc32(body))


def exception_event(member: str) -> bytes:
    headers = {":message-type": "exception", ":exception-type": member}
    return event_message(headers, json.dumps({"message": f"scripted {member}"}).encode())


def chunk_event() -> bytes:
    headers = {":message-type": "event", ":event-type": "chunk"}
    return event_message(headers, json.dumps({"bytes": "e30="}).encode())


class RawStream:
    """What botocore's event stream reads the HTTP body from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data

    def close(self) -> None:
        pass


def mid_stream_error(member: str) -> EventStreamError:
    """What iterating `invoke_model_with_response_stream` raises after one chunk when the
    stream then carries the exception event `member`."""
    client = botocore_session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    data = chunk_event() + exception_event(member)

    def respond(request: Any, **_: Any) -> AWSResponse:
        headers = {"content-type": "application/vnd.amazon.eventstream"}
        return AWSResponse(request.url, 200, headers, RawStream(data))

    client.meta.events.register("before-send.bedrock-runtime.*", respond)
    answer = client.invoke_model_with_response_stream(modelId="anthropic.claude-x", body=b"{}")
    try:
        for _ in answer["body"]:
            pass
    except EventStreamError as error:
        return error
    raise AssertionError("the stream raised nothing")


@pytest.mark.parametrize(
    ("member", "outcome"),
    [
        ("throttlingException", THROTTLED),
        ("validationException", IGNORED),
        ("serviceUnavailableException", FAILURE),
        ("modelStreamErrorException", FAILURE),
        ("internalServerException", FAILURE),
        ("modelTimeoutException", FAILURE),
    ],
)
def test_event_stream_errors_classify_like_their_pascal_case_codes(member, outcome):
    error = mid_stream_error(member)
    assert error.response["Error"]["Code"] == member  # as botocore names it
    # The taxonomy knows them: `retry_on` (which decides for unknown errors) changes nothing.
    for classifier in (LLMClassifier(), LLMClassifier(retry_on=())):
        assert classifier.classify_error(error).outcome is outcome
