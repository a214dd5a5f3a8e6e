"""Token cost estimates from SDK call arguments, and usage settlement from SDK results."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseTextDeltaEvent,
)
from pydantic import BaseModel, ConfigDict

from rate_limit_shield.limiter import Limit, Limiter
from rate_limit_shield.llm.tokens import (
    BYTES_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    MAX_BODY_BYTES,
    MEDIA_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_OVERHEAD_TOKENS,
    estimate_cost,
    usage_of,
)
from rate_limit_shield.testing import FakeClock

BASE64_IMAGE = "/9j/" + "A" * 40_000  # 30 kB of JPEG: its length says nothing of its tokens
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOLS_JSON = (  # 126 bytes, compact
    '[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",'
    '"properties":{"city":{"type":"string"}}}}}]'
)
LOOKUP_TOOL = {
    "name": "lookup",
    "description": "Search the web.",
    "input_schema": {
        "type": "object",
        "properties": {"q": {"type": "string"}},
        "required": ["q"],
    },
}
LOOKUP_TOOLS_JSON = (  # 138 bytes, compact
    '[{"name":"lookup","description":"Search the web.","input_schema":{"type":"object",'
    '"properties":{"q":{"type":"string"}},"required":["q"]}}]'
)
BEDROCK_TOOL_CONFIG = {
    "tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}]
}
BEDROCK_TOOL_CONFIG_JSON = (  # 83 bytes, compact
    '{"tools":[{"toolSpec":{"name":"lookup","inputSchema":{"json":{"type":"object"}}}}]}'
)


def test_the_documented_constants() -> None:
    assert (BYTES_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS, REPLY_OVERHEAD_TOKENS) == (4, 4, 3)
    assert (MEDIA_TOKENS, DEFAULT_OUTPUT_TOKENS) == (1_600, 512)


@pytest.mark.parametrize(
    ("value", "literal", "length"),
    [
        ([WEATHER_TOOL], WEATHER_TOOLS_JSON, 126),
        ([LOOKUP_TOOL], LOOKUP_TOOLS_JSON, 138),
        (BEDROCK_TOOL_CONFIG, BEDROCK_TOOL_CONFIG_JSON, 83),
    ],
)
def test_the_literal_json_above_is_what_the_tools_encode_to(
    value: object, literal: str, length: int
) -> None:
    assert json.dumps(value, separators=(",", ":")) == literal
    assert len(literal) == length


# Each case: the call's keyword arguments, then (input, output) worked out by hand as
# ceil(text bytes / 4) + 4 per message + 3 for the reply, with an image as 1,600 tokens' worth
# (6,400 bytes) and tools as their compact JSON.
ESTIMATES: dict[str, tuple[dict[str, Any], int, int]] = {
    "openai chat: system and user": (
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},  # 14 bytes
                {"role": "user", "content": "Hello!"},  # 6 bytes
            ],
            "max_tokens": 10,
        },
        math.ceil(20 / 4) + 2 * 4 + 3,  # 16
        10,
    ),
    "openai chat: max_completion_tokens times n": (
        {"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 100, "n": 3},
        1 + 4 + 3,
        300,
    ),
    "openai chat: an image part is a fixed estimate, not its base64": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},  # 13 bytes
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/jpeg;base64,{BASE64_IMAGE}"},
                        },
                    ],
                }
            ],
            "max_completion_tokens": 50,
        },
        math.ceil((13 + 6_400) / 4) + 4 + 3,  # 1611
        50,
    ),
    "openai chat: tools as their JSON": (
        {
            "messages": [{"role": "user", "content": "Weather in Paris?"}],  # 17 bytes
            "tools": [WEATHER_TOOL],  # 126 bytes
            "max_tokens": 20,
        },
        math.ceil((17 + 126) / 4) + 4 + 3,  # 43
        20,
    ),
    "openai chat: a tool call round trip, no max_tokens": (
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},  # 17 bytes
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            # name 11 bytes, arguments 16 bytes
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},  # 13
            ]
        },
        math.ceil(57 / 4) + 3 * 4 + 3,  # 30
        DEFAULT_OUTPUT_TOKENS,
    ),
    "openai responses: input text and instructions": (
        {
            "model": "gpt-4.1",
            "input": "Tell me a joke",
            "instructions": "Be brief.",
            "max_output_tokens": 64,
        },
        math.ceil((14 + 9) / 4) + 2 * 4 + 3,  # 17
        64,
    ),
    "openai responses: input items": (
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Describe"},  # 8 bytes
                        {
                            "type": "input_image",
                            "image_url": "https://e.com/cat.png",
                            "detail": "low",
                        },
                    ],
                },
                {"type": "function_call_output", "call_id": "call_9", "output": "42"},  # 2 bytes
            ],
            "max_output_tokens": 200,
        },
        math.ceil((8 + 6_400 + 2) / 4) + 2 * 4 + 3,  # 1614
        200,
    ),
    "anthropic: system string": (
        {
            "model": "claude-sonnet-4-5",
            "system": "You are terse.",
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 1024,
        },
        math.ceil(20 / 4) + 2 * 4 + 3,  # 16
        1024,
    ),
    "anthropic: blocks, image, tool use and result, tools": (
        {
            "system": [
                {
                    "type": "text",
                    "text": "You are a careful assistant.",  # 28 bytes
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/jpeg",
                                "data": BASE64_IMAGE,
                            },
                        },
                        {"type": "text", "text": "What is in this image?"},  # 22 bytes
                    ],
                },
                {
                    "role": "assistant",
                    # name 6 bytes, input {"q":"cat"} 11 bytes
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_01",
                            "name": "lookup",
                            "input": {"q": "cat"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_01",
                            "content": "A tabby cat.",
                        }  # 12
                    ],
                },
            ],
            "tools": [LOOKUP_TOOL],  # 138 bytes
            "max_tokens": 2048,
        },
        math.ceil((28 + 6_400 + 22 + 6 + 11 + 12 + 138) / 4) + 4 * 4 + 3,  # 1674
        2048,
    ),
    "bedrock converse: text blocks and inferenceConfig": (
        {
            "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
            "messages": [{"role": "user", "content": [{"text": "Hello!"}]}],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 200, "temperature": 0.5},
        },
        math.ceil((6 + 9) / 4) + 2 * 4 + 3,  # 15
        200,
    ),
    "bedrock converse: image, toolUse, toolResult json, toolConfig": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"text": "What is this?"},  # 13 bytes
                        {
                            "image": {
                                "format": "png",
                                "source": {"bytes": b"\x89PNG" + bytes(30_000)},
                            }
                        },
                    ],
                },
                {
                    "role": "assistant",
                    # name 6 bytes, input 11 bytes
                    "content": [
                        {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"q": "cat"}}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": "t1",
                                "content": [{"json": {"answer": "cat"}}],  # 16 bytes
                                "status": "success",
                            }
                        }
                    ],
                },
            ],
            "toolConfig": BEDROCK_TOOL_CONFIG,  # 83 bytes
            "inferenceConfig": {"maxTokens": 100},
        },
        math.ceil((13 + 6_400 + 6 + 11 + 16 + 83) / 4) + 3 * 4 + 3,  # 1648
        100,
    ),
    "gemini: contents string, snake_case config": (
        {
            "model": "gemini-2.5-flash",
            "contents": "Explain GCRA",  # 12 bytes
            "config": {
                "system_instruction": "Be brief.",
                "max_output_tokens": 300,
                "candidate_count": 2,
            },
        },
        math.ceil((12 + 9) / 4) + 2 * 4 + 3,  # 17
        600,
    ),
    "gemini: JSON contents with inline data, camelCase config": (
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "What is this?"},  # 13 bytes
                        {"inlineData": {"mimeType": "image/png", "data": BASE64_IMAGE}},
                    ],
                }
            ],
            "config": {"maxOutputTokens": 100, "candidateCount": 1},
        },
        math.ceil((13 + 6_400) / 4) + 4 + 3,  # 1611
        100,
    ),
}


@pytest.mark.parametrize(
    ("kwargs", "input_tokens", "output_tokens"), ESTIMATES.values(), ids=ESTIMATES
)
def test_estimate_cost_of_sdk_calls(
    kwargs: dict[str, Any], input_tokens: int, output_tokens: int
) -> None:
    assert estimate_cost(**kwargs) == {
        "requests": 1,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }


def test_the_hand_worked_totals() -> None:
    """The formulas in the table above, evaluated, so that a slip in one shows."""
    totals = [case[1] for case in ESTIMATES.values()]
    assert totals == [16, 8, 1611, 43, 30, 17, 1614, 16, 1674, 15, 1648, 17, 1611]


@pytest.mark.parametrize(
    ("text", "utf8_bytes", "input_tokens"),
    [
        ("plain ascii!", 12, 3 + 7),
        ("héllo wörld", 13, 4 + 7),  # 11 characters would be 3 tokens
        ("日本語のテキスト", 24, 6 + 7),  # 8 characters would be 2 tokens
        ("👍👍", 8, 2 + 7),  # 2 characters would be 1 token
    ],
)
def test_text_is_counted_in_utf8_bytes_not_characters(
    text: str, utf8_bytes: int, input_tokens: int
) -> None:
    assert len(text.encode()) == utf8_bytes
    cost = estimate_cost(messages=[{"role": "user", "content": text}], max_tokens=1)
    assert cost["input_tokens"] == input_tokens


@pytest.mark.parametrize(
    ("kwargs", "output_tokens"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_tokens": 0}, 0),
        ({"max_completion_tokens": 100, "n": 4}, 400),
        ({"max_completion_tokens": 50, "max_tokens": 100}, 50),  # the current name wins
        ({"max_output_tokens": 64.5}, 65),  # rounded up
        ({"config": {"maxOutputTokens": 10, "candidateCount": 3}}, 30),
        ({"generation_config": {"max_output_tokens": 40}}, 40),
        ({"inferenceConfig": {"maxTokens": 7}}, 7),
        ({}, DEFAULT_OUTPUT_TOKENS),
        ({"n": 2}, 2 * DEFAULT_OUTPUT_TOKENS),
        # what the SDK itself would refuse costs the default, never an error here
        ({"max_tokens": "100"}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": -5}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": True}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": math.nan}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": math.inf}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": 10**400}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": None}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": openai.NOT_GIVEN}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": 100, "n": 0}, 100),
        ({"max_tokens": 100, "n": -1}, 100),
        ({"max_tokens": 100, "n": "2"}, 100),
        ({"max_tokens": 100, "n": True}, 100),
        ({"max_tokens": 100, "config": "not a config"}, 100),
    ],
)
def test_output_estimate(kwargs: dict[str, Any], output_tokens: int) -> None:
    prompt = [{"role": "user", "content": "Hi"}]
    assert estimate_cost(messages=prompt, **kwargs)["output_tokens"] == output_tokens


# -- Bedrock invoke_model: the request is a JSON body -----------------------------------------

CLAUDE_ON_BEDROCK = {
    "anthropic_version": "bedrock-2023-05-31",
    "system": "You are terse.",  # 14 bytes
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}],  # 6 bytes
    "max_tokens": 300,
}
INVOKE_BODIES: dict[str, tuple[dict[str, Any], int, int]] = {
    "anthropic messages": (CLAUDE_ON_BEDROCK, math.ceil(20 / 4) + 2 * 4 + 3, 300),
    "meta llama: a prompt and max_gen_len": (
        {"prompt": "Tell me a joke.", "max_gen_len": 128, "temperature": 0.5},  # 15 bytes
        math.ceil(15 / 4) + 4 + 3,
        128,
    ),
    "mistral: a prompt and max_tokens": (
        {"prompt": "<s>[INST] Hi [/INST]", "max_tokens": 64},  # 20 bytes
        math.ceil(20 / 4) + 4 + 3,
        64,
    ),
    "amazon titan: inputText and its generation config": (
        {"inputText": "Hello there", "textGenerationConfig": {"maxTokenCount": 40}},  # 11 bytes
        math.ceil(11 / 4) + 4 + 3,
        40,
    ),
    "amazon nova: messages and max_new_tokens": (
        {
            "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
            "inferenceConfig": {"max_new_tokens": 20},
        },
        1 + 4 + 3,
        20,
    ),
}


@pytest.mark.parametrize(
    ("body", "input_tokens", "output_tokens"), INVOKE_BODIES.values(), ids=INVOKE_BODIES
)
@pytest.mark.parametrize("encode", [lambda body: json.dumps(body).encode(), json.dumps])
def test_invoke_model_is_estimated_from_its_json_body(
    body: dict[str, Any], input_tokens: int, output_tokens: int, encode: Callable[[Any], Any]
) -> None:
    kwargs = {"modelId": "some.model-v1:0", "body": encode(body), "contentType": "application/json"}
    assert estimate_cost(**kwargs) == {
        "requests": 1,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }


def test_an_invoke_model_body_that_cannot_be_read_costs_one_request() -> None:
    """Not JSON, not an object, a stream (reading it would take it from the SDK), or longer than
    any prompt (what makes it that long is media, whose base64 says nothing of its tokens)."""
    huge = {**CLAUDE_ON_BEDROCK, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}
    bodies: list[object] = [b"not json", b"[1, 2]", io.BytesIO(b"{}"), json.dumps(huge), None]
    for body in bodies:
        assert estimate_cost(modelId="m", body=body) == {
            "requests": 1,
            "input_tokens": 0,
            "output_tokens": 0,
        }
    stream = io.BytesIO(json.dumps(CLAUDE_ON_BEDROCK).encode())
    estimate_cost(modelId="m", body=stream)
    assert stream.tell() == 0


def test_a_call_without_a_prompt_nor_an_output_limit_costs_one_request() -> None:
    assert estimate_cost(messages=None) == {"requests": 1, "input_tokens": 0, "output_tokens": 0}
    assert estimate_cost("positional", url="https://example.com")["output_tokens"] == 0
    assert estimate_cost(max_tokens=8)["output_tokens"] == 8


def test_nothing_to_read_costs_no_input() -> None:
    assert estimate_cost()["input_tokens"] == 0
    assert estimate_cost(messages=[], system="", tools=[], response_format={})["input_tokens"] == 0


def test_a_system_prompt_in_blocks_is_one_message() -> None:
    blocks = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}]  # 17
    cost = estimate_cost(system=blocks, messages=[{"role": "user", "content": "Hi"}])  # 2 bytes
    assert cost["input_tokens"] == math.ceil(19 / 4) + 2 * 4 + 3


def test_positional_arguments_and_unknown_keywords_are_not_counted() -> None:
    messages = [{"role": "user", "content": "Hello!"}]
    plain = estimate_cost(messages=messages, max_tokens=5)
    assert (
        estimate_cost(object(), "a long positional string", messages=messages, max_tokens=5)
        == plain
    )
    noisy = estimate_cost(
        messages=messages,
        max_tokens=5,
        model="gpt-4o-mini-2024-07-18",
        temperature=0.2,
        user="user-1234567890",
        metadata={"trace": "abcdefghijklmnopqrstuvwxyz"},
        stream=True,
    )
    assert noisy == plain


def test_sdk_sentinels_count_as_absent() -> None:
    messages = [{"role": "user", "content": "Hello!"}]
    expected = estimate_cost(messages=messages)
    assert (
        estimate_cost(messages=messages, system=anthropic.NOT_GIVEN, tools=openai.NOT_GIVEN)
        == expected
    )
    assert (
        estimate_cost(messages=messages, instructions=openai.omit, max_tokens=anthropic.NOT_GIVEN)
        == expected
    )


def test_sdk_response_objects_in_the_history_count_like_their_dicts() -> None:
    """Appending `response.content` (Anthropic) or `choice.message` (OpenAI) to the history."""
    claude = Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "cat"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 20},
        }
    )
    as_dicts = [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "cat"}},
    ]
    history = [{"role": "user", "content": "Find a cat"}]
    sdk = estimate_cost(messages=[*history, {"role": "assistant", "content": claude.content}])
    plain = estimate_cost(messages=[*history, {"role": "assistant", "content": as_dicts}])
    assert sdk == plain
    assert plain["input_tokens"] == math.ceil((10 + 13 + 6 + 11) / 4) + 2 * 4 + 3

    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    gpt = _chat_completion(
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        usage=None,
    )
    question = {"role": "user", "content": "Weather in Paris?"}
    sdk = estimate_cost(messages=[question, gpt.choices[0].message])
    plain = estimate_cost(
        messages=[question, {"role": "assistant", "content": None, "tool_calls": [tool_call]}]
    )
    assert sdk == plain
    assert plain["input_tokens"] == math.ceil((17 + 11 + 16) / 4) + 2 * 4 + 3


def test_an_iterator_argument_is_not_consumed() -> None:
    messages = iter([{"role": "user", "content": "Hello!"}])
    assert estimate_cost(messages=messages)["input_tokens"] == 0
    assert next(messages) == {"role": "user", "content": "Hello!"}


def test_odd_message_contents_count_only_their_text() -> None:
    messages: list[Any] = [
        None,
        3,
        4.5,
        True,
        b"raw bytes",
        ["nested", ["deeper"]],  # 12 bytes
        {"content": {"weird": "x"}},  # 1 byte
    ]
    assert estimate_cost(messages=messages)["input_tokens"] == math.ceil(13 / 4) + 7 * 4 + 3
    assert estimate_cost(messages="just a string")["input_tokens"] == math.ceil(13 / 4) + 4 + 3


def test_pathological_inputs_do_not_raise() -> None:
    looped: dict[str, Any] = {"role": "user", "content": "loop"}
    looped["self"] = looped
    tool_input: dict[str, Any] = {"q": "cat"}
    tool_input["again"] = tool_input
    deep: list[Any] = ["bottom"]
    for _ in range(10_000):
        deep = [deep]
    cases: list[dict[str, Any]] = [
        {"messages": [looped]},
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "name": "f", "input": tool_input}],
                }
            ]
        },
        {"tools": [tool_input]},
        {"messages": deep},
        {"tools": deep},
        {"messages": [{"role": "user", "content": "lone surrogate \ud800"}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "name": "f", "input": {"n": 10**5000}}],
                }
            ]
        },
        {"tools": [{1: "int key", (2, 3): "tuple key", "name": b"bytes"}]},
        {"messages": [{"role": "user", "content": object()}], "tools": [object(), {1, 2}]},
        {"system": {"type": ["unhashable"], "text": "hi"}},
        {"config": SimpleNamespace(max_output_tokens=12, system_instruction="Be brief.")},
    ]
    for kwargs in cases:
        _assert_a_valid_cost(estimate_cost(**kwargs))
    # an object config (Gemini's GenerateContentConfig) is read by attribute
    assert estimate_cost(**cases[-1]) == {"requests": 1, "input_tokens": 3 + 7, "output_tokens": 12}


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
KNOWN_KEYS = st.sampled_from(
    [
        *("messages", "input", "contents", "system", "instructions", "tools", "config"),
        *("max_tokens", "n", "inferenceConfig", "maxTokens", "candidateCount", "text"),
        *("type", "role", "content", "image", "args", "json", "inlineData", "parts"),
    ]
)
TYPE_VALUES = st.sampled_from(
    ["text", "image", "image_url", "tool_use", "message_start", "message_delta"]
)
JSON_VALUES = st.recursive(
    JSON_SCALARS | TYPE_VALUES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KNOWN_KEYS | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


def _assert_a_valid_cost(cost: dict[str, float] | None) -> None:
    assert cost is not None
    assert set(cost) <= {"requests", "input_tokens", "output_tokens"}
    for value in cost.values():
        assert math.isfinite(value)
        assert value >= 0


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KNOWN_KEYS | st.text(max_size=12), JSON_VALUES, max_size=6))
def test_any_json_like_arguments_give_a_finite_cost(kwargs: dict[str, Any]) -> None:
    cost = estimate_cost(**kwargs)
    assert set(cost) == {"requests", "input_tokens", "output_tokens"}
    assert cost["requests"] == 1
    _assert_a_valid_cost(cost)


USAGE_KEYS = st.sampled_from(
    [
        *("usage", "usageMetadata", "usage_metadata", "metadata", "message", "response", "type"),
        *("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "inputTokens"),
        *("cache_creation_input_tokens", "promptTokenCount", "thoughtsTokenCount"),
        *("meta", "tokens", "billed_units", "delta"),
    ]
)
EVENT_TYPES = st.sampled_from(
    ["message_start", "message_delta", "response.completed", "message-end"]
)
JSON_RESULTS = st.recursive(
    JSON_SCALARS | EVENT_TYPES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(USAGE_KEYS, children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(JSON_RESULTS)
def test_usage_of_any_json_like_result_is_none_or_finite(result: object) -> None:
    usage = usage_of(result)
    if usage is not None:
        _assert_a_valid_cost(usage)


# -- usage --------------------------------------------------------------------------------------


def _chat_completion(message: dict[str, Any], usage: dict[str, Any] | None) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            "usage": usage,
        }
    )


def _response(usage: dict[str, Any] | None) -> dict[str, Any]:
    """An OpenAI Responses API `Response` as JSON."""
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "model": "gpt-4.1",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


RESPONSES_USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 0},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 5},
    "total_tokens": 70,
}


def _claude(usage: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic `Message` as JSON."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


class _GeminiUsage(BaseModel):
    """The attribute shape of google-genai's `GenerateContentResponseUsageMetadata`."""

    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int | None = None
    total_token_count: int | None = None


class _GeminiResponse(BaseModel):
    """The attribute shape of google-genai's `GenerateContentResponse`."""

    text: str = ""
    usage_metadata: _GeminiUsage | None = None


class _OldDeltaUsage(BaseModel):
    """A usage model from an SDK older than the API: `input_tokens` arrives as an extra field."""

    model_config = ConfigDict(extra="allow")
    output_tokens: int


class _OldDeltaEvent(BaseModel):
    type: str
    usage: _OldDeltaUsage


class _WithProperty:
    """A plain (non-pydantic) result whose usage is a computed property."""

    @property
    def usage(self) -> SimpleNamespace:
        return SimpleNamespace(prompt_tokens=3, completion_tokens=4)


@dataclass
class _DataclassResult:
    text: str
    usage: dict[str, int]


USAGES: dict[str, tuple[object, dict[str, float]]] = {
    "openai chat: cached prompt tokens still count (OpenAI charges them to TPM)": (
        _chat_completion(
            {"role": "assistant", "content": "Hi"},
            {
                "prompt_tokens": 120,
                "completion_tokens": 30,
                "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 100},
                "completion_tokens_details": {"reasoning_tokens": 10},
            },
        ),
        {"requests": 1, "input_tokens": 120, "output_tokens": 30},
    ),
    "openai responses": (
        Response.model_validate(_response(RESPONSES_USAGE)),
        {"requests": 1, "input_tokens": 50, "output_tokens": 20},
    ),
    "anthropic: cache writes are input, cache reads are not": (
        Message.model_validate(
            _claude(
                {
                    "input_tokens": 25,
                    "cache_creation_input_tokens": 1_000,
                    "cache_read_input_tokens": 4_000,
                    "output_tokens": 80,
                }
            )
        ),
        {"requests": 1, "input_tokens": 1_025, "output_tokens": 80},
    ),
    "anthropic: no cache fields": (
        Message.model_validate(_claude({"input_tokens": 25, "output_tokens": 80})),
        {"requests": 1, "input_tokens": 25, "output_tokens": 80},
    ),
    "anthropic: raw JSON": (
        _claude({"input_tokens": 7, "cache_creation_input_tokens": 3, "output_tokens": 9}),
        {"requests": 1, "input_tokens": 10, "output_tokens": 9},
    ),
    "bedrock converse: cache writes are input, cache reads are not": (
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": 30,
                "outputTokens": 12,
                "totalTokens": 742,
                "cacheReadInputTokens": 500,
                "cacheWriteInputTokens": 200,
            },
            "metrics": {"latencyMs": 300},
        },
        {"requests": 1, "input_tokens": 230, "output_tokens": 12},
    ),
    "gemini JSON: thoughts are output": (
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}],
            "usageMetadata": {
                "promptTokenCount": 40,
                "candidatesTokenCount": 15,
                "thoughtsTokenCount": 100,
                "totalTokenCount": 155,
            },
        },
        {"requests": 1, "input_tokens": 40, "output_tokens": 115},
    ),
    "gemini JSON leaves zero counts out": (
        {"usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}},
        {"requests": 1, "input_tokens": 12, "output_tokens": 0},
    ),
    "gemini model_dump() dict": (
        {"usage_metadata": {"prompt_token_count": 40, "candidates_token_count": 15}},
        {"requests": 1, "input_tokens": 40, "output_tokens": 15},
    ),
    "gemini SDK-shaped object": (
        _GeminiResponse(
            usage_metadata=_GeminiUsage(
                prompt_token_count=40, candidates_token_count=15, thoughts_token_count=5
            )
        ),
        {"requests": 1, "input_tokens": 40, "output_tokens": 20},
    ),
    "a plain object's property": (
        _WithProperty(),
        {"requests": 1, "input_tokens": 3, "output_tokens": 4},
    ),
    "a dataclass field": (
        _DataclassResult("Hi", {"input_tokens": 5, "output_tokens": 6}),
        {"requests": 1, "input_tokens": 5, "output_tokens": 6},
    ),
    "a bad count is read as zero": (
        {"usage": {"prompt_tokens": 10, "completion_tokens": -3}},
        {"requests": 1, "input_tokens": 10, "output_tokens": 0},
    ),
}


@pytest.mark.parametrize(("result", "expected"), USAGES.values(), ids=USAGES)
def test_usage_of_results(result: object, expected: dict[str, float]) -> None:
    assert usage_of(result) == expected


NO_USAGE: dict[str, object] = {
    "str": "plain text",
    "bytes": b"raw",
    "int": 42,
    "None": None,
    "list": [1, 2],
    "dict": {"answer": 42},
    "object": object(),
    "usage None": {"usage": None},
    "usage not a mapping": {"usage": "lots"},
    "usage with only total": {"usage": {"total_tokens": 10}},
    "usage with non-counts": {"usage": {"prompt_tokens": "12", "completion_tokens": True}},
    "usage with counts out of range": {"usage": {"input_tokens": -1, "output_tokens": math.inf}},
    "ChatCompletion without usage": _chat_completion({"role": "assistant", "content": "Hi"}, None),
    "Response without usage": Response.model_validate(_response(None)),
    "message_start without message": {"type": "message_start", "message": None},
    "response.completed without usage": {"type": "response.completed", "response": {"usage": None}},
    "metadata without usage": {"metadata": {"trace": "x"}},
    "metadata not a mapping": {"metadata": "x"},
    "type not a string": {"type": ["message_delta"], "text": "x"},
}


@pytest.mark.parametrize("result", NO_USAGE.values(), ids=NO_USAGE)
def test_usage_of_results_without_usage_is_none(result: object) -> None:
    assert usage_of(result) is None


def test_usage_in_a_pydantic_extra_field_is_read() -> None:
    """An SDK older than the API keeps unknown fields as extras; they are still counted."""
    event = _OldDeltaEvent.model_validate(
        {"type": "message_delta", "usage": {"output_tokens": 15, "input_tokens": 30}}
    )
    assert event.usage.model_extra == {"input_tokens": 30}
    assert usage_of(event) == {"input_tokens": 30, "output_tokens": 15}


# -- streams ------------------------------------------------------------------------------------


def _merged(items: Iterable[object]) -> dict[str, float]:
    """What the shield settles a stream with: each item's usage, a later unit replacing."""
    merged: dict[str, float] = {}
    for item in items:
        merged.update(usage_of(item) or {})
    return merged


def _claude_events(delta_usage: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed Anthropic message as its raw JSON events."""
    start_usage = {
        "input_tokens": 25,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 50,
        "output_tokens": 1,
    }
    message = {**_claude(start_usage), "content": [], "stop_reason": None}
    return [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": delta_usage,
        },
        {"type": "message_stop"},
    ]


CLAUDE_EVENT_MODELS: list[type[BaseModel]] = [
    RawMessageStartEvent,
    RawContentBlockStartEvent,
    RawContentBlockDeltaEvent,
    RawContentBlockDeltaEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStopEvent,
]


def _as_sdk_events(events: list[dict[str, Any]]) -> list[object]:
    return [
        model.model_validate(event)
        for model, event in zip(CLAUDE_EVENT_MODELS, events, strict=True)
    ]


@pytest.mark.parametrize("form", ["sdk", "json"])
def test_anthropic_stream_settles_with_the_final_output_count(form: str) -> None:
    events = _claude_events({"output_tokens": 15})
    items = _as_sdk_events(events) if form == "sdk" else list(events)
    assert [usage_of(item) for item in items] == [
        {"requests": 1, "input_tokens": 125, "output_tokens": 1},
        None,
        None,
        None,
        None,
        {"output_tokens": 15},  # cumulative, and no input: the start's input must stay
        None,
    ]
    assert _merged(items) == {"requests": 1, "input_tokens": 125, "output_tokens": 15}


@pytest.mark.parametrize("form", ["sdk", "json"])
def test_anthropic_stream_with_input_in_message_delta(form: str) -> None:
    """Newer APIs repeat the cumulative input counts in message_delta: they replace the start's."""
    events = _claude_events(
        {
            "input_tokens": 40,  # grown by a server tool's round trip
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 50,
            "output_tokens": 15,
        }
    )
    items = _as_sdk_events(events) if form == "sdk" else list(events)
    assert usage_of(items[5]) == {"input_tokens": 140, "output_tokens": 15}
    assert _merged(items) == {"requests": 1, "input_tokens": 140, "output_tokens": 15}


def _chunk(
    delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
) -> ChatCompletionChunk:
    choices = (
        []
        if usage is not None and not delta
        else [{"index": 0, "delta": delta, "finish_reason": finish}]
    )
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-4o",
            "choices": choices,
            "usage": usage,
        }
    )


def test_openai_chat_stream_settles_from_the_include_usage_chunk() -> None:
    chunks = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk({}, finish="stop"),
        _chunk({}, usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}),
    ]
    assert [usage_of(chunk) for chunk in chunks] == [
        None,
        None,
        None,
        None,
        {"requests": 1, "input_tokens": 12, "output_tokens": 2},
    ]
    assert _merged(chunks) == {"requests": 1, "input_tokens": 12, "output_tokens": 2}


def test_a_stream_with_usage_on_every_chunk_settles_with_the_last() -> None:
    """Servers that stream running totals (continuous usage stats): the last one wins."""
    chunks = [
        _chunk(
            {"content": "Hel"},
            usage={"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        ),
        _chunk(
            {"content": "lo"},
            usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
        ),
        _chunk(
            {"content": "!"},
            usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        ),
    ]
    assert _merged(chunks) == {"requests": 1, "input_tokens": 12, "output_tokens": 3}


def test_openai_responses_stream_settles_from_the_completed_event() -> None:
    events = [
        ResponseCreatedEvent.model_validate(
            {"type": "response.created", "sequence_number": 0, "response": _response(None)}
        ),
        ResponseTextDeltaEvent.model_validate(
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Hi",
                "logprobs": [],
            }
        ),
        ResponseCompletedEvent.model_validate(
            {
                "type": "response.completed",
                "sequence_number": 2,
                "response": _response(RESPONSES_USAGE),
            }
        ),
    ]
    assert [usage_of(event) for event in events] == [
        None,
        None,
        {"requests": 1, "input_tokens": 50, "output_tokens": 20},
    ]
    assert _merged(events) == {"requests": 1, "input_tokens": 50, "output_tokens": 20}


@pytest.mark.parametrize("end", ["response.incomplete", "response.failed"])
def test_openai_responses_stream_other_end_events_carry_usage(end: str) -> None:
    event = {"type": end, "sequence_number": 9, "response": _response(RESPONSES_USAGE)}
    assert usage_of(event) == {"requests": 1, "input_tokens": 50, "output_tokens": 20}


def test_bedrock_converse_stream_settles_from_its_metadata_event() -> None:
    events: list[object] = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {
            "metadata": {
                "usage": {"inputTokens": 9, "outputTokens": 3, "totalTokens": 12},
                "metrics": {"latencyMs": 120},
            }
        },
    ]
    assert [usage_of(event) for event in events[:4]] == [None] * 4
    assert _merged(events) == {"requests": 1, "input_tokens": 9, "output_tokens": 3}


def test_gemini_stream_settles_with_the_last_running_total() -> None:
    chunks: list[object] = [
        {
            "candidates": [{"content": {"parts": [{"text": "Hel"}]}}],
            "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        },
        {
            "candidates": [{"content": {"parts": [{"text": "lo"}]}}],
            "usageMetadata": {
                "promptTokenCount": 8,
                "candidatesTokenCount": 5,
                "totalTokenCount": 13,
            },
        },
        {
            "candidates": [{"content": {"parts": [{"text": "!"}]}}],
            "usageMetadata": {
                "promptTokenCount": 8,
                "candidatesTokenCount": 11,
                "totalTokenCount": 19,
            },
        },
    ]
    assert usage_of(chunks[0]) == {"requests": 1, "input_tokens": 8, "output_tokens": 0}
    assert _merged(chunks) == {"requests": 1, "input_tokens": 8, "output_tokens": 11}


# -- with the limiter ---------------------------------------------------------------------------


def test_estimate_and_usage_reserve_and_settle_a_limiter() -> None:
    """The units both give are the limiter's: the settle leaves exactly the real usage taken."""
    limiter = Limiter(
        [
            Limit(10, 60),
            Limit(10_000, 60, unit="tokens"),
            Limit(5_000, 60, unit="input_tokens"),
            Limit(2_000, 60, unit="output_tokens"),
        ],
        clock=FakeClock(),
    )
    kwargs = {
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 1_000,
    }
    estimate = estimate_cost(**kwargs)
    reservation = limiter.reserve(estimate)
    assert list(limiter.levels().values()) == [9, 10_000 - 1_016, 5_000 - 16, 2_000 - 1_000]
    events = _claude_events({"output_tokens": 15})
    limiter.settle(reservation, _merged(list(events)))
    assert list(limiter.levels().values()) == [9, 10_000 - 140, 5_000 - 125, 2_000 - 15]
